// Winograd's F(4×4, 3×3) for 3×3, stride-1 convolutions on planes whose sides are multiples of 4.
//
// The same scheme as F(2×2, 3×3) (Winograd.swift) with 4×4 tiles of outputs computed from the 6×6
// block of zero-bordered input under them: Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A over the 36
// positions ξ, so per output 36/16 = 2.25 multiply-adds per input channel where F(2×2) spends 4
// and im2col 9, and 2.25 transformed values to write and read back per output where it has 4. The
// interpolation points 0, ±1, ±2 and ∞ round more than F(2×2) does: the layer tests hold the
// outputs and gradients to 1e-4 of the plain loops in Double, and ResNet-20's logits stay within
// the PyTorch parity test's 1e-4.
//
//   Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//
// Lanes are tiles, N at a time in four quarters of N/4 consecutive tiles of one row of tiles: a
// quarter's four input columns per tile are one vector of the input row, and the two stages of
// lane unpacks (`transposeLaneGroups`, within 128-bit lanes, no cross-lane moves) turn four such vectors
// into the four columns of the N tiles, lane 4q + k holding tile k·N/4 + q of the group. The
// transformed input and the products keep that order; the output transform's unpacks
// (the same transpose) undo it, giving each quarter's output rows as whole vectors. So the lanes
// count a row of tiles in whole quarters: TW rounded up to a multiple of N/4 (`tiles4Stride`; 28
// outputs are 7 tiles, 8 in the lanes with AVX2's and AVX-512's vectors). The tiles past TW are
// never written: a quarter of them only takes zero lanes; one that holds real tiles too reads its
// vectors on past the row (into the next row, or the bordered input's slack: at most N - 4
// floats) and writes only its real tiles' outputs.

extension ConvGeometry {
    /// F(4×4, 3×3) applies: Winograd's conditions (`winograd`), sides that are multiples of 4, and
    /// at least 16 tiles in the lanes (an 8×8 plane's 4 tiles would fill a quarter of the products'
    /// vector; F(2×2) gives it 16). (Rows of tiles in whole quarters, as on 16×16 or 32×32 planes,
    /// were once a condition too: ResNet-18's 28×28 layers then took F(2×2), 1.3× this time.)
    var winograd4: Bool {
        winograd && oh % 4 == 0 && ow % 4 == 0 && tiles4 >= 16
    }
    var tiles4H: Int { oh / 4 }
    /// Tiles in a row of outputs.
    var tiles4W: Int { ow / 4 }
    /// Tiles in a row of the lanes' order: tiles4W in whole quarters of a vector.
    var tiles4Stride: Int { let q = V.scalarCount / 4; return (ow / 4 + q - 1) / q * q }
    /// Tiles in the lanes' order, the ones past each row's tiles4W included.
    var tiles4: Int { tiles4H * tiles4Stride }
    /// Columns of the transformed input and of the products: groups of N tiles, rounded up to
    /// whole panels of the GEMM, which reads a panel's NR columns of V in place.
    var tile4Columns: Int { (tiles4 + gemmNR - 1) / gemmNR * gemmNR }
    /// Floats between two of the 36 transformed-input matrices (C × tile4Columns), a vector more
    /// than their size (not a power of two apart).
    var winograd4VStride: Int { c * tile4Columns + V.scalarCount }
    /// Floats between two of the 36 products (OC × tile4Columns), a vector more than their size.
    func winograd4MStride(outChannels oc: Int) -> Int { oc * tile4Columns + V.scalarCount }
    /// Floats of one task's working memory: the zero-bordered input, the 36 transformed-input
    /// matrices and the 36 products.
    func winograd4SlotCount(outChannels oc: Int) -> Int {
        paddedCount + 36 * winograd4VStride + 36 * winograd4MStride(outChannels: oc)
    }
    /// Floats of one task's working memory for a Winograd convolution, pooled (F(2×2)) or not.
    func winogradTaskCount(outChannels oc: Int) -> Int {
        winograd4 ? max(winograd4SlotCount(outChannels: oc), winogradSlotCount(outChannels: oc)) : winogradSlotCount(outChannels: oc)
    }
    /// One image on two threads: the row of tiles where they are cut in two, each task
    /// transforming, multiplying (all output channels) and transforming back its own rows; where
    /// the first half ends at a whole panel of the products (else nil: the output channels are
    /// cut, each task transforming the whole input).
    var winograd4TileRowCut: Int? {
        let half = tiles4H / 2
        return half >= 1 && half * tiles4Stride % gemmNR == 0 ? half : nil
    }
    /// Whether a Winograd convolution of this geometry runs F(4×4): where it applies, unless its
    /// output is pooled as it is written (by F(2×2)'s tiles, which are the pooling's windows). The
    /// one place the choice is made: the transformed weights and the convolution follow it.
    func runsWinograd4(pooled: Bool) -> Bool { !pooled && winograd4 }
    /// The row of tiles where an unpooled Winograd convolution cuts one image, in the scheme it runs.
    var unpooledTileRowCut: Int? { winograd4 ? winograd4TileRowCut : winogradTileRowCut }
}

