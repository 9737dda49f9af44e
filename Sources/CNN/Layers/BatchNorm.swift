// B = batch, C = channels, S = H·W positions per channel (1 after a dense layer); M = B·S.

/// Batch normalization per channel, for convolution outputs (B, C, H, W) and for dense outputs
/// (B, C). Training uses the batch's statistics and updates the running ones (PyTorch's rule:
/// running = (1 - momentum)·running + momentum·batch, with the unbiased variance); inference uses
/// the running statistics.
public final class BatchNorm: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let weight: Parameter        // γ (C)
    public let bias: Parameter          // β (C)
    public let runningMean: Parameter   // (C)
    public let runningVar: Parameter    // (C)
    /// PyTorch's `num_batches_tracked`.
    public var batchesTracked: Int64 = 0
    let eps: Float
    let momentum: Float

    // Kept for backward: the normalized input x̂ (B, C, S) and 1/σ per channel.
    private var xhat = Workspace()
    private var invStd = Workspace()
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    // Inference mode keeps only its input; backward through it (frozen statistics) derives x̂.
    private var lastInput: FloatBuffer?
    private var lastTraining = true
    /// Set by the model when the convolution before applies this norm at inference (NormFolding):
    /// forward then passes its input through unless training.
    var foldedIntoPrevious = false
    /// Set by the model when a ReLU or ReLU6 follows: applied in this norm's output write, and its
    /// gradient's mask in backward, from x̂ by the forward's own arithmetic (the activation layer
    /// passes through, and neither the norm's output nor the activation's is kept for backward).
    var activation: ActivationKind?

    /// x̂ and 1/σ are its own; backward after an inference forward (frozen statistics) reads the input.
    var backwardReads: BackwardReads { .nothing }

    init(spec: LayerSpec, input: Shape, eps: Float, momentum: Float) {
        self.spec = spec
        inputShape = input
        self.eps = eps
        self.momentum = momentum
        weight = Parameter(name: "weight", shape: [input.c], trainable: true, initialValue: 1)
        bias = Parameter(name: "bias", shape: [input.c], trainable: true)
        runningMean = Parameter(name: "running_mean", shape: [input.c], trainable: false)
        runningVar = Parameter(name: "running_var", shape: [input.c], trainable: false, initialValue: 1)
    }

    public var parameters: [Parameter] { [weight, bias, runningMean, runningVar] }
    public var flops: Int { 2 * inputShape.count }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let c = inputShape.c, s = inputShape.h * inputShape.w, count = batch * c * s
        lastTraining = training
        // The convolution before applied a folded norm, and the ReLU or ReLU6 after it.
        if !training && foldedIntoPrevious {
            lastInput = nil
            return x
        }
        let out = buffers.output(count, input: x, training: training), y = out.pointer, xp = x.pointer
        let gamma = weight.value.pointer, beta = bias.value.pointer
        let six = activation == .relu6
        if !training {
            lastInput = x
            let rm = runningMean.value.pointer, rv = runningVar.value.pointer
            let act = activation
            for n in 0..<batch {
                for ch in 0..<c {
                    let a = gamma[ch] / (rv[ch] + eps).squareRoot(), b = beta[ch] - rm[ch] * a
                    let base = (n * c + ch) * s
                    for i in 0..<s { y[base + i] = BatchNorm.activate(act, xp[base + i] * a + b) }
                }
            }
            return out
        }
        let xh = xhat.reserve(count).pointer, istd = invStd.reserve(c).pointer
        let m = Float(batch * s)
        let rm = runningMean.value.pointer, rv = runningVar.value.pointer
        let momentum = self.momentum, eps = self.eps, act = activation != nil
        parallelChunks(c, chunk: 4) { c0, c1 in
            for ch in c0..<c1 {
                // The channel's sums in Double: a deep network in training mode amplifies the
                // rounding of its batch statistics (in float, a ResNet-20's step differed from
                // PyTorch's float64 step by 2 % on some weights; PyTorch's own float32 by 0.006 %).
                var sum = DoubleSums()
                for n in 0..<batch { sum.add(xp + (n * c + ch) * s, s) }
                let mean = Float(sum.total / Double(m))
                var sq = DoubleSums()
                for n in 0..<batch { sq.addSquares(xp + (n * c + ch) * s, s, minus: mean) }
                let variance = Float(sq.total / Double(m))
                let inv = 1 / (variance + eps).squareRoot()
                istd[ch] = inv
                let g = gamma[ch], b = beta[ch]
                for n in 0..<batch {
                    let base = (n * c + ch) * s
                    BatchNorm.normalize(xp + base, mean: mean, inv: inv, g, b, xhat: xh + base, y + base, s, activation: act, six: six)
                }
                let unbiased = m > 1 ? variance * m / (m - 1) : variance
                rm[ch] = (1 - momentum) * rm[ch] + momentum * mean
                rv[ch] = (1 - momentum) * rv[ch] + momentum * unbiased
            }
        }
        runningMean.version += 1
        runningVar.version += 1
        batchesTracked += 1
        return out
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let c = inputShape.c, s = inputShape.h * inputShape.w, count = batch * c * s
        let xh = xhat.buffer.pointer, istd = invStd.buffer.pointer, dyp = dy.pointer
        let gamma = weight.value.pointer
        guard let dgamma = weight.grad?.pointer, let dbeta = bias.grad?.pointer else { return nil }
        if !lastTraining {
            return backwardFrozen(dy, batch: batch, needInputGradient: needInputGradient)
        }
        // With a fused activation, its masked dy is written to dx first and read from there.
        let act = activation != nil, six = activation == .relu6, beta = bias.value.pointer
        let dxBuffer = needInputGradient || act ? buffers.inputGradient(count, dy: dy) : nil, dx = dxBuffer?.pointer
        let m = Float(batch * s)
        parallelChunks(c, chunk: 4) { c0, c1 in
            for ch in c0..<c1 {
                var sumDy = DoubleSums(), sumDyXhat = DoubleSums()
                let mask = act ? (gamma[ch], beta[ch], six) : nil
                for n in 0..<batch {
                    let base = (n * c + ch) * s
                    DoubleSums.add(dyp + base, times: xh + base, s, &sumDy, &sumDyXhat, mask: mask, masked: dx.map { $0 + base })
                }
                dgamma[ch] += Float(sumDyXhat.total)
                dbeta[ch] += Float(sumDy.total)
                guard needInputGradient, let dx else { continue }
                // dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy · x̂))
                let k = gamma[ch] * istd[ch]
                let meanDy = Float(sumDy.total / Double(m)), meanDyXhat = Float(sumDyXhat.total / Double(m))
                for n in 0..<batch {
                    let base = (n * c + ch) * s
                    let g = act ? UnsafePointer(dx + base) : UnsafePointer(dyp + base)
                    for i in 0..<s { dx[base + i] = k * (g[i] - meanDy - xh[base + i] * meanDyXhat) }
                }
            }
        }
        return needInputGradient ? dxBuffer : nil
    }

    /// Backward through inference mode: y = γ (x - μ_running) / σ_running + β, a per-channel affine map.
    private func backwardFrozen(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard let x = lastInput?.pointer, let dgamma = weight.grad?.pointer, let dbeta = bias.grad?.pointer else { return nil }
        let c = inputShape.c, s = inputShape.h * inputShape.w
        let dxBuffer = needInputGradient ? buffers.inputGradient(batch * c * s, dy: dy) : nil, dx = dxBuffer?.pointer
        let rm = runningMean.value.pointer, rv = runningVar.value.pointer, gamma = weight.value.pointer
        let beta = bias.value.pointer, act = activation
        for ch in 0..<c {
            let inv = 1 / (rv[ch] + eps).squareRoot()
            let a = gamma[ch] / (rv[ch] + eps).squareRoot(), b = beta[ch] - rm[ch] * a  // as forward
            var sumDy: Float = 0, sumDyXhat: Float = 0
            for n in 0..<batch {
                let base = (n * c + ch) * s
                for i in 0..<s {
                    // A fused activation's mask, from the forward's output before it.
                    let g = act.map { Activation.derivative($0, x[base + i] * a + b) } == 0 ? 0 : dy.pointer[base + i]
                    sumDy += g
                    sumDyXhat += g * (x[base + i] - rm[ch]) * inv
                    dx?[base + i] = g * gamma[ch] * inv
                }
            }
            dgamma[ch] += sumDyXhat
            dbeta[ch] += sumDy
        }
        return dxBuffer
    }
}

