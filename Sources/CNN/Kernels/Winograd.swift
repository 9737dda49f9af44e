// Winograd's minimal filtering F(2×2, 3×3) for 3×3, stride-1 convolutions.
//
// Each 2×2 block of outputs ("tile") is computed from the 4×4 block of zero-bordered input
// under it as Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A: the element-wise product over the 16
// positions ξ of the transformed tile replaces the 3×3 window, so per ξ the sum over channels is a
// matrix product M_ξ (OC, T) = U_ξ (OC, C) · V_ξ (C, T) over the sample's T tiles. That is 16·C
// multiply-adds per output channel and tile where im2col spends 36·C: 2.25× fewer. The weights'
// transform U is computed once per weight version. Forward takes this path in training and in
// inference, whatever the batch (training keeps each sample's zero-bordered input, from which the
// weight gradient is computed by the same transform, below); the input gradient, a 3×3 stride-1
// convolution of dy with the flipped kernels, takes it too, without col2im.
//
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//   Aᵀ = [1 1 1 0; 0 1 -1 -1]

extension ConvGeometry {
    /// F(2×2, 3×3) applies: a 3×3 kernel at stride 1 and at least 8 input channels (with fewer,
    /// the products per position ξ are too short to pay). An odd output size is covered by one
    /// more row or column of tiles whose outputs past the plane are not written (a 7×7 plane: 16
    /// tiles, 256 products per channel pair where im2col takes 441; see `paddedH`). On odd planes
    /// smaller than 7×7 (a 5×5 plane: 9 tiles, 144 products where im2col takes 225; a 3×3 plane:
    /// 64 and 81) only while the transformed weights, streamed again for each image, stay small
    /// (C ≤ 128: 1 MB for 128 output channels). ResNet-18's 512-channel 7×7 layers (16 MB of them)
    /// took 1.32-1.36 ms a layer at batch 1 against im2col's 2.96-3.08, and 42-58 ms at batch 32
    /// against 70-80 (`cnn summary --time`, alternating, 2 AVX2 cores).
    var winograd: Bool {
        kh == 3 && kw == 3 && sh == 1 && sw == 1 && c >= 8 && (oh % 2 == 0 && ow % 2 == 0 || c <= 128 || oh >= 7 && ow >= 7)
    }
    var tilesH: Int { (oh + 1) / 2 }
    var tilesW: Int { (ow + 1) / 2 }
    var tiles: Int { tilesH * tilesW }
    /// Columns of the transformed input and of the products: the tiles rounded up to whole
    /// panels of the GEMM, which reads a panel's NR columns of V in place; the extra columns are
    /// never read back.
    var tileColumns: Int { (tiles + gemmNR - 1) / gemmNR * gemmNR }
    /// The columns the products compute: the tiles in whole vectors (a partial vector would be
    /// stored element by element), so that a last panel at most half full (16 tiles of a 7×7 or
    /// 8×8 plane in 32 columns) takes the GEMM's one-vector block.
    var winogradProductColumns: Int { (tiles + V.scalarCount - 1) / V.scalarCount * V.scalarCount }
    /// Inference on small planes transforms the input as it is, without a zero-bordered copy
    /// (`winogradInputSmall`): a bordered row fits in a vector and a row of tiles in less than half
    /// of one, and the rows of tiles, half a vector each, fit in the columns.
    var winogradSmallInput: Bool { 2 * (tilesW + 1) <= V.scalarCount && tilesH * V.scalarCount / 2 <= tileColumns }
    /// Two samples share each product where one sample's tiles fill only the first vector of the
    /// GEMM's panel (an 8×8 or 7×7 plane's 16 tiles with AVX-512): the block then multiplies both
    /// vectors of the panel, where it would read A's 8 rows for the multiply-adds of one (8×8
    /// planes of 64 channels took 1.6× ONNX Runtime's time at batch 32). Each output is computed
    /// by the same operations as alone: the same bits.
    var winogradPairsSamples: Bool { winogradProductColumns == V.scalarCount }
    /// The rows of V and M when samples share the products: the first sample's tiles from column 0,
    /// the second's from column N, and room for the whole vectors the second's last row of tiles
    /// writes past its tiles (up to N floats; the first's spill into the second's columns is
    /// overwritten by them).
    var pairedTileColumns: Int { 3 * V.scalarCount }
    /// Floats of one task's working memory when samples share the products.
    func winogradPairedSlotCount(outChannels oc: Int) -> Int {
        paddedCount + 16 * winogradVStride(columns: pairedTileColumns) + 16 * winogradMStride(outChannels: oc, columns: pairedTileColumns)
    }
    /// Floats between two of the 16 transformed-input matrices (C, tileColumns), with a vector of
    /// slack, since a row of tiles is stored as whole vectors.
    var winogradVStride: Int { winogradVStride(columns: tileColumns) }
    /// The same with rows of V `t` floats apart (`pairedTileColumns`).
    func winogradVStride(columns t: Int) -> Int { c * t + V.scalarCount }
    /// Floats between two of the 16 products (OC × tileColumns, or rows `columns` floats apart), a
    /// vector more than their size: the output transform reads the 16 at once, and at a
    /// power-of-two distance they would fall on the same L1 cache sets.
    func winogradMStride(outChannels oc: Int, columns: Int? = nil) -> Int { oc * (columns ?? tileColumns) + V.scalarCount }
    /// The input gradient of a 3×3 stride-1 convolution is the convolution of dy (OC channels,
    /// padded by 2 - PH, 2 - PW) with the flipped kernels: its geometry, when Winograd applies to it.
    func inputGradientWinograd(outChannels oc: Int) -> ConvGeometry? {
        guard kh == 3 && kw == 3 && sh == 1 && sw == 1 && ph <= 2 && pw <= 2 else { return nil }
        let back = ConvGeometry(c: oc, h: oh, w: ow, kh: 3, kw: 3, sh: 1, sw: 1, ph: 2 - ph, pw: 2 - pw)
        return back.winograd ? back : nil
    }
    /// Floats of one task's working memory: the zero-bordered input, the 16 transformed-input
    /// matrices, the 16 products (OC × tileColumns, with a vector of slack), and the pooled
    /// outputs of the products by tiles (tiles × OC, with a vector of slack).
    func winogradSlotCount(outChannels oc: Int) -> Int {
        paddedCount + 16 * winogradVStride + 16 * winogradMStride(outChannels: oc) + tiles * oc + V.scalarCount
    }
    /// One image on two threads: the row of tiles where they are cut in two, each task
    /// transforming, multiplying (all output channels) and transforming back its own rows; nil
    /// where the output channels are cut instead, each task transforming the whole input (20 % of
    /// ResNet-20's batch-1 time went to that twice). Only where rows of tiles are whole vectors of V
    /// and of the output rows (OW a multiple of 2·N, `winogradInput`'s and `winogradOutput`'s
    /// row-by-row paths): no vector spills into the other task's rows. At a whole panel of the
    /// products where half the rows, or one more, give one.
    var winogradTileRowCut: Int? {
        let n = V.scalarCount
        guard ow % (2 * n) == 0 && 2 * tilesW > n && tilesH >= 2 else { return nil }
        let half = tilesH / 2
        return half * tilesW % gemmNR == 0 || half + 1 >= tilesH ? half : half + 1
    }
}