/// The transformed weights of weights (OC, C, 3, 3) for the scheme a convolution runs
/// (`runsWinograd4`): F(4×4)'s 36 matrices when `f4`, else F(2×2)'s 16, of the forward's layout or,
/// `inputGradient`, of dy's convolution (`WinogradWeightLayout`). `u`: that many OC × C matrices.
func winogradWeights(_ w: UnsafePointer<Float>, oc: Int, c: Int, f4: Bool, inputGradient: Bool, into u: UnsafeMutablePointer<Float>) {
    if f4 {
        winograd4Weights(w, oc: oc, c: c, flipped: inputGradient, into: u)
    } else {
        winogradWeights(w, oc: oc, c: c, layout: inputGradient ? .inputGradient : .forward, into: u)
    }
}

/// U[ξ][o][c] = (G g_{o,c} Gᵀ)[ξ] or, `flipped` (the input gradient's, as `.inputGradient` of
/// F(2×2)), U[ξ][c][o] = (G flip(g_{o,c}) Gᵀ)[ξ], for weights (OC, C, 3, 3): 36 matrices.
func winograd4Weights(_ w: UnsafePointer<Float>, oc: Int, c: Int, flipped: Bool, into u: UnsafeMutablePointer<Float>) {
    @inline(__always) func gRows(_ a: Float, _ b: Float, _ c: Float) -> (Float, Float, Float, Float, Float, Float) {
        let sixth: Float = 1 / 6, p = sixth * (a + c), q = Float(1) / 24 * a + sixth * c, r = Float(1) / 12 * b
        return (0.25 * a, -(p + sixth * b), -(p - sixth * b), q + r, q - r, c)
    }
    for o in 0..<oc {
        for ch in 0..<c {
            let k = w + (o * c + ch) * 9
            @inline(__always) func g(_ i: Int, _ j: Int) -> Float { flipped ? k[(2 - i) * 3 + 2 - j] : k[i * 3 + j] }
            // t = G g (6 × 3): column j of g becomes column j of t; then row i of t times Gᵀ.
            let c0 = gRows(g(0, 0), g(1, 0), g(2, 0)), c1 = gRows(g(0, 1), g(1, 1), g(2, 1)), c2 = gRows(g(0, 2), g(1, 2), g(2, 2))
            let rows = (gRows(c0.0, c1.0, c2.0), gRows(c0.1, c1.1, c2.1), gRows(c0.2, c1.2, c2.2),
                        gRows(c0.3, c1.3, c2.3), gRows(c0.4, c1.4, c2.4), gRows(c0.5, c1.5, c2.5))
            withUnsafeBytes(of: rows) { raw in
                let values = raw.bindMemory(to: Float.self)
                for xi in 0..<36 {
                    if flipped {
                        u[(xi * c + ch) * oc + o] = values[xi]
                    } else {
                        u[(xi * oc + o) * c + ch] = values[xi]
                    }
                }
            }
        }
    }
}