extension BatchNorm {
    /// A fused activation applied to one value (the activation layer's own definitions).
    @inline(__always)
    static func activate(_ kind: ActivationKind?, _ v: Float) -> Float {
        guard let kind else { return v }
        return kind == .relu ? reluIf(true, v) : Activation.value(kind, v)
    }

    /// x̂ = (x - mean) · inv and y = γ x̂ + β (then the fused ReLU or ReLU6) over one plane of n
    /// values, in vectors as the activation layer computes them.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, mean: Float, inv: Float, _ gamma: Float, _ beta: Float,
                          xhat: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, activation: Bool, six: Bool) {
        var i = 0
        while i + V.scalarCount <= n {
            let v = (load(x + i) - mean) * inv
            store(v, xhat + i)
            let out = gamma * v + beta
            store(activation ? (six ? ReLU6Function.apply(out) : relu(out)) : out, y + i)
            i += V.scalarCount
        }
        while i < n {
            let v = (x[i] - mean) * inv
            xhat[i] = v
            y[i] = activation ? activate(six ? .relu6 : .relu, gamma * v + beta) : gamma * v + beta
            i += 1
        }
    }
}

/// A sum in Double of float terms: the terms are added in float, eight lanes at a time, over runs
/// of at most `run` elements, and each run's sum is added in Double. A run's float sum is exact to
/// about 1e-6 of its size; a batch norm's sums over a whole batch (10⁵ to 10⁷ terms) would not be.
/// The order is fixed by the calls alone, so the result does not depend on threads.
struct DoubleSums {
    private(set) var total: Double = 0
    private static let run = 512
    private typealias V8 = SIMD8<Float>