/// How the transformed weights are laid out.
enum WinogradWeightLayout {
    /// U[ξ][o][c] = (G g_{o,c} Gᵀ)[ξ]: the left operand of the products M_ξ = U_ξ V_ξ.
    case forward
    /// The weights of the convolution that computes the input gradient from dy: kernels flipped
    /// and the channel roles swapped, U[ξ][c][o] = (G flip(g_{o,c}) Gᵀ)[ξ].
    case inputGradient
    /// U_ξᵀ (C, OC) as the GEMM's packed panels, the right operand of the products by tiles
    /// M_ξᵀ = V_ξᵀ U_ξᵀ: [ξ][o / NR][c][o % NR], the last panel zero-padded.
    case panels
}

/// The transformed weights for weights (OC, C, 3, 3), in `layout` (see there; `panels` needs
/// 16 · ⌈OC / NR⌉ · NR · C floats).
func winogradWeights(_ w: UnsafePointer<Float>, oc: Int, c: Int, layout: WinogradWeightLayout = .forward,
                     into u: UnsafeMutablePointer<Float>) {
    @inline(__always) func gRows(_ a: Float, _ b: Float, _ c: Float) -> (Float, Float, Float, Float) {
        (a, 0.5 * (a + b + c), 0.5 * (a - b + c), c)
    }
    let nr = gemmNR, panels = (oc + nr - 1) / nr
    if layout == .panels { u.update(repeating: 0, count: 16 * panels * nr * c) }
    for o in 0..<oc {
        for ch in 0..<c {
            let k = w + (o * c + ch) * 9
            @inline(__always) func g(_ i: Int, _ j: Int) -> Float { layout == .inputGradient ? k[(2 - i) * 3 + 2 - j] : k[i * 3 + j] }
            // t = G g: column j of g becomes column j of t (4 × 3).
            let c0 = gRows(g(0, 0), g(1, 0), g(2, 0)), c1 = gRows(g(0, 1), g(1, 1), g(2, 1)), c2 = gRows(g(0, 2), g(1, 2), g(2, 2))
            // Row i of t, times Gᵀ.
            let rows = (gRows(c0.0, c1.0, c2.0), gRows(c0.1, c1.1, c2.1), gRows(c0.2, c1.2, c2.2), gRows(c0.3, c1.3, c2.3))
            withUnsafeBytes(of: rows) { raw in
                let values = raw.bindMemory(to: Float.self)
                for xi in 0..<16 {
                    switch layout {
                    case .forward: u[(xi * oc + o) * c + ch] = values[xi]
                    case .inputGradient: u[(xi * c + ch) * oc + o] = values[xi]
                    case .panels: u[((xi * panels + o / nr) * c + ch) * nr + o % nr] = values[xi]
                    }
                }
            }
        }
    }
}