/// Bᵀ p along one row of six values (vectors of tiles): 13 operations.
@_transparent
func winograd4Row(_ p0: V, _ p1: V, _ p2: V, _ p3: V, _ p4: V, _ p5: V) -> (V, V, V, V, V, V) {
    let four = V(repeating: 4), five = V(repeating: -5), minusFour = V(repeating: -4)
    let t1 = fmadd(p4, minusFour, p2), t2 = fmadd(p3, minusFour, p1)
    let t3 = p4 - p2, t4 = 2 * (p3 - p1)
    return (fmadd(fmadd(p4, four, p0), five, p2), t2 + t1, t1 - t2, t3 + t4, t3 - t4, fmadd(fmadd(p5, four, p1), five, p3))
}

/// Where the four quarters of a group of tiles start and how many of their columns are written.
typealias WinogradQuarters = ((start: Int, count: Int), (start: Int, count: Int), (start: Int, count: Int), (start: Int, count: Int))

/// Where the four quarters of the group of N tiles from tile t0 (in the lanes' order) start in a
/// plane of rows `rowWidth` apart (a tile's top-left corner, at 4 · its column and 4 · its row of
/// tiles; -1 for a quarter past `range` or past its row's tiles), and each quarter's columns in
/// its row: N, or fewer where the quarter ends past the row's tiles (N for one that starts at -1).
@inline(__always)
func quarters(_ t0: Int, _ range: Range<Int>, _ g: ConvGeometry, rowWidth: Int) -> WinogradQuarters {
    let quarter = V.scalarCount / 4, stride = g.tiles4Stride, tw = g.tiles4W
    @inline(__always) func one(_ q: Int) -> (start: Int, count: Int) {
        let tile = t0 + q * quarter, row = tile / stride, column = tile - row * stride
        guard tile < range.upperBound && column < tw else { return (-1, V.scalarCount) }
        return (4 * row * rowWidth + 4 * column, 4 * min(quarter, tw - column))
    }
    return (one(0), one(1), one(2), one(3))
}

/// V[ξ][c][t] = (Bᵀ d_{c,t} B)[ξ] for one sample's zero-bordered input (C, H', W') and the tiles
/// `tiles` (all by default; a range of whole rows of tiles), N at a time in the lane order of the
/// file's comment, from the range's first tile; the 36 matrices are `winograd4VStride` apart.
func winograd4Input(_ padded: UnsafePointer<Float>, _ g: ConvGeometry, _ v: UnsafeMutablePointer<Float>, tiles: Range<Int>? = nil) {
    let n = V.scalarCount, wp = g.paddedW, hp = g.paddedH, t = g.tile4Columns
    let stride = g.winograd4VStride, range = tiles ?? 0..<g.tiles4
    var t0 = range.lowerBound
    while t0 < range.upperBound {
        // Where each quarter's rows start in a plane (-1 past the range: its lanes are zero).
        let q = quarters(t0, range, g, rowWidth: wp), (s0, s1, s2, s3) = (q.0.start, q.1.start, q.2.start, q.3.start)
        for ch in 0..<g.c {
            let plane = padded + ch * hp * wp
            // Row i of the six under the tiles: its six columns per tile, then Bᵀ along it.
            @_transparent func row(_ i: Int) -> (V, V, V, V, V, V) {
                @_transparent func at(_ start: Int, _ offset: Int) -> V { start < 0 ? V() : load(plane + start + i * wp + offset) }
                let c = transposeLaneGroups(at(s0, 0), at(s1, 0), at(s2, 0), at(s3, 0))
                let d = transposeLaneGroups(at(s0, 2), at(s1, 2), at(s2, 2), at(s3, 2))
                // (The columns through `opaque`: 10 % faster, LLVM no longer folding the unpacks into Bᵀ.)
                return winograd4Row(opaque(c.0), opaque(c.1), opaque(c.2), opaque(c.3), opaque(d.2), opaque(d.3))
            }
            let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3), r4 = row(4), r5 = row(5)
            let dst = v + ch * t + t0
            // Bᵀ down each column j, stored at ξ = 6i + j.
            @_transparent func column(_ j: Int, _ p0: V, _ p1: V, _ p2: V, _ p3: V, _ p4: V, _ p5: V) {
                let x = winograd4Row(p0, p1, p2, p3, p4, p5)
                store(x.0, dst + j * stride)
                store(x.1, dst + (6 + j) * stride)
                store(x.2, dst + (12 + j) * stride)
                store(x.3, dst + (18 + j) * stride)
                store(x.4, dst + (24 + j) * stride)
                store(x.5, dst + (30 + j) * stride)
            }
            column(0, r0.0, r1.0, r2.0, r3.0, r4.0, r5.0)
            column(1, r0.1, r1.1, r2.1, r3.1, r4.1, r5.1)
            column(2, r0.2, r1.2, r2.2, r3.2, r4.2, r5.2)
            column(3, r0.3, r1.3, r2.3, r3.3, r4.3, r5.3)
            column(4, r0.4, r1.4, r2.4, r3.4, r4.4, r5.4)
            column(5, r0.5, r1.5, r2.5, r3.5, r4.5, r5.5)
        }
        t0 += n
    }
}

