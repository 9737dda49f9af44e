// B = batch, C = channels, H×W input, OH×OW output, KH×KW window, SH×SW stride.

/// Max pooling over KH×KW windows (no padding; the output size rounds down, as in PyTorch).
public final class MaxPool2D: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let kh: Int, kw: Int, sh: Int, sw: Int
    private var output = Workspace()
    private var inputGrad = Workspace()
    // Kept for backward: the input index of every output's maximum, (B, C, OH, OW).
    private var argmax: [Int32] = []
    /// Set by the model when a ReLU comes before: backward also applies the ReLU's mask (a
    /// maximum that is not positive passes no gradient: forward records its index as -1), and the
    /// ReLU passes its gradient through.
    var masksNonPositive = false

    init(spec: LayerSpec, input: Shape, kernel: (Int, Int), stride: (Int, Int)) {
        self.spec = spec
        inputShape = input
        (kh, kw) = kernel
        (sh, sw) = stride
        outputShape = Shape(c: input.c, h: (input.h - kh) / sh + 1, w: (input.w - kw) / sw + 1)
    }

    public var flops: Int { outputShape.count * kh * kw }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let h = inputShape.h, w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let planes = batch * inputShape.c
        let y = output.reserve(planes * oh * ow)
        let mask = masksNonPositive
        if argmax.count < planes * oh * ow { argmax = [Int32](repeating: 0, count: planes * oh * ow) }
        let (kh, kw, sh, sw) = (self.kh, self.kw, self.sh, self.sw)
        let xp = x.pointer, yp = y.pointer
        argmax.withUnsafeMutableBufferPointer { am in
            let amp = am.baseAddress!
            parallelChunks(planes, chunk: min(64, max(1, planes / 4))) { p0, p1 in
                for plane in p0..<p1 {
                    let src = xp + plane * h * w
                    if kh == 2 && kw == 2 && sh == 2 && sw == 2 {
                        // The common 2×2, stride 2 window, without the general loops; the same
                        // comparisons in the same order as below.
                        for oy in 0..<oh {
                            let r0 = 2 * oy * w, r1 = r0 + w
                            // Branch-free: the larger of each row's pair, then of the two rows, each
                            // keeping the earlier on a tie (what the sequential scan keeps). A vector
                            // of outputs at a time where its reads (two rows of 2·N inputs) stay in the
                            // plane and its writes in the plane's outputs; lanes past the row's end
                            // are rewritten by the next row.
                            var ox = 0
                            let out = (plane * oh + oy) * ow
                            while ox < ow && r1 + 2 * ox + 2 * V.scalarCount <= h * w
                                    && oy * ow + ox + V.scalarCount <= oh * ow {
                                maxPool2x2Vector(src + r0 + 2 * ox, w, yp + out + ox, training ? amp + out + ox : nil,
                                                 firstIndex: r0 + 2 * ox, mask: mask)
                                ox += V.scalarCount
                            }
                            for ox in min(ox, ow)..<ow {
                                let a = src[r0 + 2 * ox], b = src[r0 + 2 * ox + 1]
                                let c = src[r1 + 2 * ox], d = src[r1 + 2 * ox + 1]
                                let top = b > a ? b : a, bottom = d > c ? d : c
                                let topIndex = b > a ? r0 + 2 * ox + 1 : r0 + 2 * ox
                                let bottomIndex = d > c ? r1 + 2 * ox + 1 : r1 + 2 * ox
                                let o = (plane * oh + oy) * ow + ox
                                let best = bottom > top ? bottom : top
                                yp[o] = best
                                if training { amp[o] =  mask && !(best > 0) ? -1 : Int32(truncatingIfNeeded: bottom > top ? bottomIndex : topIndex) }
                            }
                        }
                        continue
                    }
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            var bestIndex = (oy * sh) * w + ox * sw
                            var best = src[bestIndex]
                            for ki in 0..<kh {
                                let row = (oy * sh + ki) * w + ox * sw
                                for kj in 0..<kw where src[row + kj] > best {
                                    best = src[row + kj]
                                    bestIndex = row + kj
                                }
                            }
                            let o = (plane * oh + oy) * ow + ox
                            yp[o] = best
                            amp[o] = mask && !(best > 0) ? -1 : Int32(bestIndex)
                        }
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
        let dx = inputGrad.reserve(planes * hw)
        let dxp = dx.pointer, dyp = dy.pointer
        let w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let direct = kh == 2 && kw == 2 && sh == 2 && sw == 2 && inputShape.h == 2 * oh && w == 2 * ow
        argmax.withUnsafeBufferPointer { am in
            let amp = am.baseAddress!
            parallelChunks(planes, chunk: 64) { p0, p1 in
                for plane in p0..<p1 {
                    let d = dxp + plane * hw
                    if direct {
                        // 2×2 windows tile the plane: each input is written once, no clearing.
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                let o = plane * ohw + oy * ow + ox
                                let i = Int(amp[o]), g = dyp[o]
                                let r0 = 2 * oy * w + 2 * ox, r1 = r0 + w
                                d[r0] = i == r0 ? g : 0
                                d[r0 + 1] = i == r0 + 1 ? g : 0
                                d[r1] = i == r1 ? g : 0
                                d[r1 + 1] = i == r1 + 1 ? g : 0
                            }
                        }
                        continue
                    }
                    d.update(repeating: 0, count: hw)
                    for o in 0..<ohw {
                        let i = Int(amp[plane * ohw + o])
                        if i >= 0 { d[i] += dyp[plane * ohw + o] }
                    }
                }
            }
        }
        return dx
    }
}