/// V[ξ][c][t] = (Bᵀ d_{c,t} B)[ξ] for one sample's zero-bordered input (C, H', W'), tiles in
/// row-major order; the 16 matrices are `winogradVStride` apart. A row of tiles is a vector of
/// lanes (more vectors when wider), read as the even and odd columns of the input rows; lanes
/// past the row's end are rewritten by the next row (or fall in the slack).
///
/// `tileRows`: only those rows of tiles (the row-by-row path, 2·TW > N; `winogradTileRowCut`).
/// `columns`: the rows of V that many floats apart (tileColumns by default; `pairedTileColumns`).
func winogradInput(_ padded: UnsafePointer<Float>, _ g: ConvGeometry, _ v: UnsafeMutablePointer<Float>,
                   tileRows: Range<Int>? = nil, columns rowFloats: Int? = nil) {
    let n = V.scalarCount, hp = g.paddedH, wp = g.paddedW, tw = g.tilesW
    let t = rowFloats ?? g.tileColumns, stride = g.winogradVStride(columns: t)
    // Columns 2·tx + j of a row for the lanes tx.
    @inline(__always) func columns(_ p: UnsafePointer<Float>) -> (V, V, V, V) {
        (evenElements(p), evenElements(p + 1), evenElements(p + 2), evenElements(p + 3))
    }
    if 2 * tw <= n {
        // Two rows of tiles per vector: lanes below TW are row ty's tiles, the next TW row ty + 1's,
        // read as the even elements from TW columns before their start (a blend, no permute); the
        // lanes past them spill into the next pair, written after it. (7 tiles a row: 14 of 16
        // lanes used instead of 7.)
        var lanes = V.MaskStorage()
        for l in 0..<n { lanes[l] = V.MaskStorage.Scalar(l) }
        let upper = lanes .>= V.MaskStorage(repeating: V.MaskStorage.Scalar(tw))
        for ch in 0..<g.c {
            let plane = padded + ch * hp * wp
            var ty = 0
            while ty < g.tilesH {
                // The second row's lanes from TW columns before its start (zero past the last row).
                let a = plane + 2 * ty * wp, b = a + 2 * wp - 2 * tw, second = ty + 1 < g.tilesH
                let d0 = tileRowPair(a, b, upper, second), d1 = tileRowPair(a + wp, b + wp, upper, second)
                let d2 = tileRowPair(a + 2 * wp, b + 2 * wp, upper, second), d3 = tileRowPair(a + 3 * wp, b + 3 * wp, upper, second)
                let dst = v + ch * t + ty * tw
                ty += 2
                storeTransformedTiles(d0, d1, d2, d3, dst, stride)
            }
        }
        return
    }
    for ch in 0..<g.c {
        let plane = padded + ch * hp * wp
        // Chunks of a tile row from the last to the first: a chunk's lanes past the row's end spill
        // into the next tile row's first chunk, which is written after them.
        for tx in Swift.stride(from: (tw - 1) / n * n, through: 0, by: -n) {
            // Tile rows overlap by two input rows: the last two of one are the first two of the next.
            let rows = tileRows ?? 0..<g.tilesH, first = plane + 2 * rows.lowerBound * wp + 2 * tx
            var d0 = columns(first), d1 = columns(first + wp)
            for ty in rows {
                let top = plane + 2 * ty * wp + 2 * tx
                let d2 = columns(top + 2 * wp), d3 = columns(top + 3 * wp)
                let dst = v + ch * t + ty * tw + tx
                storeTransformedTiles(d0, d1, d2, d3, dst, stride)
                (d0, d1) = (d2, d3)
            }
        }
    }
}