/// Aᵀ m along six values: m0 + (m1 + m2) + (m3 + m4), (m1 - m2) + 2(m3 - m4), (m1 + m2) + 4(m3 + m4),
/// (m1 - m2) + 8(m3 - m4) + m5.
@_transparent
func winograd4Back(_ m0: V, _ m1: V, _ m2: V, _ m3: V, _ m4: V, _ m5: V) -> (V, V, V, V) {
    let s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4
    return (m0 + s12 + s34, fmadd(d12, V(repeating: 2), d34), fmadd(s12, V(repeating: 4), s34), fmadd(d12, V(repeating: 8), d34) + m5)
}

/// y[o] (OH, OW) = Aᵀ m A + bias (then the clamp) per tile, for output channels `channels` and the
/// tiles `tiles` (all by default; whole rows of tiles, the same range `winograd4Input` took), from
/// M[ξ][o][t] (36 matrices of OC × tile4Columns, `winograd4MStride` apart). `addend`: a tensor laid
/// out as y, that many floats past it, added to each output before the clamp.
func winograd4Output(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                     bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int? = nil, tiles: Range<Int>? = nil,
                     _ y: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, range = tiles ?? 0..<g.tiles4
    var t0 = range.lowerBound
    while t0 < range.upperBound {
        // Where each quarter's outputs start in a plane (-1 past the range: not written), and how
        // many of its N lie in the row: fewer where it ends past the row's tiles. A group with such
        // a quarter takes a copy of the loop that tests for it; the others (every group of a plane
        // whose rows are whole quarters) one without the test: with it, F(4×4)'s output transform
        // on ResNet-20's 32×32 planes took 3 % longer.
        let q = quarters(t0, range, g, rowWidth: g.ow)
        if min(q.0.count, q.1.count, q.2.count, q.3.count) < n {
            winograd4OutputGroupPartly(m, g, oc: oc, channels: channels, bias: bias, clamp: clamp, addend: addend, t0: t0, q, y)
        } else {
            winograd4OutputGroupWhole(m, g, oc: oc, channels: channels, bias: bias, clamp: clamp, addend: addend, t0: t0, q, y)
        }
        t0 += n
    }
}

@inline(never)
private func winograd4OutputGroupWhole(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                                       bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int?, t0: Int,
                                       _ q: WinogradQuarters, _ y: UnsafeMutablePointer<Float>) {
    winograd4OutputGroup(m, g, oc: oc, channels: channels, bias: bias, clamp: clamp, addend: addend, t0: t0, q, partly: false, y)
}

