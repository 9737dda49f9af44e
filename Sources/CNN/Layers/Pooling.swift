// B = batch, C = channels, H×W input, OH×OW output, KH×KW window, SH×SW stride.

/// Output rows (or columns) of a pooling window `k` at `stride` over `n` inputs with `pad` on each
/// side, as PyTorch counts them: rounded down, or with `ceil` up, where the last window must
/// still start inside the input or its leading padding (so every window holds an input when
/// pad <= k / 2).
func pooledSize(_ n: Int, kernel k: Int, stride s: Int, pad p: Int, ceil: Bool) -> Int {
    var out = (n + 2 * p - k + (ceil ? s - 1 : 0)) / s + 1
    if ceil && (out - 1) * s >= n + p { out -= 1 }
    return out
}

/// The input rows (or columns) under output `o`'s window, its padding left out: lo..<hi, never
/// empty (pad <= k / 2, and a ceil-mode window starts inside the input or its leading padding).
@inline(__always)
func pooledWindow(_ o: Int, kernel k: Int, stride s: Int, pad p: Int, size n: Int) -> (Int, Int) {
    (max(o * s - p, 0), min(o * s - p + k, n))
}

/// Max pooling over KH×KW windows, with PH×PW padding that never wins (-infinity, as in PyTorch;
/// at most half the window, so every window holds an input); the output size rounds down, or up
/// with `ceil` (the last window then overhangs the input's end, which never wins either).
public final class MaxPool2D: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let kh: Int, kw: Int, sh: Int, sw: Int, ph: Int, pw: Int
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    // Kept for backward: the input index of every output's maximum, (B, C, OH, OW).
    private let argmax = IndexWorkspace()
    // Inference: each task's row of its window rows' maxima.
    private var columnMaxima = Workspace()
    /// Set by the model when a ReLU comes before: backward also applies the ReLU's mask (a
    /// maximum that is not positive passes no gradient: forward records its index as -1), and the
    /// ReLU passes its gradient through.
    var masksNonPositive = false
    /// Set by the model when the convolution before (through its fused ReLU) pools its own output,
    /// with the indices of the maxima in training (`indices`): forward passes it through.
    var fusedIntoConv = false

    /// Where forward keeps the index of each of `count` outputs' maximum, for backward.
    func indices(count: Int) -> UnsafeMutablePointer<Int32> { argmax.reserve(count) }

    var backwardReads: BackwardReads { fusedIntoConv ? .passingThrough : .nothing }

    init(spec: LayerSpec, input: Shape, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int) = (0, 0), ceil: Bool = false) {
        self.spec = spec
        inputShape = input
        (kh, kw) = kernel
        (sh, sw) = stride
        (ph, pw) = padding
        outputShape = Shape(c: input.c, h: pooledSize(input.h, kernel: kh, stride: sh, pad: ph, ceil: ceil),
                            w: pooledSize(input.w, kernel: kw, stride: sw, pad: pw, ceil: ceil))
    }

    public var flops: Int { outputShape.count * kh * kw }

    /// The 2×2 window at stride 2 over whole windows (not a ceil-mode window past an odd input's
    /// end), the one a convolution can pool as it writes its output.
    var isTwoByTwo: Bool {
        kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0
            && outputShape.h == inputShape.h / 2 && outputShape.w == inputShape.w / 2
    }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        if fusedIntoConv { return x }
        let h = inputShape.h, w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let planes = batch * inputShape.c
        let y = buffers.output(planes * oh * ow, input: x, training: training)
        let mask = masksNonPositive
        let amp = argmax.reserve(planes * oh * ow)
        let (kh, kw, sh, sw, ph, pw) = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
        let xp = x.pointer, yp = y.pointer
        let chunk = min(64, max(1, planes / 4))
        if !training && !isTwoByTwo {
            // Inference keeps no indices: each output row takes, column by column, the maximum of
            // its window's input rows (whole vectors, into its task's row of scratch), then each
            // window's maximum of those. The same value as below, and NaN where the window's first
            // input is NaN (a zero's sign may be the other maximum zero's).
            // A row of column maxima is followed by 2N floats of -infinity: the right padding,
            // which comes last in a window's scan and so never wins (nor replaces a NaN).
            let n = V.scalarCount, rowStride = (w + n - 1) / n * n + 2 * n
            let scratch = columnMaxima.reserve((planes + chunk - 1) / chunk * rowStride).pointer
            parallelChunks(planes, chunk: chunk) { p0, p1 in
                let columns = scratch + p0 / chunk * rowStride
                (columns + w).update(repeating: -.infinity, count: rowStride - w)
                for plane in p0..<p1 {
                    let src = xp + plane * h * w, dst = yp + plane * oh * ow
                    for oy in 0..<oh {
                        let (y0, y1) = pooledWindow(oy, kernel: kh, stride: sh, pad: ph, size: h)
                        var ix = 0
                        while ix + n <= w {
                            var best = load(src + y0 * w + ix)
                            for iy in y0 + 1..<y1 {
                                let v = load(src + iy * w + ix)
                                best.replace(with: v, where: v .> best)
                            }
                            store(best, columns + ix)
                            ix += n
                        }
                        while ix < w {
                            var best = src[y0 * w + ix]
                            for iy in y0 + 1..<y1 where src[iy * w + ix] > best { best = src[iy * w + ix] }
                            columns[ix] = best
                            ix += 1
                        }
                        @inline(__always) func window(_ ox: Int) {
                            let (x0, x1) = pooledWindow(ox, kernel: kw, stride: sw, pad: pw, size: w)
                            var best = columns[x0]
                            for i in x0 + 1..<x1 where columns[i] > best { best = columns[i] }
                            dst[oy * ow + ox] = best
                        }
                        var ox = 0
                        let start = (pw + 1) / 2
                        if sw == 2 && ow - n >= start && kw <= n {
                            // A vector of windows at a time past those with left padding: the even
                            // elements of two vectors from each tap, the right padding read as
                            // -infinity past the row (2·OW - PW + KW - 1 <= W + PW + 1 <= W + 2N);
                            // the last vector ends at the row's end, overlapping the one before.
                            // The same comparisons in the same order as a single window's.
                            while ox < start { window(ox); ox += 1 }
                            while ox < ow {
                                let o = min(ox, ow - n), first = columns + 2 * o - pw
                                var best = evenElements(first)
                                for i in 1..<kw {
                                    let v = evenElements(first + i)
                                    best.replace(with: v, where: v .> best)
                                }
                                store(best, dst + oy * ow + o)
                                ox = o + n
                            }
                        }
                        while ox < ow { window(ox); ox += 1 }
                    }
                }
            }
            return y
        }
        parallelChunks(planes, chunk: chunk) { p0, p1 in
            for plane in p0..<p1 {
                let src = xp + plane * h * w
                if isTwoByTwo {
                    maxPool2x2Plane(src, h: h, w: w, yp + plane * oh * ow, oh: oh, ow: ow,
                                    argmax: training ? amp + plane * oh * ow : nil, mask: mask)
                    continue
                }
                for oy in 0..<oh {
                    // The window's rows and columns inside the input (never empty: pad <= kernel / 2).
                    let (y0, y1) = pooledWindow(oy, kernel: kh, stride: sh, pad: ph, size: h)
                    for ox in 0..<ow {
                        let (x0, x1) = pooledWindow(ox, kernel: kw, stride: sw, pad: pw, size: w)
                        var bestIndex = y0 * w + x0
                        var best = src[bestIndex]
                        for iy in y0..<y1 {
                            for ix in x0..<x1 where src[iy * w + ix] > best {
                                best = src[iy * w + ix]
                                bestIndex = iy * w + ix
                            }
                        }
                        let o = (plane * oh + oy) * ow + ox
                        yp[o] = best
                        amp[o] = mask && !(best > 0) ? -1 : Int32(bestIndex)
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard needInputGradient else { return nil }
        let hw = inputShape.h * inputShape.w, ohw = outputShape.h * outputShape.w
        let planes = batch * inputShape.c
        let dx = buffers.inputGradient(planes * hw, dy: dy)
        let dxp = dx.pointer, dyp = dy.pointer
        let w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let direct = isTwoByTwo && inputShape.h == 2 * oh && w == 2 * ow
        let amp = argmax.pointer
        parallelChunks(planes, chunk: 64) { p0, p1 in
            for plane in p0..<p1 {
                let d = dxp + plane * hw
                if direct {
                    maxUnpool2x2Plane(dyp, amp, plane * ohw, outputs: planes * ohw, h: inputShape.h, w: w, ow: ow, d)
                    continue
                }
                d.update(repeating: 0, count: hw)
                for o in 0..<ohw {
                    let i = Int(amp[plane * ohw + o])
                    if i >= 0 { d[i] += dyp[plane * ohw + o] }
                }
            }
        }
        return dx
    }
}

/// Average pooling over KH×KW windows with PH×PW padding: counted as zeros (each window's sum
/// divided by KH·KW, PyTorch's default), or with `countPad` false not counted (a window's sum
/// divided by the inputs inside it). Global pooling averages each whole channel.
public final class AvgPool2D: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let kh: Int, kw: Int, sh: Int, sw: Int, ph: Int, pw: Int
    let countPad: Bool
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)

    var backwardReads: BackwardReads { .nothing }

    init(spec: LayerSpec, input: Shape, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int) = (0, 0), countPad: Bool = true) {
        self.spec = spec
        inputShape = input
        (kh, kw) = kernel
        (sh, sw) = stride
        (ph, pw) = padding
        self.countPad = countPad
        outputShape = Shape(c: input.c, h: pooledSize(input.h, kernel: kh, stride: sh, pad: ph, ceil: false),
                            w: pooledSize(input.w, kernel: kw, stride: sw, pad: pw, ceil: false))
    }

    public var flops: Int { outputShape.count * kh * kw }

    /// The factor of a window's sum, forward and backward: `whole` (1 / KH·KW) with the padding
    /// counted, else 1 over the inputs inside the window (rows y0..<y1, columns x0..<x1).
    @inline(__always)
    private static func windowScale(_ rows: (Int, Int), _ columns: (Int, Int), whole: Float, countPad: Bool) -> Float {
        countPad ? whole : 1 / Float((rows.1 - rows.0) * (columns.1 - columns.0))
    }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let h = inputShape.h, w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let planes = batch * inputShape.c
        let y = buffers.output(planes * oh * ow, input: x, training: training)
        let scale = 1 / Float(kh * kw)
        let (kh, kw, sh, sw, ph, pw, countPad) = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.countPad)
        let xp = x.pointer, yp = y.pointer
        if oh == 1 && ow == 1 && kh == h && kw == w && ph == 0 && pw == 0 {
            // Global pooling: each plane's sum in vector lanes (one scalar chain was 4 cycles an element).
            parallelChunks(planes, chunk: max(1, 16384 / (h * w))) { p0, p1 in
                for plane in p0..<p1 { yp[plane] = sum(xp + plane * h * w, h * w) * scale }
            }
            return y
        }
        parallelChunks(planes, chunk: 64) { p0, p1 in
            for plane in p0..<p1 {
                let src = xp + plane * h * w
                for oy in 0..<oh {
                    // The window's rows and columns inside the input (the padding adds zeros).
                    let (y0, y1) = pooledWindow(oy, kernel: kh, stride: sh, pad: ph, size: h)
                    for ox in 0..<ow {
                        let (x0, x1) = pooledWindow(ox, kernel: kw, stride: sw, pad: pw, size: w)
                        var s: Float = 0
                        for iy in y0..<y1 {
                            let row = src + iy * w
                            for ix in x0..<x1 { s += row[ix] }
                        }
                        yp[(plane * oh + oy) * ow + ox] = s * Self.windowScale((y0, y1), (x0, x1), whole: scale, countPad: countPad)
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard needInputGradient else { return nil }
        let h = inputShape.h, w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let planes = batch * inputShape.c
        let dx = buffers.inputGradient(planes * h * w, dy: dy)
        let scale = 1 / Float(kh * kw)
        let (kh, kw, sh, sw, ph, pw, countPad) = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.countPad)
        let dxp = dx.pointer, dyp = dy.pointer
        parallelChunks(planes, chunk: 64) { p0, p1 in
            for plane in p0..<p1 {
                let d = dxp + plane * h * w
                d.update(repeating: 0, count: h * w)
                for oy in 0..<oh {
                    let (y0, y1) = pooledWindow(oy, kernel: kh, stride: sh, pad: ph, size: h)
                    for ox in 0..<ow {
                        let (x0, x1) = pooledWindow(ox, kernel: kw, stride: sw, pad: pw, size: w)
                        let g = dyp[(plane * oh + oy) * ow + ox] * Self.windowScale((y0, y1), (x0, x1), whole: scale, countPad: countPad)
                        for iy in y0..<y1 {
                            let row = d + iy * w
                            for ix in x0..<x1 { row[ix] += g }
                        }
                    }
                }
            }
        }
        return dx
    }
}

/// Flatten: (C, H, W) -> (C·H·W). The data is already in that order, so nothing moves.
public final class Flatten: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape

    let buffers = LayerBuffers()  // unused: it passes its input through
    var backwardReads: BackwardReads { .passingThrough }

    init(spec: LayerSpec, input: Shape) {
        self.spec = spec
        inputShape = input
        outputShape = Shape(features: input.count)
    }

    public var flops: Int { 0 }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer { x }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        needInputGradient ? dy : nil
    }
}