/// V[ξ][c][ty · N/2 + tx] = (Bᵀ d_{c,t} B)[ξ] for one sample's input x (C, H, W) as it is, when
/// `winogradSmallInput`: the zero border is made in registers. Rows of tiles go in pairs, one per
/// half vector (lanes past TW are not tiles, and are not read back); the six bordered rows under
/// a pair are each one vector, loaded from PW floats before the row with the border lanes zeroed
/// (an absent row is zero), and the four columns of a tile row are lane shuffles of them. (The
/// copy with a border and the even-element loads of `winogradInput` cost more than the products'
/// transform itself on a 14 × 14 plane.) `readable`: floats readable from x on (the rest of its
/// batch); `first`: x is the batch's first float.
func winogradInputSmall(_ x: UnsafePointer<Float>, _ g: ConvGeometry, readable: Int, first: Bool,
                        _ v: UnsafeMutablePointer<Float>) {
    typealias I = V.MaskStorage
    let n = V.scalarCount, t = g.tileColumns, stride = g.winogradVStride, h = g.h, w = g.w
    var lanes = I()
    for l in 0..<n { lanes[l] = I.Scalar(l) }
    // Bordered column c holds x[c - PW] for PW ≤ c < PW + W.
    let border = (lanes .< I(repeating: I.Scalar(g.pw))) .| (lanes .>= I(repeating: I.Scalar(g.pw + w)))
    @inline(__always) func row(_ ch: Int, _ r: Int) -> V {
        let y = r - g.ph
        guard y >= 0 && y < h else { return V() }
        let start = (ch * h + y) * w - g.pw
        if (start >= 0 || !first) && start + n <= readable {
            return UnsafeRawPointer(x + start).loadUnaligned(as: V.self).replacing(with: 0, where: border)
        }
        var p = V()
        for l in g.pw..<(g.pw + w) { p[l] = x[start + l] }
        return p
    }
    for ch in 0..<g.c {
        var ty = 0
        while ty < g.tilesH {
            let p0 = row(ch, 2 * ty), p1 = row(ch, 2 * ty + 1), p2 = row(ch, 2 * ty + 2)
            let p3 = row(ch, 2 * ty + 3), p4 = row(ch, 2 * ty + 4), p5 = row(ch, 2 * ty + 5)
            let d0 = halfRowColumns(p0, p2), d1 = halfRowColumns(p1, p3), d2 = halfRowColumns(p2, p4), d3 = halfRowColumns(p3, p5)
            let dst = v + ch * t + ty * (n / 2)
            ty += 2
            storeTransformedTiles(d0, d1, d2, d3, dst, stride)
        }
    }
}

/// Columns j = 0 ..< 4 of a pair of tile rows from two bordered rows: lane l < N/2 is column
/// 2l + j of a, lane N/2 + l the same of b: the even and odd elements of a and b laid end to end
/// (j = 0, 1), and the same one lane down (j = 2, 3; the last lane of each half is not a tile).
/// Built lane by lane, which LLVM folds into permutes (SIMD32's oddHalf was an out-of-line call,
/// and its halves split the vectors in two).
@_transparent
func halfRowColumns(_ a: V, _ b: V) -> (V, V, V, V) {
    let half = V.scalarCount / 2
    var even = V(), odd = V()
    for l in 0..<half {
        even[l] = a[2 * l]; even[half + l] = b[2 * l]
        odd[l] = a[2 * l + 1]; odd[half + l] = b[2 * l + 1]
    }
    return (even, odd, lanesDown(even), lanesDown(odd))
}

/// Lane l + 1 in lane l (the last lane repeats itself); LLVM folds it into one permute.
@inline(__always)
func lanesDown(_ x: V) -> V {
    var d = x
    for i in 0..<(V.scalarCount - 1) { d[i] = x[i + 1] }
    return d
}

/// Bᵀ d B for a vector of tiles from the four columns (j = 0 ..< 4) of their four input rows d0 ...
/// d3: Bᵀ d by rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the same along the columns of each,
/// stored at `dst` in the 16 matrices `stride` apart (ξ = 4 · row + column).
@_transparent   // nested @inline(__always) helpers were seen to stay calls returning through memory
func storeTransformedTiles(_ d0: (V, V, V, V), _ d1: (V, V, V, V), _ d2: (V, V, V, V), _ d3: (V, V, V, V),
                           _ dst: UnsafeMutablePointer<Float>, _ stride: Int) {
    @_transparent func put(_ r: (V, V, V, V), _ i: Int) {
        UnsafeMutableRawPointer(dst + (4 * i) * stride).storeBytes(of: r.0 - r.2, as: V.self)
        UnsafeMutableRawPointer(dst + (4 * i + 1) * stride).storeBytes(of: r.1 + r.2, as: V.self)
        UnsafeMutableRawPointer(dst + (4 * i + 2) * stride).storeBytes(of: r.2 - r.1, as: V.self)
        UnsafeMutableRawPointer(dst + (4 * i + 3) * stride).storeBytes(of: r.1 - r.3, as: V.self)
    }
    put((d0.0 - d2.0, d0.1 - d2.1, d0.2 - d2.2, d0.3 - d2.3), 0)
    put((d1.0 + d2.0, d1.1 + d2.1, d1.2 + d2.2, d1.3 + d2.3), 1)
    put((d2.0 - d1.0, d2.1 - d1.1, d2.2 - d1.2, d2.3 - d1.3), 2)
    put((d1.0 - d3.0, d1.1 - d3.1, d1.2 - d3.2, d1.3 - d3.3), 3)
}