@inline(never)
private func winograd4OutputGroupPartly(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                                        bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int?, t0: Int,
                                        _ q: WinogradQuarters, _ y: UnsafeMutablePointer<Float>) {
    winograd4OutputGroup(m, g, oc: oc, channels: channels, bias: bias, clamp: clamp, addend: addend, t0: t0, q, partly: true, y)
}

/// The output transform of the group of N tiles from t0, for output channels `channels`
/// (`winograd4Output`); `partly`: some quarter is written in part.
@inline(__always)
private func winograd4OutputGroup(_ m: UnsafePointer<Float>, _ g: ConvGeometry, oc: Int, channels: Range<Int>,
                                  bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int?, t0: Int,
                                  _ q: WinogradQuarters, partly partial: Bool, _ y: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, ow = g.ow, t = g.tile4Columns, stride = g.winograd4MStride(outChannels: oc)
    let (s0, s1, s2, s3) = (q.0.start, q.1.start, q.2.start, q.3.start), (k0, k1, k2, k3) = (q.0.count, q.1.count, q.2.count, q.3.count)
    for o in channels {
        let bv = V(repeating: bias?[o] ?? 0)
        let plane = y + o * g.oh * ow
        let src = m + o * t + t0
        @_transparent func at(_ xi: Int) -> V { load(src + xi * stride) }
        // Aᵀ down each column j of the 6 × 6.
        let c0 = winograd4Back(at(0), at(6), at(12), at(18), at(24), at(30))
        let c1 = winograd4Back(at(1), at(7), at(13), at(19), at(25), at(31))
        let c2 = winograd4Back(at(2), at(8), at(14), at(20), at(26), at(32))
        let c3 = winograd4Back(at(3), at(9), at(15), at(21), at(27), at(33))
        let c4 = winograd4Back(at(4), at(10), at(16), at(22), at(28), at(34))
        let c5 = winograd4Back(at(5), at(11), at(17), at(23), at(29), at(35))
        // Output row r of the tiles: Aᵀ along it, the bias, and each quarter's four outputs
        // per tile as one vector of the output row.
        @_transparent func put(_ r: Int, _ p0: V, _ p1: V, _ p2: V, _ p3: V, _ p4: V, _ p5: V) {
            let x = winograd4Back(p0, p1, p2, p3, p4, p5)
            // Through `opaque`: LLVM merged the unpacks into Aᵀ and the bias, and computed the
            // whole transform in 128-bit halves, spilling: 1.5-1.9× this time (same bits).
            let q = transposeLaneGroups(opaque(x.0 + bv), opaque(x.1 + bv), opaque(x.2 + bv), opaque(x.3 + bv))
            @_transparent func one(_ v: V, _ start: Int, _ count: Int) {
                guard start >= 0 else { return }
                let at = plane + start + r * ow
                if partial && count < n { return partialQuarter(v, at, count, addend: addend, clamp: clamp) }
                var v = v
                if let addend { v = v + load(at + addend) }
                if clamp != .none { v = clamp.apply(v) }
                store(v, at)
            }
            one(q.0, s0, k0)
            one(q.1, s1, k1)
            one(q.2, s2, k2)
            one(q.3, s3, k3)
        }
        put(0, c0.0, c1.0, c2.0, c3.0, c4.0, c5.0)
        put(1, c0.1, c1.1, c2.1, c3.1, c4.1, c5.1)
        put(2, c0.2, c1.2, c2.2, c3.2, c4.2, c5.2)
        put(3, c0.3, c1.3, c2.3, c3.3, c4.3, c5.3)
    }
}

/// The first `count` lanes of a quarter's output vector, written as `winograd4Output` writes a
/// whole one (the addend's vector, then the clamp's), nothing read or written past them.
@inline(never)
private func partialQuarter(_ v: V, _ at: UnsafeMutablePointer<Float>, _ count: Int, addend: Int?, clamp: Clamp) {
    var v = v
    if let addend {
        var a = V()
        for i in 0..<count { a[i] = at[i + addend] }
        v = v + a
    }
    if clamp != .none { v = clamp.apply(v) }
    for i in 0..<count { at[i] = v[i] }
}