/// 2×2, stride-2 max pooling of one plane (H × W) into OH × OW, with each maximum's index in the
/// plane (-1 for a maximum that is not positive when `mask`) unless `argmax` is nil. Branch-free:
/// the larger of each row's pair, then of the two rows, each keeping the earlier on a tie, the
/// result of the sequential scan of the general loop. A vector of outputs at a time where its
/// reads (two rows of 2·N + 1 inputs) stay in the plane and its writes in the plane's outputs; lanes
/// past a row's end are rewritten by the next row.
func maxPool2x2Plane(_ src: UnsafePointer<Float>, h: Int, w: Int, _ y: UnsafeMutablePointer<Float>, oh: Int, ow: Int,
                     argmax: UnsafeMutablePointer<Int32>?, mask: Bool) {
    typealias I = V.MaskStorage
    let n = V.scalarCount
    @inline(__always) func pairs(_ p: UnsafePointer<Float>) -> (V, V) { (evenElements(p), evenElements(p + 1)) }
    var steps = I()
    for l in 0..<n { steps[l] = I.Scalar(truncatingIfNeeded: 2 * l) }
    for oy in 0..<oh {
        let r0 = 2 * oy * w, r1 = r0 + w
        var ox = 0
        while ox < ow && r1 + 2 * ox + 2 * n + 1 <= h * w && oy * ow + ox + n <= oh * ow {
            let (a, b) = pairs(src + r0 + 2 * ox), (c, d) = pairs(src + r1 + 2 * ox)
            let first = argmax == nil ? I() : steps &+ I.Scalar(truncatingIfNeeded: r0 + 2 * ox)
            let (best, index) = windowMax(a, b, c, d, first: first, w: w, indices: argmax != nil, mask: mask)
            UnsafeMutableRawPointer(y + oy * ow + ox).storeBytes(of: best, as: V.self)
            if let argmax { UnsafeMutableRawPointer(argmax + oy * ow + ox).storeBytes(of: index, as: I.self) }
            ox += n
        }
        for ox in min(ox, ow)..<ow {
            let a = src[r0 + 2 * ox], b = src[r0 + 2 * ox + 1]
            let c = src[r1 + 2 * ox], d = src[r1 + 2 * ox + 1]
            let top = b > a ? b : a, bottom = d > c ? d : c
            let topIndex = b > a ? r0 + 2 * ox + 1 : r0 + 2 * ox
            let bottomIndex = d > c ? r1 + 2 * ox + 1 : r1 + 2 * ox
            let best = bottom > top ? bottom : top
            y[oy * ow + ox] = best
            argmax?[oy * ow + ox] = mask && !(best > 0) ? -1 : Int32(truncatingIfNeeded: bottom > top ? bottomIndex : topIndex)
        }
    }
}

