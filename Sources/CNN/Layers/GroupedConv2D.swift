// G = groups, CG = C / G input channels per group, OG = OC / G output channels per group.

/// Grouped 2-D convolution, PyTorch's `Conv2d(groups=G)`: input channels g·CG ..< (g+1)·CG make
/// output channels g·OG ..< (g+1)·OG; depthwise when G = C. Weight (OC, CG, KH, KW), bias (OC).
///
/// Run directly, not through im2col (whose matrix would have CG rows, too few for a product to
/// pay): an output plane is its bias plus, for each of its group's input channels and each kernel
/// tap, the weight times the input plane shifted by the tap. With stride 1 that shifted row is
/// contiguous, an axpy the compiler vectorizes at every kernel level. Each output plane is one
/// task's and sums in a fixed order, so the result does not depend on the number of threads;
/// backward keeps the input and nothing else.
public final class GroupedConv2D: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (OC, CG, KH, KW)
    public let bias: Parameter?    // (OC)
    let geometry: ConvGeometry
    let groups: Int
    /// Set by the model when batch norm follows: folded into the weights at inference.
    var folding: NormFolding?
    /// Set by the model when a ReLU or ReLU6 follows: applied in the output write (see Conv2D's).
    var fusedActivation = Clamp.none
    /// Set by the model when a SiLU follows: applied in the output write at inference only.
    var inferenceActivation = Clamp.none
    private var saved: FloatBuffer?
    private var depthwiseScratch = Workspace()
    private var turnedWeights = Workspace()  // the input gradient's kernels, turned by 180°
    /// Small planes (DepthwiseChannelsLast.swift): the samples' pixels channels last, the weights
    /// as taps × channels; the weight gradient's sums.
    var channelsLastScratch = Workspace()
    let channelsLastSums = DoubleWorkspace()
    /// The forward's weights channels last, and the version (or folding key) they were made from.
    var channelsLastWeights = Workspace()
    var channelsLastWeightsKey: Int?
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)

    init(spec: LayerSpec, input: Shape, outChannels: Int, groups: Int, kernel: (Int, Int), stride: (Int, Int),
         padding: (Int, Int), bias hasBias: Bool) {
        self.spec = spec
        inputShape = input
        self.groups = groups
        geometry = ConvGeometry(c: input.c, h: input.h, w: input.w, kh: kernel.0, kw: kernel.1,
                                sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1)
        outputShape = Shape(c: outChannels, h: geometry.oh, w: geometry.ow)
        weight = Parameter(name: "weight", shape: [outChannels, input.c / groups, kernel.0, kernel.1], trainable: true)
        bias = hasBias ? Parameter(name: "bias", shape: [outChannels], trainable: true) : nil
    }

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }
    public var flops: Int { 2 * outputShape.count * (geometry.c / groups) * geometry.kh * geometry.kw }

    /// The output columns `ox` whose input column `ox·sw - pw + kx` lies in the row.
    @inline(__always)
    private func columns(_ kx: Int) -> Range<Int> {
        let g = geometry
        let u = g.pw - kx, t = g.w - 1 + g.pw - kx
        let lo = u <= 0 ? 0 : (u + g.sw - 1) / g.sw
        let hi = t < 0 ? 0 : min(g.ow, t / g.sw + 1)
        return lo..<max(lo, hi)
    }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let g = geometry, oc = outputShape.c, cg = g.c / groups, og = oc / groups
        let hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let y = buffers.output(batch * outputShape.count, input: x, training: training)
        // Inference through a folded batch norm uses the folded weights (and the ReLU or ReLU6 after it).
        let folded = training ? nil : folding?.folded(weight: weight, bias: bias)
        let w = folded?.weight ?? UnsafePointer(weight.value.pointer)
        let b = folded?.bias ?? bias.map { UnsafePointer($0.value.pointer) }
        let clamp: Clamp = fusedActivation != .none ? fusedActivation : folded?.clamp ?? (training ? .none : inferenceActivation)
        let xp = x.pointer, yp = y.pointer
        saved = x
        if let plan = depthwisePlan {
            if runsChannelsLast {
                depthwiseChannelsLast(xp, weights: w, key: folded != nil ? folding!.key : weight.version, bias: b, clamp: clamp, batch: batch, into: yp)
            } else {
                depthwise(xp, plan, weights: w, bias: b, clamp: clamp, batch: batch, into: yp)
            }
            return y
        }
        parallelChunks(batch * oc, chunk: max(1, 8192 / max(1, ohw * cg * taps))) { lo, hi in
            for plane in lo..<hi {
                let n = plane / oc, o = plane % oc, group = o / og
                let dst = yp + plane * ohw
                dst.update(repeating: b?[o] ?? 0, count: ohw)
                for ic in 0..<cg {
                    let src = xp + (n * g.c + group * cg + ic) * hw
                    let wk = w + (o * cg + ic) * taps
                    for ky in 0..<g.kh {
                        for kx in 0..<g.kw {
                            let wv = wk[ky * g.kw + kx], cols = columns(kx)
                            guard !cols.isEmpty else { continue }
                            for oy in 0..<g.oh {
                                let iy = oy * g.sh - g.ph + ky
                                guard iy >= 0 && iy < g.h else { continue }
                                let row = dst + oy * g.ow, input = src + iy * g.w - g.pw + kx
                                if g.sw == 1 {
                                    for ox in cols { row[ox] += wv * input[ox] }
                                } else {
                                    for ox in cols { row[ox] += wv * input[ox * g.sw] }
                                }
                            }
                        }
                    }
                }
                if clamp != .none { for i in 0..<ohw { dst[i] = clamp.apply(dst[i]) } }
            }
        }
        return y
    }

    /// A depthwise convolution (one input channel per output channel) at stride 1 or 2 runs by
    /// `depthwiseForward`; nil otherwise.
    lazy var depthwisePlan: DepthwisePlan? = {
        let g = geometry
        guard g.c == groups, outputShape.c == groups, g.sh == g.sw, g.sw == 1 || g.sw == 2 else { return nil }
        return DepthwisePlan(g)
    }()

    /// A depthwise convolution on small planes runs channels last (DepthwiseChannelsLast.swift).
    var runsChannelsLast: Bool { depthwisePlan != nil && geometry.depthwiseChannelsLast }

    /// At stride 1 a depthwise convolution's input gradient is a depthwise convolution too: dy,
    /// bordered by KH-1-PH rows and KW-1-PW columns, correlated with each kernel turned by 180°
    /// (an H × W result), so it runs by `depthwise` as the forward does. nil at stride 2 and
    /// where the padding reaches past the kernel.
    lazy var depthwiseGradientPlan: DepthwisePlan? = {
        let g = geometry
        guard depthwisePlan != nil, g.sh == 1, g.sw == 1, g.ph < g.kh, g.pw < g.kw else { return nil }
        return DepthwisePlan(ConvGeometry(c: outputShape.c, h: g.oh, w: g.ow, kh: g.kh, kw: g.kw,
                                          sh: 1, sw: 1, ph: g.kh - 1 - g.ph, pw: g.kw - 1 - g.pw))
    }()

    /// A depthwise weight gradient: dW[o, tap] = Σ over samples and outputs of dy times the input
    /// the tap reads, from the same bordered scratch plane as forward, so every read is a
    /// contiguous vector. Per sample, each tap sums in its own vector of lanes, added in Double at
    /// the sample's end; channel o is one task's, summed over the batch in order.
    private func depthwiseWeightGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ plan: DepthwisePlan, batch: Int,
                                         dw: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>?) {
        let g = geometry, oc = outputShape.c, hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw, s = g.sw
        let tasks = min(oc, max(2, min(batch, ThreadPool.shared.threads)))
        let perTask = plan.scratchCount + plan.paddedOutputCount
        let scratch = depthwiseScratch.reserve(tasks * perTask).pointer
        let w = V.scalarCount, vectors = plan.paddedOW / w
        ThreadPool.shared.parallelFor(tasks) { task in
            let own = scratch + task * perTask, dyRows = own + plan.scratchCount
            withUnsafeTemporaryAllocation(of: Double.self, capacity: taps) { sums in
                for o in stride(from: task, to: oc, by: tasks) {
                    sums.initialize(repeating: 0)
                    var biasSum = DoubleSums()
                    for n in 0..<batch {
                        let plane = n * oc + o, d = dy + plane * ohw
                        if db != nil { biasSum.add(d, ohw) }
                        plan.border(x + plane * hw, into: own, bordered: o != task || n > 0, end: x + batch * oc * hw,
                                    prefetching: n + 1 < batch ? x + (plane + oc) * hw : nil)
                        // Rows of whole vectors are read where they are.
                        let rows = plan.paddedOW == g.ow ? d : UnsafePointer(dyRows)
                        if plan.paddedOW != g.ow { plan.pad(d, into: dyRows) }
                        // Each tap sums dy times its input in one vector of lanes, over the rows
                        // and columns in order; up to four taps of a kernel row at a time.
                        for ky in 0..<g.kh {
                            var kx = 0
                            while kx < g.kw {
                                let count = min(4, g.kw - kx)
                                let o0 = plan.offset(ky, kx), o1 = plan.offset(ky, min(kx + 1, g.kw - 1))
                                let o2 = plan.offset(ky, min(kx + 2, g.kw - 1)), o3 = plan.offset(ky, min(kx + 3, g.kw - 1))
                                var a0 = V(), a1 = V(), a2 = V(), a3 = V()
                                for oy in 0..<g.oh {
                                    let row = own + oy * s * plan.rowStride, dv = rows + oy * plan.paddedOW
                                    for v in 0..<vectors {
                                        let d = load(dv + v * w), r = row + v * w
                                        a0 = fmadd(a0, d, load(r + o0))
                                        a1 = fmadd(a1, d, load(r + o1))
                                        a2 = fmadd(a2, d, load(r + o2))
                                        a3 = fmadd(a3, d, load(r + o3))
                                    }
                                }
                                let t = ky * g.kw + kx
                                sums[t] += Double(a0.sum())
                                if count > 1 { sums[t + 1] += Double(a1.sum()) }
                                if count > 2 { sums[t + 2] += Double(a2.sum()) }
                                if count > 3 { sums[t + 3] += Double(a3.sum()) }
                                kx += count
                            }
                        }
                    }
                    for t in 0..<taps { dw[o * taps + t] += Float(sums[t]) }
                    if let db { db[o] += Float(biasSum.total) }
                }
            }
        }
    }

    /// Each output row is computed in vector registers, V.scalarCount outputs at a time: the bias
    /// plus, for every tap, the weight times the input row it reads, so each output is written
    /// once. The input plane is first copied, zero-bordered, into the task's scratch; at stride 2
    /// its even and odd columns are split apart there, so every tap's read is contiguous. Each
    /// plane is one task's and is computed the same way whichever task that is.
    /// The plan's geometry is the forward's, or the input gradient's (`depthwiseGradientPlan`).
    private func depthwise(_ x: UnsafePointer<Float>, _ plan: DepthwisePlan, weights: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, clamp: Clamp, batch: Int, into y: UnsafeMutablePointer<Float>) {
        let g = plan.g, oc = g.c, hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw, planes = batch * oc
        // At most max(2, batch) scratch planes, as the model's memory plan counts them.
        let tasks = min(planes, max(2, min(batch, ThreadPool.shared.threads)))
        let scratch = depthwiseScratch.reserve(tasks * plan.scratchCount).pointer
        ThreadPool.shared.parallelFor(tasks) { task in
            let own = scratch + task * plan.scratchCount
            // Each task takes a run of consecutive planes: one stream through memory per core.
            let first = planes * task / tasks, end = planes * (task + 1) / tasks
            for plane in first..<end {
                plan.border(x + plane * hw, into: own, bordered: plane != first, end: x + planes * hw,
                            prefetching: plane + 1 < end ? x + (plane + 1) * hw : nil)
                let o = plane % oc, wk = weights + o * taps, dst = y + plane * ohw
                let start = V(repeating: bias?[o] ?? 0)
                // The common kernels' weights stay in registers for the whole plane.
                if g.kh == 3 && g.kw == 3 {
                    plan.convolve(Taps3x3(wk), own, start: start, clamp: clamp, into: dst)
                } else if g.kh == 5 && g.kw == 5 {
                    plan.convolve(Taps5x5(wk), own, start: start, clamp: clamp, into: dst)
                } else {
                    plan.convolve(AnyTaps(weights: wk), own, start: start, clamp: clamp, into: dst)
                }
            }
        }
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard let x = saved?.pointer else { return nil }
        let g = geometry, oc = outputShape.c, cg = g.c / groups, og = oc / groups
        let hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let dyp = dy.pointer, w = weight.value.pointer
        if runsChannelsLast {
            let dx = needInputGradient ? buffers.inputGradient(batch * inputShape.count, dy: dy) : nil
            depthwiseChannelsLastBackward(x, dyp, batch: batch, dw: weight.grad?.pointer, db: bias?.grad?.pointer, dx: dx?.pointer)
            return dx
        }
        // Weight and bias gradients: output channel o's are its task's alone, summed over the
        // batch in order.
        if let dw = weight.grad?.pointer, let plan = depthwisePlan {
            depthwiseWeightGradient(x, dyp, plan, batch: batch, dw: dw, db: bias?.grad?.pointer)
        } else if let dw = weight.grad?.pointer {
            let db = bias?.grad?.pointer
            parallelChunks(oc, chunk: max(1, 8192 / max(1, batch * ohw * cg * taps))) { lo, hi in
                for o in lo..<hi {
                    let group = o / og
                    if let db {
                        var sum: Double = 0
                        for n in 0..<batch { let d = dyp + (n * oc + o) * ohw; for i in 0..<ohw { sum += Double(d[i]) } }
                        db[o] += Float(sum)
                    }
                    for ic in 0..<cg {
                        for ky in 0..<g.kh {
                            for kx in 0..<g.kw {
                                // Summed in Double across rows and samples: the tap's gradient is a sum
                                // of many terms of both signs.
                                let cols = columns(kx)
                                var sum: Double = 0
                                for n in 0..<batch {
                                    let d = dyp + (n * oc + o) * ohw, src = x + (n * g.c + group * cg + ic) * hw
                                    for oy in 0..<g.oh {
                                        let iy = oy * g.sh - g.ph + ky
                                        guard iy >= 0 && iy < g.h else { continue }
                                        let row = d + oy * g.ow, input = src + iy * g.w - g.pw + kx
                                        var s: Float = 0
                                        if g.sw == 1 {
                                            for ox in cols { s += row[ox] * input[ox] }
                                        } else {
                                            for ox in cols { s += row[ox] * input[ox * g.sw] }
                                        }
                                        sum += Double(s)
                                    }
                                }
                                dw[(o * cg + ic) * taps + ky * g.kw + kx] += Float(sum)
                            }
                        }
                    }
                }
            }
        }
        guard needInputGradient else { return nil }
        // Input gradient: input channel c is written by its group's output channels only; one
        // task per (sample, input channel).
        let dx = buffers.inputGradient(batch * inputShape.count, dy: dy)
        let dxp = dx.pointer
        if let plan = depthwiseGradientPlan {
            let turned = turnedWeights.reserve(oc * taps).pointer
            for o in 0..<oc { for t in 0..<taps { turned[o * taps + t] = w[o * taps + taps - 1 - t] } }
            depthwise(dyp, plan, weights: turned, bias: nil, clamp: .none, batch: batch, into: dxp)
            return dx
        }
        parallelChunks(batch * g.c, chunk: max(1, 8192 / max(1, hw * og * taps))) { lo, hi in
            for plane in lo..<hi {
                let n = plane / g.c, c = plane % g.c, group = c / cg, ic = c % cg
                let dst = dxp + plane * hw
                dst.update(repeating: 0, count: hw)
                for j in 0..<og {
                    let o = group * og + j
                    let d = dyp + (n * oc + o) * ohw, wk = w + (o * cg + ic) * taps
                    for ky in 0..<g.kh {
                        for kx in 0..<g.kw {
                            let wv = wk[ky * g.kw + kx], cols = columns(kx)
                            guard !cols.isEmpty else { continue }
                            for oy in 0..<g.oh {
                                let iy = oy * g.sh - g.ph + ky
                                guard iy >= 0 && iy < g.h else { continue }
                                let row = d + oy * g.ow, target = dst + iy * g.w - g.pw + kx
                                if g.sw == 1 {
                                    for ox in cols { target[ox] += wv * row[ox] }
                                } else {
                                    for ox in cols { target[ox * g.sw] += wv * row[ox] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