    @inline(__always)
    private static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }

    /// Adds f(i) for i in 0..<n, the vector form `vector(i)` for eight terms from i.
    @inline(__always)
    private mutating func add(_ n: Int, vector: (Int) -> SIMD8<Float>, scalar: (Int) -> Float) {
        var start = 0
        while start < n {
            let end = min(n, start + DoubleSums.run)
            var acc = V8(), i = start
            while i + 8 <= end { acc += vector(i); i += 8 }
            var tail: Float = 0
            while i < end { tail += scalar(i); i += 1 }
            total += Double(acc.sum()) + Double(tail)
            start = end
        }
    }

    /// sums += g[i] and products += g[i]·x[i] in one pass, each in `add`'s order (runs, lanes).
    /// With `mask` (γ, β, ReLU6), g is dy where batch norm's fused ReLU or ReLU6 passes a gradient
    /// (γ x̂ + β > 0, and < 6 for ReLU6) and zero elsewhere, written to `masked`.
    @inline(__always)
    static func add(_ dy: UnsafePointer<Float>, times x: UnsafePointer<Float>, _ n: Int, _ sums: inout DoubleSums,
                    _ products: inout DoubleSums, mask: (Float, Float, Bool)?, masked: UnsafeMutablePointer<Float>?) {
        var start = 0
        while start < n {
            let end = min(n, start + run)
            var a = V8(), b = V8(), i = start
            while i + 8 <= end {
                var g = DoubleSums.load(dy + i)
                let xv = DoubleSums.load(x + i)
                if let (gamma, beta, six) = mask {
                    let v = gamma * xv + beta
                    var pass = v .> 0
                    if six { pass = pass .& (v .< 6) }
                    g = V8(repeating: 0).replacing(with: g, where: pass)
                    if let masked { UnsafeMutableRawPointer(masked + i).storeBytes(of: g, as: V8.self) }
                }
                a += g
                b += g * xv
                i += 8
            }
            var ta: Float = 0, tb: Float = 0
            while i < end {
                var g = dy[i]
                if let (gamma, beta, six) = mask {
                    g = Activation.derivative(six ? .relu6 : .relu, gamma * x[i] + beta) == 0 ? 0 : g
                    masked?[i] = g
                }
                ta += g
                tb += g * x[i]
                i += 1
            }
            sums.total += Double(a.sum()) + Double(ta)
            products.total += Double(b.sum()) + Double(tb)
            start = end
        }
    }

    @inline(__always)
    mutating func add(_ x: UnsafePointer<Float>, _ n: Int) {
        add(n, vector: { DoubleSums.load(x + $0) }, scalar: { x[$0] })
    }

    /// Adds (x[i] - minus)².
    @inline(__always)
    mutating func addSquares(_ x: UnsafePointer<Float>, _ n: Int, minus: Float) {
        add(n, vector: { let d = DoubleSums.load(x + $0) - minus; return d * d }, scalar: { let d = x[$0] - minus; return d * d })
    }
}