/// The maxima of N 2×2 windows, lane by lane: a, b the top row's pair, c, d the bottom row's; the
/// same comparisons as the scalar loop. With `indices`, also where each maximum is, from `first`
/// (the lanes' indices of a: b is at +1, c at +w, d at +w+1), -1 where `mask` and it is not positive.
@inline(__always)
func windowMax(_ a: V, _ b: V, _ c: V, _ d: V, first: V.MaskStorage, w: Int, indices: Bool, mask: Bool) -> (V, V.MaskStorage) {
    typealias I = V.MaskStorage
    let topRight = b .> a, bottomRight = d .> c
    let top = a.replacing(with: b, where: topRight), bottom = c.replacing(with: d, where: bottomRight)
    let lower = bottom .> top
    let best = top.replacing(with: bottom, where: lower)
    guard indices else { return (best, I()) }
    let topIndex = first.replacing(with: first &+ 1, where: topRight)
    let bottomIndex = (first &+ I.Scalar(truncatingIfNeeded: w)).replacing(with: first &+ I.Scalar(truncatingIfNeeded: w + 1), where: bottomRight)
    var index = topIndex.replacing(with: bottomIndex, where: lower)
    if mask { index.replace(with: -1, where: .!(best .> 0)) }
    return (best, index)
}