/// Columns j = 0 ..< 4 of an input row pair for two rows of tiles: lanes from a + 2·l + j below
/// the blend, from b + 2·l + j above it (when `second`, else zero).
@_transparent   // @inline(__always) left it a call, returning its vectors through memory
func tileRowPair(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ upper: SIMDMask<V.MaskStorage>, _ second: Bool) -> (V, V, V, V) {
    if second {
        return (evenElements(a).replacing(with: evenElements(b), where: upper),
                evenElements(a + 1).replacing(with: evenElements(b + 1), where: upper),
                evenElements(a + 2).replacing(with: evenElements(b + 2), where: upper),
                evenElements(a + 3).replacing(with: evenElements(b + 3), where: upper))
    }
    let zero = V()
    return (evenElements(a).replacing(with: zero, where: upper), evenElements(a + 1).replacing(with: zero, where: upper),
            evenElements(a + 2).replacing(with: zero, where: upper), evenElements(a + 3).replacing(with: zero, where: upper))
}

/// Aᵀ m A + bias, then the clamp, for the N tiles (lanes) from `src` in one output
/// channel's row of M, the 16 matrices `stride` apart: each lane's top-left, top-right,
/// bottom-left and bottom-right outputs.
@_transparent   // @inline(__always) was seen to leave such helpers as calls returning through memory
func inverseTransform(_ src: UnsafePointer<Float>, _ stride: Int, bias: V, clamp: Clamp) -> (V, V, V, V) {
    func at(_ xi: Int) -> V { UnsafeRawPointer(src + xi * stride).loadUnaligned(as: V.self) }
    // Aᵀ m: rows 0 + 1 + 2 and 1 - 2 - 3 (of four each), then the same on columns.
    let a0 = at(0) + at(4) + at(8), a1 = at(1) + at(5) + at(9), a2 = at(2) + at(6) + at(10), a3 = at(3) + at(7) + at(11)
    let b0 = at(4) - at(8) - at(12), b1 = at(5) - at(9) - at(13), b2 = at(6) - at(10) - at(14), b3 = at(7) - at(11) - at(15)
    // (The clamp applied in place: choosing between two whole tuples ran 5 % slower.)
    var ys = (a0 + a1 + a2 + bias, a1 - a2 - a3 + bias, b0 + b1 + b2 + bias, b1 - b2 - b3 + bias)
    if clamp != .none { ys = (clamp.apply(ys.0), clamp.apply(ys.1), clamp.apply(ys.2), clamp.apply(ys.3)) }
    return ys
}

