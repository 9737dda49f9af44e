/// The elementwise non-linearities, defined as PyTorch defines them (forward and gradient, also at
/// the kinks: ReLU6 and HardSigmoid pass no gradient at their ends, HardSwish passes 1/2 at -3... 3
/// inclusive of 3).
public enum ActivationKind: Equatable, Sendable {
    case relu
    case leakyRelu(alpha: Float)
    case sigmoid
    case tanh
    /// min(max(x, 0), 6)
    case relu6
    /// relu6(x + 3) / 6
    case hardSigmoid
    /// x · relu6(x + 3) / 6
    case hardSwish
    /// x · sigmoid(x), also called swish
    case silu
    /// x · Φ(x), Φ the standard normal distribution (erf, not the tanh approximation)
    case gelu
}

/// An elementwise activation: y = f(x). Backward needs x (ReLU, LeakyReLU and the newer ones) or
/// y (Sigmoid, Tanh).
public final class Activation: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let kind: ActivationKind
    private var saved: FloatBuffer?        // kept for backward: x for ReLU/LeakyReLU, y otherwise
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    /// Set by the model for a ReLU whose convolution applies it already: forward passes x through
    /// (and keeps it, since ReLU's output says where its input was positive).
    var fusedIntoPrevious = false
    /// Set by the model for a ReLU followed by max pooling, which applies the ReLU's mask in its
    /// own backward: backward then passes the gradient through.
    var maskedByNext = false
    /// Set by the model for a ReLU or ReLU6 after a batch norm, which applies it in its output write
    /// and its mask in backward: forward passes x through and backward dy.
    var appliedByNorm = false

    var backwardReads: BackwardReads {
        if appliedByNorm { return .passingThrough }
        // ReLU's mask applied by the max pooling after it: nothing read.
        let reads = !(maskedByNext && kind == .relu)
        if fusedIntoPrevious { return BackwardReads(passesThrough: true, input: reads) }
        switch kind {
        case .sigmoid, .tanh: return BackwardReads(input: false, output: true)
        default: return BackwardReads(input: reads)
        }
    }

    init(spec: LayerSpec, input: Shape, kind: ActivationKind) {
        self.spec = spec
        inputShape = input
        self.kind = kind
    }

    public var flops: Int { inputShape.count }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        if appliedByNorm { return x }
        let count = batch * inputShape.count
        let y = buffers.output(count, input: x, training: training)
        let xp = x.pointer, yp = y.pointer
        switch kind {
        case .relu where fusedIntoPrevious:
            saved = x
            return x
        case .relu:
            parallelChunks(count, chunk: 1 << 15) { lo, hi in
                var i = lo
                while i + V.scalarCount <= hi {
                    UnsafeMutableRawPointer(yp + i).storeBytes(of: relu(UnsafeRawPointer(xp + i).loadUnaligned(as: V.self)), as: V.self)
                    i += V.scalarCount
                }
                while i < hi { yp[i] = reluIf(true, xp[i]); i += 1 }
            }
            saved = x
        case .leakyRelu(let alpha):
            for i in 0..<count { yp[i] = xp[i] > 0 ? xp[i] : alpha * xp[i] }
            saved = x
        case .sigmoid:
            for i in 0..<count { yp[i] = 1 / (1 + _expf(-xp[i])) }
            saved = y
        case .tanh:
            for i in 0..<count { yp[i] = _tanhf(xp[i]) }
            saved = y
        case .relu6:
            Activation.map(count, xp, yp, Activation.relu6, { Activation.value(.relu6, $0) })
            saved = x
        case .hardSigmoid:
            Activation.map(count, xp, yp, { v in let t = v + 3; return t.replacing(with: 0, where: t .< 0).replacing(with: 6, where: t .> 6) / 6 },
                           { Activation.value(.hardSigmoid, $0) })
            saved = x
        case .hardSwish:
            Activation.map(count, xp, yp, { v in let t = v + 3; return v * t.replacing(with: 0, where: t .< 0).replacing(with: 6, where: t .> 6) / 6 },
                           { Activation.value(.hardSwish, $0) })
            saved = x
        case .silu, .gelu:
            let kind = kind
            parallelChunks(count, chunk: 1 << 14) { lo, hi in
                for i in lo..<hi { yp[i] = Activation.value(kind, xp[i]) }
            }
            saved = x
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard needInputGradient else { return nil }
        if appliedByNorm { return dy }
        guard let s = saved?.pointer else { return nil }
        if maskedByNext && kind == .relu { return dy }
        let count = batch * inputShape.count
        let dx = buffers.inputGradient(count, dy: dy)
        let dxp = dx.pointer, dyp = dy.pointer
        switch kind {
        case .relu:
            parallelChunks(count, chunk: 1 << 15) { lo, hi in for i in lo..<hi { dxp[i] = s[i] > 0 ? dyp[i] : 0 } }
        case .leakyRelu(let alpha):
            for i in 0..<count { dxp[i] = s[i] > 0 ? dyp[i] : alpha * dyp[i] }
        case .sigmoid:
            for i in 0..<count { dxp[i] = dyp[i] * s[i] * (1 - s[i]) }
        case .tanh:
            for i in 0..<count { dxp[i] = dyp[i] * (1 - s[i] * s[i]) }
        case .relu6, .hardSigmoid, .hardSwish, .silu, .gelu:
            let kind = kind
            parallelChunks(count, chunk: 1 << 14) { lo, hi in
                for i in lo..<hi { dxp[i] = dyp[i] * Activation.derivative(kind, s[i]) }
            }
        }
        return dx
    }

    /// y[i] = f(x[i]) over vectors (`vector`, the same arithmetic as `scalar`), the rest one by one.
    @inline(__always)
    static func map(_ count: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            _ vector: (V) -> V, _ scalar: (Float) -> Float) {
        parallelChunks(count, chunk: 1 << 15) { lo, hi in
            var i = lo
            while i + V.scalarCount <= hi { store(vector(load(x + i)), y + i); i += V.scalarCount }
            while i < hi { y[i] = scalar(x[i]); i += 1 }
        }
    }

    /// ReLU6 of a vector.
    @inline(__always)
    static func relu6(_ v: V) -> V { v.replacing(with: 0, where: v .< 0).replacing(with: 6, where: v .> 6) }

    /// f(x) of the activations whose backward keeps x (the plain-loop definitions).
    @inline(__always)
    static func value(_ kind: ActivationKind, _ x: Float) -> Float {
        switch kind {
        case .relu6: return min(max(x, 0), 6)
        case .hardSigmoid: return min(max(x + 3, 0), 6) / 6
        case .hardSwish: return x * min(max(x + 3, 0), 6) / 6
        case .silu: return x / (1 + _expf(-x))
        case .gelu: return 0.5 * x * (1 + _erff(x * 0.70710678118654752))
        case .relu: return max(x, 0)
        case .leakyRelu(let a): return x > 0 ? x : a * x
        case .sigmoid: return 1 / (1 + _expf(-x))
        case .tanh: return _tanhf(x)
        }
    }

    /// f'(x), with PyTorch's choice at the kinks.
    @inline(__always)
    static func derivative(_ kind: ActivationKind, _ x: Float) -> Float {
        switch kind {
        case .relu6: return x > 0 && x < 6 ? 1 : 0
        case .hardSigmoid: return x > -3 && x < 3 ? 1 / 6 : 0
        case .hardSwish: return x < -3 ? 0 : x <= 3 ? x / 3 + 0.5 : 1
        case .silu:
            let s = 1 / (1 + _expf(-x))
            return s * (1 + x * (1 - s))
        case .gelu:
            // Φ(x) + x φ(x)
            return 0.5 * (1 + _erff(x * 0.70710678118654752)) + x * 0.39894228040143268 * _expf(-0.5 * x * x)
        case .relu: return x > 0 ? 1 : 0
        case .leakyRelu(let a): return x > 0 ? 1 : a
        case .sigmoid:
            let s = 1 / (1 + _expf(-x))
            return s * (1 - s)
        case .tanh:
            let t = _tanhf(x)
            return 1 - t * t
        }
    }
}