/// The backward of 2×2, stride-2 max pooling when the windows tile the plane (H = 2·OH, W = 2·OW):
/// each input (y, x) gets its window's gradient dy[first + (y/2)·OW + x/2] where the window's
/// maximum is (its index in the plane), 0 elsewhere, so every input is written once. Row by row, 2N
/// inputs at a time from N outputs whose lanes are doubled; a last vector may spill into the next
/// rows, written after it, as long as its reads stay among the `outputs` and its writes in the plane.
func maxUnpool2x2Plane(_ dy: UnsafePointer<Float>, _ argmax: UnsafePointer<Int32>, _ first: Int, outputs: Int,
                       h: Int, w: Int, ow: Int, _ dx: UnsafeMutablePointer<Float>) {
    typealias I = V.MaskStorage
    let n = V.scalarCount
    var steps = I()
    for l in 0..<n { steps[l] = I.Scalar(truncatingIfNeeded: l) }
    for y in 0..<h {
        let out = first + (y / 2) * ow, row = y * w
        var x = 0
        while x < w && out + x / 2 + n <= outputs && row + x + 2 * n <= h * w {
            let g = UnsafeRawPointer(dy + out + x / 2).loadUnaligned(as: V.self)
            let index = UnsafeRawPointer(argmax + out + x / 2).loadUnaligned(as: I.self)
            let (g0, g1) = zipLanes(g, g), (i0, i1) = zipLanes(index, index)
            let here = steps &+ I.Scalar(truncatingIfNeeded: row + x)
            UnsafeMutableRawPointer(dx + row + x).storeBytes(of: V().replacing(with: g0, where: i0 .== here), as: V.self)
            UnsafeMutableRawPointer(dx + row + x + n).storeBytes(of: V().replacing(with: g1, where: i1 .== here &+ I.Scalar(n)), as: V.self)
            x += 2 * n
        }
        for x in min(x, w)..<w {
            dx[row + x] = Int(argmax[out + x / 2]) == row + x ? dy[out + x / 2] : 0
        }
    }
}