/// y[o] (OH, OW) = Aᵀ m A + bias (then the clamp) per tile, for output channels `channels`,
/// from M[ξ][o][t] (16 matrices of OC × tileColumns, winogradMStride apart). A lane's tile gives
/// two outputs in each of two rows: the lanes' first and second outputs are interleaved
/// (zipLanes) into whole vectors of an output row. A vector may run past its row into the next
/// ones, written after it, but not past the plane: there, element by element. `addend`: a tensor
/// laid out as y, that many floats past it (never y itself: a spilled vector's lanes are written
/// before their own), added to each output before the clamp. `tileRows`: only those rows of
/// tiles (the row-by-row path; `winogradTileRowCut`). `columns`: M's rows that many floats apart
/// (tileColumns by default; `pairedTileColumns`).
func winogradOutput(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                    bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int? = nil, tileRows: Range<Int>? = nil,
                    columns: Int? = nil, _ y: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, t = columns ?? g.tileColumns, tw = g.tilesW, ow = g.ow, oh = g.oh
    let stride = g.winogradMStride(outChannels: oc, columns: t)
    // With an addend, the clamp comes after it, as outputs are stored.
    let inner = addend == nil ? clamp : .none
    @inline(__always) func finish(_ x: Float, _ at: UnsafeMutablePointer<Float>) -> Float {
        guard let addend else { return x }
        return clamp.apply(x + at[addend])
    }
    for o in channels {
        let bv = V(repeating: bias?[o] ?? 0)
        let plane = y + o * oh * ow
        @_transparent func put(_ v: V, _ row: Int, _ column: Int) {   // (@inline(__always) left it a call: 3.7 % of a 16-channel layer's training)
            // (An odd height's last row of tiles has no bottom row in the plane.)
            guard row < oh else { return }
            let at = plane + row * ow + column
            if row * ow + column + n <= oh * ow {
                var v = v
                if let addend { v = clamp.apply(v + load(at + addend)) }
                UnsafeMutableRawPointer(at).storeBytes(of: v, as: V.self)
            } else {
                for l in 0..<min(n, ow - column) { at[l] = finish(v[l], at + l) }
            }
        }
        if ow == n || 2 * ow == n {
            // Rows of a vector or half of one (16 or 8 outputs with AVX-512): a vector of tiles is two or four
            // whole rows of tiles, so their outputs fill whole vectors of rows, stored with no
            // spill; a vector per row of tiles would leave half or three quarters of its lanes
            // unused. (The lanes past the last tiles are columns of M that are not written.)
            var ty = 0
            while ty < g.tilesH {
                let ys = inverseTransform(m + o * t + ty * tw, stride, bias: bv, clamp: inner)
                let (top0, top1) = zipLanes(ys.0, ys.1), (bottom0, bottom1) = zipLanes(ys.2, ys.3)
                if ow == n {
                    // Lanes below TW: tile row ty (output rows 2ty, 2ty + 1); the others ty + 1.
                    put(top0, 2 * ty, 0)
                    put(bottom0, 2 * ty + 1, 0)
                    if ty + 1 < g.tilesH {
                        put(top1, 2 * ty + 2, 0)
                        put(bottom1, 2 * ty + 3, 0)
                    }
                    ty += 2
                } else {
                    // Each half vector is one output row of a tile row: tile rows ty ... ty + 3.
                    let (row0, row2) = pairHalves(top0, bottom0), (row4, row6) = pairHalves(top1, bottom1)
                    put(row0, 2 * ty, 0)
                    if ty + 1 < g.tilesH { put(row2, 2 * ty + 2, 0) }
                    if ty + 2 < g.tilesH { put(row4, 2 * ty + 4, 0) }
                    if ty + 3 < g.tilesH { put(row6, 2 * ty + 6, 0) }
                    ty += 4
                }
            }
            continue
        }
        if g.tiles <= n {
            // The whole plane's tiles in one vector (7×7: 16 tiles): each lane's outputs are
            // stored one by one, those past an odd size left out. (A vector per row of tiles
            // would transform the same 16 vectors of M again for each row, most lanes unused.)
            let ys = inverseTransform(m + o * t, stride, bias: bv, clamp: inner)
            var ty = 0, tx = 0
            for l in 0..<g.tiles {
                let top = plane + 2 * ty * ow + 2 * tx, right = 2 * tx + 1 < ow
                top[0] = finish(ys.0[l], top)
                if right { top[1] = finish(ys.1[l], top + 1) }
                if 2 * ty + 1 < oh {
                    top[ow] = finish(ys.2[l], top + ow)
                    if right { top[ow + 1] = finish(ys.3[l], top + ow + 1) }
                }
                tx += 1
                if tx == tw { (tx, ty) = (0, ty + 1) }
            }
            continue
        }
        for ty in tileRows ?? 0..<g.tilesH {
            // From the last vector of tiles to the first, the top row before the bottom one: a
            // vector past its row's end spills into the next rows, written after it.
            // (A while loop: `stride(from:through:by:)` stayed an out-of-line iterator.)
            var tx = (tw - 1) / n * n
            while tx >= 0 {
                let ys = inverseTransform(m + o * t + ty * tw + tx, stride, bias: bv, clamp: inner)
                let (top0, top1) = zipLanes(ys.0, ys.1), (bottom0, bottom1) = zipLanes(ys.2, ys.3)
                if 2 * tx + n < ow { put(top1, 2 * ty, 2 * tx + n) }
                put(top0, 2 * ty, 2 * tx)
                if 2 * tx + n < ow { put(bottom1, 2 * ty + 1, 2 * tx + n) }
                put(bottom0, 2 * ty + 1, 2 * tx)
                tx -= n
            }
        }
    }
}

/// Where the pooled outputs' maxima are recorded (training): indices[(sample, o, tile)], from each
/// tile's top-left index in the plane (`corners`, tileColumns entries); -1 for a non-positive
/// maximum when `mask` (a ReLU came before the pooling).
struct WinogradPooling {
    var indices: UnsafeMutablePointer<Int32>?
    var corners: UnsafePointer<Int32>?
    var mask: Bool
}

