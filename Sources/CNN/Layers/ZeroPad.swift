/// Zeros around each plane (PyTorch's ZeroPad2d, ONNX's Pad in constant mode with 0): any amount
/// on each side, so the asymmetric padding of a TensorFlow-style "same" convolution with stride 2
/// (one more row and column at the end) can stand before a convolution without padding.
/// Forward copies each input row between its zeros; backward crops the gradient back.
public final class ZeroPad2D: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let padding: Padding
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    var backwardReads: BackwardReads { .nothing }

    init(spec: LayerSpec, input: Shape, padding: Padding) {
        self.spec = spec
        inputShape = input
        self.padding = padding
        outputShape = Shape(c: input.c, h: input.h + padding.top + padding.bottom, w: input.w + padding.left + padding.right)
    }

    public var flops: Int { 0 }

    /// Planes per task: about 32 K floats of output each.
    private var planesPerTask: Int { max(1, (1 << 15) / max(1, outputShape.h * outputShape.w)) }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let out = buffers.output(batch * outputShape.count, input: x, training: training)
        let (h, w, oh, ow) = (inputShape.h, inputShape.w, outputShape.h, outputShape.w)
        let p = padding, src = x.pointer, dst = out.pointer
        parallelChunks(batch * inputShape.c, chunk: planesPerTask) { lo, hi in
            for plane in lo..<hi {
                let s = src + plane * h * w, d = dst + plane * oh * ow
                // The top rows and the first row's left zeros, then each row's right zeros with
                // the next row's left ones, then the last row's right zeros and the bottom rows.
                d.update(repeating: 0, count: p.top * ow + p.left)
                for y in 0..<h {
                    let row = d + (p.top + y) * ow + p.left
                    row.update(from: s + y * w, count: w)
                    (row + w).update(repeating: 0, count: y + 1 < h ? p.right + p.left : p.right + p.bottom * ow)
                }
            }
        }
        return out
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard needInputGradient else { return nil }
        let dx = buffers.inputGradient(batch * inputShape.count, dy: dy)
        let (h, w, oh, ow) = (inputShape.h, inputShape.w, outputShape.h, outputShape.w)
        let p = padding, src = dy.pointer, dst = dx.pointer
        parallelChunks(batch * inputShape.c, chunk: planesPerTask) { lo, hi in
            for plane in lo..<hi {
                let s = src + plane * oh * ow + p.top * ow + p.left, d = dst + plane * h * w
                for y in 0..<h { (d + y * w).update(from: s + y * ow, count: w) }
            }
        }
        return dx
    }
}
