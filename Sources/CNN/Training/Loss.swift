// B = batch, K = classes. logits is (B, K), labels (B).

/// The loss that starts backpropagation.
public enum LossKind: String, Sendable, CaseIterable {
    /// Softmax + cross-entropy, fused and computed with log-sum-exp; optional label smoothing.
    case crossEntropy = "cross-entropy"
    /// Mean squared error between the network's outputs and one-hot targets (mean over B·K).
    case mse
}

public struct LossResult {
    /// The loss summed over the batch (divide by B for the mean).
    public var sum: Double
    /// Samples whose highest score is their label.
    public var correct: Int
}

/// Computes the loss of a batch and, when `gradient` is given, d(mean loss)/d(logits) into it.
/// With cross-entropy the gradient is (p - y) / B, y the (smoothed) one-hot target. `meanOver`
/// replaces B in the gradient's divisor: a rank of a distributed run holds part of a global batch
/// of that size, and the ranks' gradients summed are the global batch's mean.
public func computeLoss(_ kind: LossKind, logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                        batch: Int, classes k: Int, labelSmoothing: Float = 0,
                        gradient: UnsafeMutablePointer<Float>? = nil,
                        probabilities: UnsafeMutablePointer<Float>? = nil, meanOver: Int? = nil) -> LossResult {
    var total: Double = 0
    var correct = 0
    let invBatch = 1 / Float(meanOver ?? batch)
    let off = labelSmoothing / Float(k), on = 1 - labelSmoothing + off
    for n in 0..<batch {
        let z = logits + n * k
        let label = Int(labels[n])
        var best = 0
        for j in 1..<max(k, 1) where z[j] > z[best] { best = j }
        if best == label { correct += 1 }
        switch kind {
        case .crossEntropy:
            var maxZ = z[0]
            for j in 1..<max(k, 1) { maxZ = max(maxZ, z[j]) }
            var sumExp: Float = 0
            for j in 0..<k { sumExp += _expf(z[j] - maxZ) }
            let logSum = maxZ + _logf(sumExp)
            var loss: Float = 0
            for j in 0..<k {
                let target = j == label ? on : off
                if target != 0 { loss -= target * (z[j] - logSum) }
                let p = _expf(z[j] - logSum)
                probabilities?[n * k + j] = p
                gradient?[n * k + j] = (p - target) * invBatch
            }
            total += Double(loss)
        case .mse:
            var loss: Float = 0
            let scale = 2 / Float((meanOver ?? batch) * k)
            for j in 0..<k {
                let d = z[j] - (j == label ? 1 : 0)
                loss += d * d
                gradient?[n * k + j] = d * scale
            }
            total += Double(loss) / Double(k)
        }
    }
    return LossResult(sum: total, correct: correct)
}

/// Softmax of each row of `logits` (B, K) into `out`, stable.
public func softmax(_ logits: UnsafePointer<Float>, batch: Int, classes k: Int, into out: UnsafeMutablePointer<Float>) {
    for n in 0..<batch {
        let z = logits + n * k, p = out + n * k
        var maxZ = z[0]
        for j in 1..<max(k, 1) { maxZ = max(maxZ, z[j]) }
        var s: Float = 0
        for j in 0..<k { p[j] = _expf(z[j] - maxZ); s += p[j] }
        for j in 0..<k { p[j] /= s }
    }
}
