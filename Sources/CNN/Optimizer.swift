/// Which update rule training uses.
public enum OptimizerKind: String, Sendable, CaseIterable {
    case sgd, rmsprop, adam, adamw
}

/// Optimizer settings; the defaults are PyTorch's.
public struct OptimizerSettings: Equatable, Sendable {
    public var kind: OptimizerKind = .sgd
    public var momentum: Float = 0
    public var nesterov = false
    public var weightDecay: Float = 0
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    /// RMSProp's smoothing constant.
    public var alpha: Float = 0.99
    public var eps: Float = 1e-8
    public init() {}
}

/// The update rules, with their state (momentum buffers, moment estimates) per parameter.
///
/// SGD:     g += wd·p;  v = μ·v + g;  p -= lr·(nesterov ? g + μ·v : v)
/// RMSProp: g += wd·p;  s = α·s + (1-α)·g²;  p -= lr·g / (√s + ε)
/// Adam:    g += wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  p -= lr·m̂ / (√v̂ + ε)
/// AdamW:   as Adam without the g += wd·p, and p -= lr·wd·p first (decoupled weight decay).
public final class Optimizer {
    public let settings: OptimizerSettings
    let parameters: [(name: String, parameter: Parameter)]
    /// Per trainable parameter: first state (momentum / m / s) and second (v, Adam only).
    var first: [FloatBuffer]
    var second: [FloatBuffer]
    /// Updates done so far (Adam's bias correction).
    public var step = 0

    public init(_ settings: OptimizerSettings, model: Model) {
        self.settings = settings
        parameters = model.namedParameters.filter { $0.parameter.grad != nil }
        let needsFirst = settings.kind != .sgd || settings.momentum != 0
        let needsSecond = settings.kind == .adam || settings.kind == .adamw
        first = parameters.map { FloatBuffer(count: needsFirst ? $0.parameter.count : 0) }
        second = parameters.map { FloatBuffer(count: needsSecond ? $0.parameter.count : 0) }
    }

    /// The optimizer's state tensors, for checkpoints: name suffix, parameter name, buffer.
    var stateTensors: [(name: String, buffer: FloatBuffer)] {
        var out: [(String, FloatBuffer)] = []
        for (i, p) in parameters.enumerated() {
            if first[i].count > 0 { out.append(("optimizer.\(p.name).first", first[i])) }
            if second[i].count > 0 { out.append(("optimizer.\(p.name).second", second[i])) }
        }
        return out
    }

    public func update(learningRate lr: Float) {
        step += 1
        let s = settings
        let bc1 = 1 - _powf(s.beta1, Float(step)), bc2 = 1 - _powf(s.beta2, Float(step))
        for (i, entry) in parameters.enumerated() {
            let p = entry.parameter
            guard let gradBuffer = p.grad else { continue }
            let w = p.value.pointer, g = gradBuffer.pointer, count = p.count
            let m = first[i].pointer, v = second[i].pointer
            switch s.kind {
            case .sgd:
                var j = 0
                if s.momentum != 0 && !s.nesterov && step > 1 {
                    // The common case a vector at a time: the same operations on each value.
                    let decay = V(repeating: s.weightDecay), momentum = V(repeating: s.momentum), rate = V(repeating: lr)
                    while j + V.scalarCount <= count {
                        let wj = UnsafeRawPointer(w + j).loadUnaligned(as: V.self)
                        let d = UnsafeRawPointer(g + j).loadUnaligned(as: V.self) + decay * wj
                        let mj = momentum * UnsafeRawPointer(m + j).loadUnaligned(as: V.self) + d
                        UnsafeMutableRawPointer(m + j).storeBytes(of: mj, as: V.self)
                        UnsafeMutableRawPointer(w + j).storeBytes(of: wj - rate * mj, as: V.self)
                        j += V.scalarCount
                    }
                }
                for j in j..<count {
                    var d = g[j] + s.weightDecay * w[j]
                    if s.momentum != 0 {
                        m[j] = step == 1 ? d : s.momentum * m[j] + d
                        d = s.nesterov ? d + s.momentum * m[j] : m[j]
                    }
                    w[j] -= lr * d
                }
            case .rmsprop:
                for j in 0..<count {
                    let d = g[j] + s.weightDecay * w[j]
                    m[j] = s.alpha * m[j] + (1 - s.alpha) * d * d
                    w[j] -= lr * d / (m[j].squareRoot() + s.eps)
                }
            case .adam, .adamw:
                let decoupled = s.kind == .adamw
                for j in 0..<count {
                    if decoupled { w[j] -= lr * s.weightDecay * w[j] }
                    let d = decoupled ? g[j] : g[j] + s.weightDecay * w[j]
                    m[j] = s.beta1 * m[j] + (1 - s.beta1) * d
                    v[j] = s.beta2 * v[j] + (1 - s.beta2) * d * d
                    let mHat = m[j] / bc1, vHat = v[j] / bc2
                    w[j] -= lr * mHat / (vHat.squareRoot() + s.eps)
                }
            }
            p.version += 1
        }
    }
}
