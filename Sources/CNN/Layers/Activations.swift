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

/// An elementwise activation: y = f(x). Backward needs x (LeakyReLU and the newer ones) or y
/// (Sigmoid, Tanh; ReLU and ReLU6, whose masks y gives as x does: y > 0 exactly where x > 0, and
/// 0 < y < 6 where 0 < x < 6). Keeping y serves the layer after too when it reads its input (a
/// convolution after a residual block's ReLU reads it instead of keeping a copy of its own).
public final class Activation: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let kind: ActivationKind
    private var saved: FloatBuffer?        // kept for backward: x or y (see above)
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    /// Set by the model for a ReLU or ReLU6 whose convolution applies it already: forward passes x
    /// through (and keeps it: the output is positive, or inside (0, 6), where the input is).
    var fusedIntoPrevious = false
    /// Set by the model for a ReLU followed by max pooling, which applies the ReLU's mask in its
    /// own backward: backward then passes the gradient through.
    var maskedByNext = false
    /// Set by the model for a ReLU or ReLU6 after a batch norm, which applies it in its output write
    /// and its mask in backward: forward passes x through and backward dy.
    var appliedByNorm = false
    /// Set by the model for a SiLU after a convolution (or the batch norm folded into one), or an
    /// activation after a residual block whose last convolution writes the sum, which applies it
    /// in its output write at inference: forward then passes x through. Training runs it as
    /// written.
    var fusedAtInference = false

    var backwardReads: BackwardReads {
        if appliedByNorm { return .passingThrough }
        // ReLU's mask applied by the max pooling after it: nothing read.
        let reads = !(maskedByNext && kind == .relu)
        if fusedIntoPrevious { return BackwardReads(passesThrough: true, input: reads) }
        switch kind {
        case .sigmoid, .tanh: return BackwardReads(input: false, output: true)
        case .relu, .relu6: return BackwardReads(input: false, output: reads)
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
        if appliedByNorm || fusedAtInference && !training { return x }
        let count = batch * inputShape.count
        let y = buffers.output(count, input: x, training: training)
        let xp = x.pointer, yp = y.pointer
        switch kind {
        case .relu where fusedIntoPrevious, .relu6 where fusedIntoPrevious:
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
            saved = y
        case .leakyRelu(let alpha):
            for i in 0..<count { yp[i] = xp[i] > 0 ? xp[i] : alpha * xp[i] }
            saved = x
        case .sigmoid:
            Activation.map(count, xp, yp, SigmoidFunction.self)
            saved = y
        case .tanh:
            for i in 0..<count { yp[i] = _tanhf(xp[i]) }
            saved = y
        case .relu6:
            Activation.map(count, xp, yp, ReLU6Function.self)
            saved = y
        case .hardSigmoid:
            Activation.map(count, xp, yp, HardSigmoidFunction.self)
            saved = x
        case .hardSwish:
            Activation.map(count, xp, yp, HardSwishFunction.self)
            saved = x
        case .silu:
            Activation.map(count, xp, yp, SiLUFunction.self)
            saved = x
        case .gelu:
            parallelChunks(count, chunk: 1 << 14) { lo, hi in
                for i in lo..<hi { yp[i] = Activation.value(.gelu, xp[i]) }
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
        case .silu:
            Activation.map(count, s, dxp, dyp, SiLUGradient.self)
        case .relu6, .hardSigmoid, .hardSwish, .gelu:
            let kind = kind
            parallelChunks(count, chunk: 1 << 14) { lo, hi in
                for i in lo..<hi { dxp[i] = dyp[i] * Activation.derivative(kind, s[i]) }
            }
        }
        return dx
    }

    /// y[i] = F(x[i]) over vectors, a tail shorter than a vector padded (so every element is
    /// computed the same way, wherever a thread's chunk or the batch ends). F is a type, not a
    /// closure, so that the loop is specialized for it and the function inlined.
    @inline(__always)
    static func map<F: VectorFunction>(_ count: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _: F.Type) {
        parallelChunks(count, chunk: 1 << 15) { lo, hi in
            var i = lo
            // Two vectors a step: independent chains for the long ones (exp and a division).
            while i + 2 * V.scalarCount <= hi {
                let a = F.apply(load(x + i)), b = F.apply(load(x + i + V.scalarCount))
                store(a, y + i)
                store(b, y + i + V.scalarCount)
                i += 2 * V.scalarCount
            }
            while i + V.scalarCount <= hi { store(F.apply(load(x + i)), y + i); i += V.scalarCount }
            if i < hi {
                var v = V(repeating: 0)
                for j in 0..<(hi - i) { v[j] = x[i + j] }
                let r = F.apply(v)
                for j in 0..<(hi - i) { y[i + j] = r[j] }
            }
        }
    }

    /// dx[i] = G(x[i], dy[i]) over vectors, the tail padded.
    @inline(__always)
    static func map<G: VectorGradient>(_ count: Int, _ x: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                       _ dy: UnsafePointer<Float>, _: G.Type) {
        parallelChunks(count, chunk: 1 << 15) { lo, hi in
            var i = lo
            while i + V.scalarCount <= hi { store(G.apply(load(x + i), load(dy + i)), dx + i); i += V.scalarCount }
            if i < hi {
                var v = V(repeating: 0), d = V(repeating: 0)
                for j in 0..<(hi - i) { v[j] = x[i + j]; d[j] = dy[i + j] }
                let r = G.apply(v, d)
                for j in 0..<(hi - i) { dx[i + j] = r[j] }
            }
        }
    }

    /// eˣ of one value, by the vector exp the layers use, so that a value computed alone (the
    /// squeeze-and-excitation's vectors) equals the same value computed in a vector.
    @inline(__always)
    static func exp1(_ x: Float) -> Float { exp(V(repeating: x))[0] }

    /// f(x) of the activations whose backward keeps x (the plain-loop definitions).
    @inline(__always)
    static func value(_ kind: ActivationKind, _ x: Float) -> Float {
        switch kind {
        case .relu6: return min(max(x, 0), 6)
        case .hardSigmoid: return min(max(x + 3, 0), 6) / 6
        case .hardSwish: return x * min(max(x + 3, 0), 6) / 6
        case .silu: return x / (1 + exp1(-x))
        case .gelu: return 0.5 * x * (1 + _erff(x * 0.70710678118654752))
        case .relu: return max(x, 0)
        case .leakyRelu(let a): return x > 0 ? x : a * x
        case .sigmoid: return 1 / (1 + exp1(-x))
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
            let s = 1 / (1 + exp1(-x))
            return s * (1 + x * (1 - s))
        case .gelu:
            // Φ(x) + x φ(x)
            return 0.5 * (1 + _erff(x * 0.70710678118654752)) + x * 0.39894228040143268 * _expf(-0.5 * x * x)
        case .relu: return x > 0 ? 1 : 0
        case .leakyRelu(let a): return x > 0 ? 1 : a
        case .sigmoid:
            let s = 1 / (1 + exp1(-x))
            return s * (1 - s)
        case .tanh:
            let t = _tanhf(x)
            return 1 - t * t
        }
    }
}

/// An elementwise function of vectors, as a type: `Activation.map` is specialized for it (a
/// closure would be called once per vector, not inlined).
protocol VectorFunction { static func apply(_ x: V) -> V }
/// dx from x and dy, elementwise.
protocol VectorGradient { static func apply(_ x: V, _ dy: V) -> V }

enum ReLU6Function: VectorFunction {
    @_transparent static func apply(_ x: V) -> V { x.replacing(with: 0, where: x .< 0).replacing(with: 6, where: x .> 6) }
}
enum HardSigmoidFunction: VectorFunction {
    @_transparent static func apply(_ x: V) -> V { ReLU6Function.apply(x + 3) / 6 }
}
enum HardSwishFunction: VectorFunction {
    @_transparent static func apply(_ x: V) -> V { x * ReLU6Function.apply(x + 3) / 6 }
}
enum SigmoidFunction: VectorFunction {
    @_transparent static func apply(_ x: V) -> V { 1 / (1 + exp(-x)) }
}
enum SiLUFunction: VectorFunction {
    @_transparent static func apply(_ x: V) -> V { x / (1 + exp(-x)) }
}
enum SiLUGradient: VectorGradient {
    @_transparent static func apply(_ x: V, _ dy: V) -> V {
        let s = 1 / (1 + exp(-x))
        return dy * (s * (1 + x * (1 - s)))
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