/// The same outputs, max-pooled over each tile (2×2, stride 2: the tiles are the windows), into
/// y[offset + o · tiles + t], whose row-major order is the tiles': a vector of tiles at a time, all
/// lanes used, no interleaving. ReLU, then the window's maximum, as the layers compute them.
func winogradOutputPooled(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                          bias: UnsafePointer<Float>?, clamp: Clamp, _ pooling: WinogradPooling, _ offset: Int,
                          _ y: UnsafeMutablePointer<Float>) {
    typealias I = V.MaskStorage
    let n = V.scalarCount, t = g.tileColumns, tiles = g.tiles, stride = g.winogradMStride(outChannels: oc)
    for o in channels {
        let bv = V(repeating: bias?[o] ?? 0)
        let out = offset + o * tiles
        var t0 = 0
        while t0 < tiles {
            // Whole vectors: the columns are rounded up to whole GEMM panels.
            let ys = inverseTransform(m + o * t + t0, stride, bias: bv, clamp: clamp)
            let first = pooling.corners.map { UnsafeRawPointer($0 + t0).loadUnaligned(as: I.self) } ?? I()
            let (best, index) = windowMax(ys.0, ys.1, ys.2, ys.3, first: first, w: g.ow, indices: pooling.indices != nil,
                                          mask: pooling.mask)
            if t0 + n <= tiles {
                UnsafeMutableRawPointer(y + out + t0).storeBytes(of: best, as: V.self)
                if let ix = pooling.indices { UnsafeMutableRawPointer(ix + out + t0).storeBytes(of: index, as: I.self) }
            } else {
                for l in 0..<(tiles - t0) {
                    y[out + t0 + l] = best[l]
                    pooling.indices?[out + t0 + l] = index[l]
                }
            }
            t0 += n
        }
    }
}

/// Pooled inference, from the products by tiles M_ξᵀ (rows of tiles `tileRow` rows apart, rows
/// `ldm` apart, the 16 matrices `stride` apart): lanes are output channels, so a tile's values per ξ are whole
/// vectors; each tile's Aᵀ m A + bias, ReLU and window maximum are computed as by
/// `winogradOutputPooled` (the same operations per value), collected as (tiles × channels) in
/// `scratch` (tiles · channels.count floats and a vector of slack), then transposed into
/// y[o · tiles + t] for the output channels `channels`.
func winogradOutputPooledByTiles(_ m: UnsafePointer<Float>, _ g: ConvGeometry, tileRow: Int, ldm: Int, stride: Int,
                                 channels: Range<Int>, bias: UnsafePointer<Float>?, clamp: Clamp,
                                 scratch: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, tiles = g.tiles, width = channels.count
    for t in 0..<tiles {
        // Tile t's row of M: rows of tiles `tileRow` rows apart.
        let mt = m + (t / g.tilesW * tileRow + t % g.tilesW) * ldm
        var o = channels.lowerBound
        while o < channels.upperBound {
            // A partial vector's lanes past the channels are computed from whatever follows and
            // spill into the next tile's row, written after it (or the slack).
            var bv = V()
            if let bias {
                if o + n <= channels.upperBound {
                    bv = UnsafeRawPointer(bias + o).loadUnaligned(as: V.self)
                } else {
                    for l in 0..<(channels.upperBound - o) { bv[l] = bias[o + l] }
                }
            }
            let ys = inverseTransform(mt + o, stride, bias: bv, clamp: clamp)
            let best = windowMax(ys.0, ys.1, ys.2, ys.3, first: V.MaskStorage(), w: 0, indices: false, mask: false).0
            UnsafeMutableRawPointer(scratch + t * width + o - channels.lowerBound).storeBytes(of: best, as: V.self)
            o += n
        }
    }
    transpose(scratch, rows: tiles, cols: width, into: y + channels.lowerBound * tiles, ldo: tiles)
}

// The weight gradient by the same transform. Per tile the forward computes Y = Aᵀ M A with
// M_ξ = Σ_c U_ξ V_ξ and U = G g Gᵀ, so dM = A dY Aᵀ, dU_ξ (OC, C) = Σ_tiles dM_ξ V_ξᵀ and
// dg = Gᵀ dU G: the exact gradient of the forward's arithmetic, in 16 products of K = tiles (16·C
// multiply-adds per output channel and tile) where the product per tap runs 9 of K = OH·W' (36·C
// and more).
//
//   A dY Aᵀ: rows y0, y0 + y1, y0 - y1, -y1 of dY, then the same along each row.
//   Gᵀ X G: rows X0 + ½(X1 + X2), ½(X1 - X2), ½(X1 + X2) + X3 of X, then the same along each row.

