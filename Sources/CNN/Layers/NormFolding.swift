/// Batch norm folded into the convolution before it, for inference. With the running statistics a
/// batch norm is a per-channel affine map, so conv then norm is one convolution:
///     W'[o] = W[o] · a[o],   b'[o] = (b[o] - μ[o]) · a[o] + β[o],   a[o] = γ[o] / √(σ²[o] + ε)
/// and a ReLU or ReLU6 after the norm goes into the convolution's output write. The batch norm
/// (and that activation) then pass their input through at inference; training runs every layer
/// as written, since it normalizes with the batch's statistics.
final class NormFolding {
    let norm: BatchNorm
    /// The ReLU or ReLU6 after the batch norm (applied by it in training), or the SiLU after it,
    /// applied by the convolution's output write at inference.
    private let clamp: Clamp
    private var weights = Workspace()
    private var biases = Workspace()
    /// The versions of the tensors the folded ones were made from (a tuple: an array made on
    /// every forward would allocate).
    private var stamp: (Int, Int, Int, Int, Int, Int)?
    /// Identifies the folded weights for caches of derived data (Winograd's transformed weights):
    /// negative, so it never equals a weight's own version, and new whenever they are remade.
    private(set) var key = -1

    /// `then`: the activation after the norm when it is not the norm's own (a SiLU).
    init(norm: BatchNorm, then activation: ActivationKind? = nil) {
        self.norm = norm
        self.clamp = Clamp.atInference(norm.activation ?? activation)
    }

    /// The folded weight (`weight`'s shape) and bias (one per output channel), made again when
    /// any tensor they come from has changed, and the activation the output write applies.
    func folded(weight: Parameter, bias: Parameter?) -> (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, clamp: Clamp) {
        let versions = (weight.version, bias?.version ?? 0, norm.weight.version, norm.bias.version,
                        norm.runningMean.version, norm.runningVar.version)
        let oc = norm.inputShape.c, perChannel = weight.count / oc
        if stamp.map({ $0 != versions }) ?? true || weights.buffer.count < weight.count {
            let w = weights.reserve(weight.count).pointer, b = biases.reserve(oc).pointer
            let gamma = norm.weight.value.pointer, beta = norm.bias.value.pointer
            let mean = norm.runningMean.value.pointer, variance = norm.runningVar.value.pointer
            let source = weight.value.pointer
            for o in 0..<oc {
                let a = gamma[o] / (variance[o] + norm.eps).squareRoot()
                for i in 0..<perChannel { w[o * perChannel + i] = source[o * perChannel + i] * a }
                b[o] = ((bias?.value.pointer[o] ?? 0) - mean[o]) * a + beta[o]
            }
            stamp = versions
            key -= 1
        }
        return (UnsafePointer(weights.buffer.pointer), UnsafePointer(biases.buffer.pointer), clamp)
    }
}