/// Inverted dropout: in training each value is zeroed with probability p and the survivors are
/// scaled by 1/(1-p), so inference is the identity. The mask comes from the run's generator.
public final class Dropout: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let p: Float
    /// Kept for backward: 0 or 1/(1-p) per element of the last training batch.
    private var maskBuffer = Workspace()
    public var mask: FloatBuffer { maskBuffer.buffer }
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    private var lastWasTraining = false
    /// A rank of a distributed run holds samples [first, first + batch) of a global batch of
    /// `total`: it draws the whole batch's mask (the same draws as one process) and keeps its part.
    var batchSlice: (first: Int, total: Int)? = nil

    var backwardReads: BackwardReads { p > 0 ? .nothing : .passingThrough }

    init(spec: LayerSpec, input: Shape, p: Float) {
        self.spec = spec
        inputShape = input
        self.p = p
    }

    public var flops: Int { inputShape.count }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        lastWasTraining = training
        guard training, p > 0 else { return x }
        let count = batch * inputShape.count
        let out = buffers.output(count, input: x, training: training)
        let m = maskBuffer.reserve(count).pointer, y = out.pointer
        let keep = 1 / (1 - p)
        let slice = batchSlice ?? (0, batch)
        for _ in 0..<(slice.first * inputShape.count) { _ = rng.uniform() }
        for i in 0..<count {
            m[i] = rng.uniform() < p ? 0 : keep
            y[i] = x.pointer[i] * m[i]
        }
        for _ in 0..<((slice.total - slice.first - batch) * inputShape.count) { _ = rng.uniform() }
        return out
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard needInputGradient else { return nil }
        guard lastWasTraining, p > 0 else { return dy }
        let count = batch * inputShape.count
        let dx = buffers.inputGradient(count, dy: dy)
        let m = maskBuffer.buffer.pointer
        for i in 0..<count { dx.pointer[i] = dy.pointer[i] * m[i] }
        return dx
    }
}