/// dM's tiles for one sample, from dyᵀ (P × OC: positions in row-major order, each with its OC
/// channels): d[ξ][t][o], rows of `winogradGradientRow(oc)` floats (zero past OC), the 16 matrices
/// `winogradGradientStride(oc)` apart. A tile's outputs past an odd plane count as zero.
func winogradGradientTiles(_ dyT: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, into d: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, row = winogradGradientRow(oc), ow = g.ow, oh = g.oh, xiStride = g.winogradGradientStride(oc)
    // Channels o ..< o + N of one position (zero past OC, or when the position is off the plane).
    @inline(__always) func channels(_ p: UnsafePointer<Float>, _ o: Int, _ present: Bool) -> V {
        guard present else { return V() }
        if o + n <= oc { return load(p + o) }
        var v = V()
        for l in 0..<(oc - o) { v[l] = p[o + l] }
        return v
    }
    for ty in 0..<g.tilesH {
        let bottom = 2 * ty + 1 < oh
        for tx in 0..<g.tilesW {
            let right = 2 * tx + 1 < ow
            let top = dyT + (2 * ty * ow + 2 * tx) * oc, dst = d + (ty * g.tilesW + tx) * row
            var o = 0
            while o < row {
                let y00 = channels(top, o, true), y01 = channels(top + oc, o, right)
                let y10 = channels(top + ow * oc, o, bottom), y11 = channels(top + (ow + 1) * oc, o, right && bottom)
                @_transparent func put(_ a: V, _ b: V, _ i: Int) {
                    store(a, dst + o + 4 * i * xiStride)
                    store(a + b, dst + o + (4 * i + 1) * xiStride)
                    store(a - b, dst + o + (4 * i + 2) * xiStride)
                    store(-b, dst + o + (4 * i + 3) * xiStride)
                }
                put(y00, y01, 0)
                put(y00 + y10, y01 + y11, 1)
                put(y00 - y10, y01 - y11, 2)
                put(-y10, -y11, 3)
                o += n
            }
        }
    }
}

/// Floats of a row of dM's tiles: OC in whole vectors. The weight gradient's product reads the
/// rows in place (`bInPlace`: a register block of one vector reads one, of NR a panel of two).
func winogradGradientRow(_ oc: Int) -> Int { (oc + V.scalarCount - 1) / V.scalarCount * V.scalarCount }

extension ConvGeometry {
    /// Floats between two of dM's 16 matrices (tiles × row): a vector more than their size, so
    /// that a last panel of NR columns stays readable and the 16 rows a tile writes are not a power
    /// of two apart (they would fall on the same L1 sets).
    func winogradGradientStride(_ oc: Int) -> Int { tiles * winogradGradientRow(oc) + V.scalarCount }
}

/// One task's slot for the weight gradient, in this order: dyᵀ (P × OC), dM's tiles, V, the input
/// bordered again and the input it is read from (when forward kept no copy), and the task's 16
/// sums of C × OC. Where each part starts (floats from the slot's start), and the slot's size.
struct WinogradGradientSlot {
    let dm, v, bordered, sums, count: Int
    init(_ g: ConvGeometry, outChannels oc: Int) {
        dm = g.oh * g.ow * oc
        v = dm + 16 * g.winogradGradientStride(oc)
        bordered = v + 16 * g.winogradVStride
        sums = bordered + g.paddedCount + g.c * g.h * g.w
        count = sums + 16 * g.c * oc
    }
}

/// dW (OC, C, 3, 3) += Gᵀ dU G, from dUᵀ[ξ][c][o] (16 matrices of C × OC).
func winogradGradientWeights(_ du: UnsafePointer<Float>, oc: Int, c: Int, into dw: UnsafeMutablePointer<Float>) {
    typealias R = SIMD4<Float>
    @inline(__always) func gT(_ x0: R, _ x1: R, _ x2: R, _ x3: R) -> (R, R, R) {
        (x0 + 0.5 * (x1 + x2), 0.5 * (x1 - x2), 0.5 * (x1 + x2) + x3)
    }
    for o in 0..<oc {
        for ch in 0..<c {
            @inline(__always) func row(_ i: Int) -> R {
                let at = du + (4 * i * c + ch) * oc + o, step = c * oc
                return R(at[0], at[step], at[2 * step], at[3 * step])
            }
            let t = gT(row(0), row(1), row(2), row(3))
            let k = dw + (o * c + ch) * 9
            @inline(__always) func add(_ x: R, _ r: Int) {
                k[3 * r] += x[0] + 0.5 * (x[1] + x[2])
                k[3 * r + 1] += 0.5 * (x[1] - x[2])
                k[3 * r + 2] += 0.5 * (x[1] + x[2]) + x[3]
            }
            add(t.0, 0)
            add(t.1, 1)
            add(t.2, 2)
        }
    }
}
