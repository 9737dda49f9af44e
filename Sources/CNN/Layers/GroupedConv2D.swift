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
public final class GroupedConv2D: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (OC, CG, KH, KW)
    public let bias: Parameter?    // (OC)
    let geometry: ConvGeometry
    let groups: Int
    /// Set by the model when batch norm follows: folded into the weights at inference.
    var folding: NormFolding?
    private var saved: FloatBuffer?
    private var output = Workspace()
    private var inputGrad = Workspace()

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
        let y = output.reserve(batch * outputShape.count)
        // Inference through a folded batch norm uses the folded weights (and the ReLU after it).
        let folded = training ? nil : folding?.folded(weight: weight, bias: bias)
        let w = folded?.weight ?? UnsafePointer(weight.value.pointer)
        let b = folded?.bias ?? bias.map { UnsafePointer($0.value.pointer) }
        let relu = folded != nil && folding?.relu == true
        let xp = x.pointer, yp = y.pointer
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
                if relu { for i in 0..<ohw { dst[i] = reluIf(true, dst[i]) } }
            }
        }
        saved = x
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard let x = saved?.pointer else { return nil }
        let g = geometry, oc = outputShape.c, cg = g.c / groups, og = oc / groups
        let hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let dyp = dy.pointer, w = weight.value.pointer
        // Weight and bias gradients: output channel o's are its task's alone, summed over the
        // batch in order.
        if let dw = weight.grad?.pointer {
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
        let dx = inputGrad.reserve(batch * inputShape.count)
        let dxp = dx.pointer
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
