// B = batch, C = input channels, OC = output channels, H×W input, OH×OW output, KH×KW kernel.
// CKK = C·KH·KW (rows of the im2col matrix), P = OH·OW (its columns).

/// 2-D convolution (cross-correlation, as in PyTorch) with stride, zero padding and optional bias.
public final class Conv2D: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (OC, C, KH, KW)
    public let bias: Parameter?    // (OC)
    let geometry: ConvGeometry

    // Kept by forward for backward: the im2col matrix of every sample, (B, CKK, P).
    private var col = Workspace()
    private var output = Workspace()     // (B, OC, OH, OW)
    private var inputGrad = Workspace()  // (B, C, H, W)
    private var dwT = Workspace()        // (CKK, OC): the weight gradient of one step, transposed

    init(spec: LayerSpec, input: Shape, outChannels: Int, kernel: (Int, Int), stride: (Int, Int),
         padding: (Int, Int), bias hasBias: Bool) {
        self.spec = spec
        inputShape = input
        geometry = ConvGeometry(c: input.c, h: input.h, w: input.w, kh: kernel.0, kw: kernel.1,
                                sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1)
        outputShape = Shape(c: outChannels, h: geometry.oh, w: geometry.ow)
        weight = Parameter(name: "weight", shape: [outChannels, input.c, kernel.0, kernel.1], trainable: true)
        bias = hasBias ? Parameter(name: "bias", shape: [outChannels], trainable: true) : nil
    }

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }
    public var flops: Int { 2 * outputShape.count * geometry.colRows }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols
        let inCount = inputShape.count, outCount = outputShape.count
        let col = self.col.reserve(batch * ckk * p).pointer
        let y = output.reserve(batch * outCount)
        let w = weight.value.pointer, b = bias?.value.pointer
        let xp = x.pointer, yp = y.pointer
        // One task per sample: each output element is written by one task.
        ThreadPool.shared.parallelFor(batch) { n in
            let coln = col + n * ckk * p, yn = yp + n * outCount
            im2col(xp + n * inCount, g, coln)
            for o in 0..<oc { (yn + o * p).update(repeating: b?[o] ?? 0, count: p) }
            gemm(m: oc, n: p, k: ckk, a: w, aRow: ckk, aCol: 1, b: coln, ldb: p, c: yn, ldc: p,
                 accumulate: true)
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols
        let outCount = outputShape.count
        let col = self.col.buffer.pointer, dyp = dy.pointer
        if let db = bias?.grad?.pointer {
            parallelChunks(oc, chunk: 8) { o0, o1 in
                for o in o0..<o1 {
                    var s: Float = 0
                    for n in 0..<batch {
                        let row = dyp + n * outCount + o * p
                        for i in 0..<p { s += row[i] }
                    }
                    db[o] += s
                }
            }
        }
        // dWᵀ (CKK, OC) = Σ_n col_n (CKK, P) · dy_nᵀ (P, OC), with dy read transposed while packing
        // (P × OC values gathered per image, 4-5× fewer than gathering the im2col matrix), then
        // added into dW once. Two fixed halves of the CKK rows are split over tasks, and each sums
        // the samples in order, so the result does not depend on the thread count.
        if let dw = weight.grad?.pointer {
            let dwt = dwT.reserve(ckk * oc).pointer
            dwt.update(repeating: 0, count: ckk * oc)
            let half = ((ckk + 1) / 2 + 7) / 8 * 8
            ThreadPool.shared.parallelFor(ckk > half ? 2 : 1) { t in
                let r0 = t * half, r1 = min(ckk, r0 + half)
                for n in 0..<batch {
                    gemmTile(i0: r0, i1: r1, j0: 0, j1: oc, k: p, a: col + n * ckk * p, aRow: p, aCol: 1,
                             b: dyp + n * outCount, ldb: 1, bCol: p, c: dwt, ldc: oc, accumulate: true)
                }
            }
            for o in 0..<oc {
                for j in 0..<ckk { dw[o * ckk + j] += dwt[j * oc + o] }
            }
        }
        guard needInputGradient else { return nil }
        // dx_n = col2im(Wᵀ (CKK, OC) · dy_n (OC, P)); the im2col matrix is no longer needed, so
        // its memory holds dcol.
        let inCount = inputShape.count
        let dx = inputGrad.reserve(batch * inCount)
        let w = weight.value.pointer, dxp = dx.pointer
        ThreadPool.shared.parallelFor(batch) { n in
            let dcol = col + n * ckk * p
            gemm(m: ckk, n: p, k: oc, a: w, aRow: 1, aCol: ckk, b: dyp + n * outCount, ldb: p,
                 c: dcol, ldc: p, accumulate: false)
            let dxn = dxp + n * inCount
            dxn.update(repeating: 0, count: inCount)
            col2im(dcol, g, dxn)
        }
        return dx
    }
}