/// Average pooling over KH×KW windows (no padding). `global` averages each whole channel.
public final class AvgPool2D: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let kh: Int, kw: Int, sh: Int, sw: Int
    private var output = Workspace()
    private var inputGrad = Workspace()

    init(spec: LayerSpec, input: Shape, kernel: (Int, Int), stride: (Int, Int)) {
        self.spec = spec
        inputShape = input
        (kh, kw) = kernel
        (sh, sw) = stride
        outputShape = Shape(c: input.c, h: (input.h - kh) / sh + 1, w: (input.w - kw) / sw + 1)
    }

    public var flops: Int { outputShape.count * kh * kw }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let h = inputShape.h, w = inputShape.w, oh = outputShape.h, ow = outputShape.w
        let planes = batch * inputShape.c
        let y = output.reserve(planes * oh * ow)
        let scale = 1 / Float(kh * kw)
        let (kh, kw, sh, sw) = (self.kh, self.kw, self.sh, self.sw)
        let xp = x.pointer, yp = y.pointer
        parallelChunks(planes, chunk: 64) { p0, p1 in
            for plane in p0..<p1 {
                let src = xp + plane * h * w
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var s: Float = 0
                        for ki in 0..<kh {
                            let row = src + (oy * sh + ki) * w + ox * sw
                            for kj in 0..<kw { s += row[kj] }
                        }
                        yp[(plane * oh + oy) * ow + ox] = s * scale
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
        let dx = inputGrad.reserve(planes * h * w)
        let scale = 1 / Float(kh * kw)
        let (kh, kw, sh, sw) = (self.kh, self.kw, self.sh, self.sw)
        let dxp = dx.pointer, dyp = dy.pointer
        parallelChunks(planes, chunk: 64) { p0, p1 in
            for plane in p0..<p1 {
                let d = dxp + plane * h * w
                d.update(repeating: 0, count: h * w)
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        let g = dyp[(plane * oh + oy) * ow + ox] * scale
                        for ki in 0..<kh {
                            let row = d + (oy * sh + ki) * w + ox * sw
                            for kj in 0..<kw { row[kj] += g }
                        }
                    }
                }
            }
        }
        return dx
    }
}

/// Flatten: (C, H, W) -> (C·H·W). The data is already in that order, so nothing moves.
public final class Flatten: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape

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

/// N = V.scalarCount outputs of 2×2 max pooling from rows `x` and `x + w`: the same comparisons
/// as the scalar loop, lane by lane; `firstIndex` is the index of x[0] in its plane.
@inline(__always)
private func maxPool2x2Vector(_ x: UnsafePointer<Float>, _ w: Int, _ y: UnsafeMutablePointer<Float>,
                              _ argmax: UnsafeMutablePointer<Int32>?, firstIndex: Int, mask: Bool) {
    typealias I = V.MaskStorage
    let n = V.scalarCount
    func pairs(_ p: UnsafePointer<Float>) -> (V, V) {
        unzip(UnsafeRawPointer(p).loadUnaligned(as: V.self), UnsafeRawPointer(p + n).loadUnaligned(as: V.self))
    }
    let (a, b) = pairs(x), (c, d) = pairs(x + w)
    let topRight = b .> a, bottomRight = d .> c
    let top = a.replacing(with: b, where: topRight), bottom = c.replacing(with: d, where: bottomRight)
    let lower = bottom .> top
    let best = top.replacing(with: bottom, where: lower)
    UnsafeMutableRawPointer(y).storeBytes(of: best, as: V.self)
    guard let argmax else { return }   // inference keeps no indices
    var lanes = I()
    for l in 0..<n { lanes[l] = I.Scalar(truncatingIfNeeded: firstIndex + 2 * l) }
    let topIndex = lanes.replacing(with: lanes &+ 1, where: topRight)
    let bottomIndex = (lanes &+ I.Scalar(truncatingIfNeeded: w)).replacing(with: lanes &+ I.Scalar(truncatingIfNeeded: w + 1), where: bottomRight)
    var index = topIndex.replacing(with: bottomIndex, where: lower)
    if mask { index.replace(with: -1, where: .!(best .> 0)) }
    UnsafeMutableRawPointer(argmax).storeBytes(of: index, as: I.self)
}
