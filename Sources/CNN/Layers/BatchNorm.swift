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

    // Kept for backward: the batch's mean and 1/σ per channel, and the input, from which backward
    // derives x̂ by forward's own arithmetic (storing x̂ was one more pass over the activation
    // forward, and one more buffer of its size).
    private var batchMean = Workspace()
    private var invStd = Workspace()
    /// The parameters of the element-wise passes over small planes, one per value (`spread`).
    private var spreadParameters = Workspace()
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    private var lastInput: FloatBuffer?
    /// The output of the last forward when it trained (see `wroteInTraining`).
    private var lastOutput: FloatBuffer?
    /// Two running sums per channel (forward's sum and squares, backward's dy and dy · x̂).
    private let sums = ElementWorkspace<DoubleSums>()
    private var lastTraining = true
    /// Set by the model when the convolution before applies this norm at inference (NormFolding):
    /// forward then passes its input through unless training.
    var foldedIntoPrevious = false
    /// Set by the model when a ReLU or ReLU6 follows: applied in this norm's output write, and its
    /// gradient's mask in backward, from x̂ by the forward's own arithmetic (the activation layer
    /// passes through, and neither the norm's output nor the activation's is kept for backward).
    var activation: ActivationKind?
    /// Planes of 1, 2 or 4 values go a group of channels at a time (BatchNormSmallPlanes.swift);
    /// tests turn it off to compare with the per-plane loops.
    var groupsSmallPlanes = true
    /// Turned off while a recomputed block runs forward again (`Recomputation`): the batch's
    /// statistics are computed again, the running ones were updated the first time.
    var updatesRunningStatistics = true

    /// Backward reads the input (to derive x̂, or after an inference forward with frozen statistics).
    var backwardReads: BackwardReads { .input }

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
        lastOutput = training ? out : nil
        if !training {
            lastInput = x
            let rm = runningMean.value.pointer, rv = runningVar.value.pointer
            let clamp = Clamp(activation), eps = self.eps
            // y = x·a + b per plane (a multiply, then an add: the same bits in a vector as alone),
            // in chunks of about 16K values over the threads: the norms not folded (DenseNet's,
            // after each concatenation) took 27.5 of DenseNet-121's 67.5 ms a scalar loop at a time.
            parallelChunks(batch * c, chunk: max(1, 16384 / max(1, s))) { lo, hi in
                for plane in lo..<hi {
                    let ch = plane % c
                    let a = gamma[ch] / (rv[ch] + eps).squareRoot(), b = beta[ch] - rm[ch] * a
                    let va = V(repeating: a), vb = V(repeating: b), src = xp + plane * s, dst = y + plane * s
                    var i = 0
                    while i + V.scalarCount <= s {
                        store(clamp.apply(load(src + i) * va + vb), dst + i)
                        i += V.scalarCount
                    }
                    while i < s {
                        dst[i] = clamp.apply(src[i] * a + b)
                        i += 1
                    }
                }
            }
            return out
        }
        lastInput = x
        let means = batchMean.reserve(c).pointer, istd = invStd.reserve(c).pointer
        let m = Float(batch * s)
        let rm = runningMean.value.pointer, rv = runningVar.value.pointer
        let momentum = self.momentum, eps = self.eps, act = activation != nil, updates = updatesRunningStatistics
        let sum = sums.reserve(2 * c), sq = sum + c
        let spread = spreadParameters.reserve(groupedEnd(0, c, planes: s) > 0 ? 4 * c * s : 0).pointer
        // Each task's channels are a contiguous block of every sample, read in memory order (a
        // channel at a time, a small plane's reads jumped from sample to sample and waited on
        // memory); each channel's sums still take its planes in sample order.
        parallelChunks(c, chunk: BatchNorm.chunk(c)) { c0, c1 in
            // Channels c0..<g1 in groups (small planes), g1..<c1 a plane at a time.
            let g1 = groupedEnd(c0, c1, planes: s)
            // The channel's sums in Double: a deep network in training mode amplifies the
            // rounding of its batch statistics (in float, a ResNet-20's step differed from
            // PyTorch's float64 step by 2 % on some weights; PyTorch's own float32 by 0.006 %).
            for ch in c0..<c1 { (sum[ch], sq[ch]) = (DoubleSums(), DoubleSums()) }
            BatchNorm.groupSums(xp, batch: batch, channels: c, plane: s, c0..<g1, minus: nil, into: sum)
            for n in 0..<batch {
                for ch in g1..<c1 { sum[ch].add(xp + (n * c + ch) * s, s) }
            }
            for ch in c0..<c1 { means[ch] = Float(sum[ch].total / Double(m)) }
            BatchNorm.groupSums(xp, batch: batch, channels: c, plane: s, c0..<g1, minus: means, into: sq)
            for n in 0..<batch {
                for ch in g1..<c1 { sq[ch].addSquares(xp + (n * c + ch) * s, s, minus: means[ch]) }
            }
            for ch in c0..<c1 {
                let variance = Float(sq[ch].total / Double(m))
                istd[ch] = 1 / (variance + eps).squareRoot()
                let unbiased = m > 1 ? variance * m / (m - 1) : variance
                if updates {
                    rm[ch] = (1 - momentum) * rm[ch] + momentum * means[ch]
                    rv[ch] = (1 - momentum) * rv[ch] + momentum * unbiased
                }
            }
            let cs = c * s
            BatchNorm.spread(means, plane: s, c0..<g1, into: spread)
            BatchNorm.spread(istd, plane: s, c0..<g1, into: spread + cs)
            BatchNorm.spread(gamma, plane: s, c0..<g1, into: spread + 2 * cs)
            BatchNorm.spread(beta, plane: s, c0..<g1, into: spread + 3 * cs)
            BatchNorm.groupNormalize(xp, y, batch: batch, channels: c, plane: s, c0..<g1, spread: spread, activation: act, six: six)
            for n in 0..<batch {
                for ch in g1..<c1 {
                    let base = (n * c + ch) * s
                    BatchNorm.normalize(xp + base, mean: means[ch], inv: istd[ch], gamma[ch], beta[ch], y + base, s,
                                        activation: act, six: six)
                }
            }
        }
        if updates {
            runningMean.version += 1
            runningVar.version += 1
            batchesTracked += 1
        }
        return out
    }

    /// Whether `buffer` is the output of the last forward, which trained: the convolution after the
    /// norm then keeps no copy of it, and its backward has it recomputed (`recomputeOutput`).
    func wroteInTraining(_ buffer: FloatBuffer) -> Bool { lastTraining && lastOutput === buffer }

    /// Sample n's output channels `channels` of the last (training) forward, written at their
    /// offsets from `y` (channel ch at y + ch·H·W), by forward's own arithmetic from the kept input
    /// and batch statistics: the same bits. Valid until this norm's next forward or an update of γ
    /// and β, so during the backward of the layers after it.
    func recomputeOutput(sample n: Int, channels: Range<Int>, into y: UnsafeMutablePointer<Float>) {
        guard let x = lastInput?.pointer else { return }
        let c = inputShape.c, s = inputShape.h * inputShape.w
        let means = batchMean.buffer.pointer, istd = invStd.buffer.pointer
        let gamma = weight.value.pointer, beta = bias.value.pointer
        for ch in channels {
            BatchNorm.normalize(x + (n * c + ch) * s, mean: means[ch], inv: istd[ch], gamma[ch], beta[ch], y + ch * s, s,
                                activation: activation != nil, six: activation == .relu6)
        }
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let c = inputShape.c, s = inputShape.h * inputShape.w, count = batch * c * s
        let means = batchMean.buffer.pointer, istd = invStd.buffer.pointer, dyp = dy.pointer
        let gamma = weight.value.pointer
        guard let dgamma = weight.grad?.pointer, let dbeta = bias.grad?.pointer, let x = lastInput?.pointer else { return nil }
        if !lastTraining {
            return backwardFrozen(dy, batch: batch, needInputGradient: needInputGradient)
        }
        // x̂ and a fused activation's mask are derived from x in both passes, as forward did.
        let act = activation != nil, six = activation == .relu6, beta = bias.value.pointer
        let dxBuffer = needInputGradient ? buffers.inputGradient(count, dy: dy) : nil, dx = dxBuffer?.pointer
        let m = Float(batch * s)
        let sumDy = sums.reserve(2 * c), sumDyXhat = sumDy + c
        // In memory order, each channel's planes in sample order, as forward.
        let mask = act ? (UnsafePointer(gamma), UnsafePointer(beta), six) : nil
        let spread = spreadParameters.reserve(groupedEnd(0, c, planes: s) > 0 && needInputGradient ? 7 * c * s + 3 * c : 0).pointer
        let terms = spread + 7 * c * s  // k, mean(dy), mean(dy · x̂) per channel, after the spread ones
        parallelChunks(c, chunk: BatchNorm.chunk(c)) { c0, c1 in
            let g1 = groupedEnd(c0, c1, planes: s)
            for ch in c0..<c1 { (sumDy[ch], sumDyXhat[ch]) = (DoubleSums(), DoubleSums()) }
            BatchNorm.groupGradientSums(dyp, x, batch: batch, channels: c, plane: s, c0..<g1, mean: means, inv: istd, mask: mask,
                                        sumDy, sumDyXhat)
            for n in 0..<batch {
                for ch in g1..<c1 {
                    let base = (n * c + ch) * s
                    DoubleSums.add(dyp + base, timesNormalized: x + base, (means[ch], istd[ch]), s, &sumDy[ch], &sumDyXhat[ch],
                                   mask: act ? (gamma[ch], beta[ch], six) : nil)
                }
            }
            for ch in c0..<c1 {
                dgamma[ch] += Float(sumDyXhat[ch].total)
                dbeta[ch] += Float(sumDy[ch].total)
            }
            guard let dx else { return }
            // dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy · x̂))
            for ch in c0..<g1 {
                terms[ch] = gamma[ch] * istd[ch]
                terms[c + ch] = Float(sumDy[ch].total / Double(m))
                terms[2 * c + ch] = Float(sumDyXhat[ch].total / Double(m))
            }
            let cs = c * s
            BatchNorm.spread(means, plane: s, c0..<g1, into: spread)
            BatchNorm.spread(istd, plane: s, c0..<g1, into: spread + cs)
            BatchNorm.spread(terms, plane: s, c0..<g1, into: spread + 2 * cs)
            BatchNorm.spread(terms + c, plane: s, c0..<g1, into: spread + 3 * cs)
            BatchNorm.spread(terms + 2 * c, plane: s, c0..<g1, into: spread + 4 * cs)
            if act {
                BatchNorm.spread(gamma, plane: s, c0..<g1, into: spread + 5 * cs)
                BatchNorm.spread(beta, plane: s, c0..<g1, into: spread + 6 * cs)
            }
            BatchNorm.groupInputGradient(dyp, x, dx, batch: batch, channels: c, plane: s, c0..<g1, spread: spread,
                                         mask: act ? six : nil)
            for n in 0..<batch {
                for ch in g1..<c1 {
                    let base = (n * c + ch) * s
                    BatchNorm.inputGradient(dyp + base, x + base, (means[ch], istd[ch]), mask: act ? (gamma[ch], beta[ch], six) : nil,
                                            k: gamma[ch] * istd[ch], meanDy: Float(sumDy[ch].total / Double(m)),
                                            meanDyXhat: Float(sumDyXhat[ch].total / Double(m)), dx + base, s)
                }
            }
        }
        return dxBuffer
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
    /// Channels per task: a contiguous block of every sample for each thread.
    static func chunk(_ channels: Int) -> Int {
        let threads = ThreadPool.shared.threads
        return max(4, (channels + threads - 1) / threads)
    }

    /// A fused activation applied to one value (the activation layer's own definitions).
    @inline(__always)
    static func activate(_ kind: ActivationKind?, _ v: Float) -> Float {
        guard let kind else { return v }
        return kind == .relu ? reluIf(true, v) : Activation.value(kind, v)
    }

    /// g where the fused ReLU (with `six`, ReLU6) passes a gradient, γ x̂ + β > 0 (and < 6), and 0
    /// elsewhere: forward's mask, from x̂ by forward's arithmetic. (Not generic over the vector type:
    /// generic, batch norm's training ran 5× slower.)
    @inline(__always)
    static func passed(_ g: V, xh: V, gamma: V, beta: V, six: Bool) -> V {
        let v = gamma * xh + beta
        var pass = v .> 0
        if six { pass = pass .& (v .< 6) }
        return V(repeating: 0).replacing(with: g, where: pass)
    }

    /// `body` given the fused activation's clamp as a constant, a copy of it for each: with the
    /// choice inside a vector loop, LLVM computed the ReLU lane by lane (an extract, a test and a
    /// branch each; normalize took 4-5× the time on a plane in cache).
    @inline(__always)
    static func withClamp(activation: Bool, six: Bool, _ body: (Clamp) -> Void) {
        if !activation {
            body(.none)
        } else if six {
            body(.relu6)
        } else {
            body(.relu)
        }
    }

    /// x̂ = (x - mean) · inv and y = γ x̂ + β (then the fused ReLU or ReLU6) over one plane of n
    /// values, in vectors as the activation layer computes them.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, mean: Float, inv: Float, _ gamma: Float, _ beta: Float,
                          _ y: UnsafeMutablePointer<Float>, _ n: Int, activation: Bool, six: Bool) {
        let m = V(repeating: mean), k = V(repeating: inv), g = V(repeating: gamma), b = V(repeating: beta)
        withClamp(activation: activation, six: six) { clamp in
            var i = 0
            while i + V.scalarCount <= n {
                store(clamp.apply(g * ((load(x + i) - m) * k) + b), y + i)
                i += V.scalarCount
            }
        }
        var i = n / V.scalarCount * V.scalarCount
        while i < n {
            let v = (x[i] - mean) * inv
            y[i] = activation ? activate(six ? .relu6 : .relu, gamma * v + beta) : gamma * v + beta
            i += 1
        }
    }

    /// dx = k · (g - meanDy - x̂ · meanDyXhat) over one plane of n values, with x̂ from x as forward
    /// derives it and g = dy, or with `mask` (γ, β, ReLU6) dy where the fused activation passes a
    /// gradient (γ x̂ + β > 0, and < 6 for ReLU6) and 0 elsewhere.
    @inline(__always)
    static func inputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ norm: (mean: Float, inv: Float),
                              mask: (Float, Float, Bool)?, k: Float, meanDy: Float, meanDyXhat: Float,
                              _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + V.scalarCount <= n {
            let xh = (load(x + i) - norm.mean) * norm.inv
            var g = load(dy + i)
            if let (gamma, beta, six) = mask { g = passed(g, xh: xh, gamma: V(repeating: gamma), beta: V(repeating: beta), six: six) }
            store(k * (g - meanDy - xh * meanDyXhat), dx + i)
            i += V.scalarCount
        }
        while i < n {
            let xh = (x[i] - norm.mean) * norm.inv
            var g = dy[i]
            if let (gamma, beta, six) = mask {
                g = Activation.derivative(six ? .relu6 : .relu, gamma * xh + beta) == 0 ? 0 : g
            }
            dx[i] = k * (g - meanDy - xh * meanDyXhat)
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

    /// sums += g[i] and products += g[i]·x̂[i] in one pass, each in `add`'s order (runs, lanes), with
    /// x̂ = (x - mean) · inv as batch norm's forward derives it. With `mask` (γ, β, ReLU6), g is dy
    /// where batch norm's fused ReLU or ReLU6 passes a gradient (γ x̂ + β > 0, and < 6 for ReLU6)
    /// and zero elsewhere.
    @inline(__always)
    static func add(_ dy: UnsafePointer<Float>, timesNormalized x: UnsafePointer<Float>, _ norm: (mean: Float, inv: Float), _ n: Int,
                    _ sums: inout DoubleSums, _ products: inout DoubleSums, mask: (Float, Float, Bool)?) {
        var start = 0
        while start < n {
            let end = min(n, start + run)
            var a = V8(), b = V8(), i = start
            while i + 8 <= end {
                var g = DoubleSums.load(dy + i)
                let xv = (DoubleSums.load(x + i) - norm.mean) * norm.inv
                if let (gamma, beta, six) = mask {
                    let v = gamma * xv + beta
                    var pass = v .> 0
                    if six { pass = pass .& (v .< 6) }
                    g = V8(repeating: 0).replacing(with: g, where: pass)
                }
                a += g
                b += g * xv
                i += 8
            }
            var ta: Float = 0, tb: Float = 0
            while i < end {
                var g = dy[i]
                let xv = (x[i] - norm.mean) * norm.inv
                if let (gamma, beta, six) = mask {
                    g = Activation.derivative(six ? .relu6 : .relu, gamma * xv + beta) == 0 ? 0 : g
                }
                ta += g
                tb += g * xv
                i += 1
            }
            sums.total += Double(a.sum()) + Double(ta)
            products.total += Double(b.sum()) + Double(tb)
            start = end
        }
    }

    /// Adds a total made elsewhere (batch norm's groups of small planes).
    @inline(__always)
    mutating func add(total t: Double) { total += t }

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
