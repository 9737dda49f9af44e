// Matrix transpose, a vector-width square block at a time.
//
// A W × W block (W = 16 with AVX-512, 8 with AVX2) is transposed in registers by log2(W) rounds of
// "unzip": new row r takes the even elements of rows 2r and 2r+1 laid end to end, new row r + W/2
// their odd elements. Each round rotates the bits of the (row, column) index right by one, so
// log2(W) rounds swap row and column (each unzip is one permute instruction on AVX-512). This
// runs at a fraction of an instruction per element, where an element-by-element copy costs
// several cycles once the columns it writes leave the cache.

/// out[j * ldo + i] = x[i * ldx + j] for i < rows, j < cols.
func transpose(_ x: UnsafePointer<Float>, rows: Int, cols: Int, ldx: Int? = nil,
               into out: UnsafeMutablePointer<Float>, ldo: Int? = nil) {
    let ldx = ldx ?? cols, ldo = ldo ?? rows
    let w = V.scalarCount
    var i = 0
    // Rows or columns of 1, 2 or 4 packed floats (a 1×1 convolution's planes in a MobileNet's last
    // stages), which the blocks below would leave to the element-by-element loops.
    if isNarrow(cols) && ldx == cols && rows >= w {
        while i + w <= rows {
            let c = narrowColumns(x + i * cols, cols)
            store(c.0, out + i)
            if cols > 1 { store(c.1, out + ldo + i) }
            if cols > 2 { store(c.2, out + 2 * ldo + i); store(c.3, out + 3 * ldo + i) }
            i += w
        }
    } else if isNarrow(rows) && ldo == rows && cols >= w {
        var j = 0
        while j + w <= cols {
            let r = (load(x + j), rows > 1 ? load(x + ldx + j) : V(), rows > 2 ? load(x + 2 * ldx + j) : V(),
                     rows > 2 ? load(x + 3 * ldx + j) : V())
            storeNarrowRows(r, rows, out + j * rows)
            j += w
        }
        for jj in j..<cols {
            for ii in 0..<rows { out[jj * ldo + ii] = x[ii * ldx + jj] }
        }
        return
    }
    while i + w <= rows {
        var j = 0
        while j + w <= cols {
            transposeBlock(x + i * ldx + j, ldx, out + j * ldo + i, ldo)
            j += w
        }
        for jj in j..<cols {
            for ii in i..<(i + w) { out[jj * ldo + ii] = x[ii * ldx + jj] }
        }
        i += w
    }
    for ii in i..<rows {
        for jj in 0..<cols { out[jj * ldo + ii] = x[ii * ldx + jj] }
    }
}

/// One W × W block, from rows ldx apart to rows ldo apart.
@inline(__always)
private func transposeBlock(_ x: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
    let w = V.scalarCount
    #if CNN_AVX512
    var r = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
    #else
    var r = (V(), V(), V(), V(), V(), V(), V(), V())
    #endif
    withUnsafeMutableBytes(of: &r) { raw in
        let rows = raw.baseAddress!.assumingMemoryBound(to: V.self)
        for i in 0..<w { rows[i] = UnsafeRawPointer(x + i * ldx).loadUnaligned(as: V.self) }
        var rounds = w
        while rounds > 1 {
            var next = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
            withUnsafeMutableBytes(of: &next) { nraw in
                let n = nraw.baseAddress!.assumingMemoryBound(to: V.self)
                for k in 0..<(w / 2) { (n[k], n[k + w / 2]) = unzipLanes(rows[2 * k], rows[2 * k + 1]) }
                for k in 0..<w { rows[k] = n[k] }
            }
            rounds /= 2
        }
        for i in 0..<w { UnsafeMutableRawPointer(out + i * ldo).storeBytes(of: rows[i], as: V.self) }
    }
}

/// p[0], p[2], ..., p[2N - 2]: the even elements of the 2N floats from p.
@inline(__always)
func evenElements(_ p: UnsafePointer<Float>) -> V { unzipLanes(load(p), load(p + V.scalarCount)).0 }

/// The even lanes of a then b, and the odd lanes of a then b, lane by lane: LLVM folds the lane
/// moves into permutes (vpermt2ps with AVX-512). Not SIMD32's evenHalf and oddHalf: generic library
/// code that the inliner may leave as calls, as it did in the Winograd input transform (12 % of
/// ResNet-20's batch-1 time) once they had more callers.
@inline(__always)
func unzipLanes<T: SIMD>(_ a: T, _ b: T) -> (T, T) {
    var even = T(), odd = T()
    let half = T.scalarCount / 2
    for i in 0..<half {
        even[i] = a[2 * i]
        even[half + i] = b[2 * i]
        odd[i] = a[2 * i + 1]
        odd[half + i] = b[2 * i + 1]
    }
    return (even, odd)
}

/// (a[0], b[0], a[1], b[1], ...): the lanes of a and b interleaved, the first half's and the
/// second half's. LLVM folds the lane moves into permutes (vpermt2ps with AVX-512).
@inline(__always)
func zipLanes<T: SIMD>(_ a: T, _ b: T) -> (T, T) {
    var lo = T(), hi = T()
    let half = T.scalarCount / 2
    for i in 0..<half {
        lo[2 * i] = a[i]
        lo[2 * i + 1] = b[i]
        hi[2 * i] = a[half + i]
        hi[2 * i + 1] = b[half + i]
    }
    return (lo, hi)
}

/// Whether rows of n floats go through `narrowColumns` and `storeNarrowRows`.
@inline(__always)
func isNarrow(_ n: Int) -> Bool { n == 1 || n == 2 || n == 4 }

/// Column k of the V.scalarCount rows of s floats at p (s = 1, 2 or 4, row after row) in element k
/// of the result (lane i from row i); the elements from s on are zero. One or two rounds of unzip.
@inline(__always)
func narrowColumns(_ p: UnsafePointer<Float>, _ s: Int) -> (V, V, V, V) {
    let w = V.scalarCount
    switch s {
    case 1:
        return (load(p), V(), V(), V())
    case 2:
        let (c0, c1) = unzipLanes(load(p), load(p + w))
        return (c0, c1, V(), V())
    default:
        // e holds columns 0 and 2 of each row, o columns 1 and 3.
        let (e0, o0) = unzipLanes(load(p), load(p + w)), (e1, o1) = unzipLanes(load(p + 2 * w), load(p + 3 * w))
        let (c0, c2) = unzipLanes(e0, e1), (c1, c3) = unzipLanes(o0, o1)
        return (c0, c1, c2, c3)
    }
}

/// The inverse of `narrowColumns`: the V.scalarCount rows of s floats (s = 1, 2 or 4) whose column k
/// is element k of `columns`, written row after row at p.
@inline(__always)
func storeNarrowRows(_ columns: (V, V, V, V), _ s: Int, _ p: UnsafeMutablePointer<Float>) {
    let w = V.scalarCount
    switch s {
    case 1:
        store(columns.0, p)
    case 2:
        let (lo, hi) = zipLanes(columns.0, columns.1)
        store(lo, p)
        store(hi, p + w)
    default:
        // Columns 0 and 2 zipped, 1 and 3 zipped, then the two zipped: rows of 4.
        let (e0, e1) = zipLanes(columns.0, columns.2), (o0, o1) = zipLanes(columns.1, columns.3)
        let (r0, r1) = zipLanes(e0, o0), (r2, r3) = zipLanes(e1, o1)
        store(r0, p)
        store(r1, p + w)
        store(r2, p + 2 * w)
        store(r3, p + 3 * w)
    }
}

/// (a's low half, b's low half) and (a's high half, b's high half), lane by lane, folded into
/// permutes: SIMD's lowHalf and highHalf were left as library calls in the Winograd output
/// transform.
@inline(__always)
func pairHalves<T: SIMD>(_ a: T, _ b: T) -> (low: T, high: T) {
    var low = T(), high = T()
    let half = T.scalarCount / 2
    for i in 0..<half {
        low[i] = a[i]
        low[half + i] = b[i]
        high[i] = a[half + i]
        high[half + i] = b[half + i]
    }
    return (low, high)
}

/// The unpacks within each group of four lanes (a 128-bit lane of the machine's vectors), which
/// LLVM folds into unpcklps, unpckhps, unpcklpd and unpckhpd: group q of the result is
/// (a0 b0 a1 b1), (a2 b2 a3 b3), (a0 a1 b0 b1) and (a2 a3 b2 b3) of group q of a and b.
@_transparent
func unpackLanes(_ a: V, _ b: V) -> (low: V, high: V) {
    var low = V(), high = V()
    for q in 0..<(V.scalarCount / 4) {
        low[4 * q] = a[4 * q]; low[4 * q + 1] = b[4 * q]; low[4 * q + 2] = a[4 * q + 1]; low[4 * q + 3] = b[4 * q + 1]
        high[4 * q] = a[4 * q + 2]; high[4 * q + 1] = b[4 * q + 2]; high[4 * q + 2] = a[4 * q + 3]; high[4 * q + 3] = b[4 * q + 3]
    }
    return (low, high)
}

/// (Through Double lanes: as float lanes, LLVM merged the two stages of `transposeLaneGroups` into
/// one shuffle of four sources, which it built element by element and then ran the arithmetic
/// on scalars: F(4×4)'s input transform was all vaddss and vinsertps.)
@_transparent
func unpackPairs(_ a: V, _ b: V) -> (low: V, high: V) {
    let x = unsafeBitCast(a, to: VD.self), y = unsafeBitCast(b, to: VD.self)
    var low = VD(), high = VD()
    for q in 0..<(VD.scalarCount / 2) {
        low[2 * q] = x[2 * q]; low[2 * q + 1] = y[2 * q]
        high[2 * q] = x[2 * q + 1]; high[2 * q + 1] = y[2 * q + 1]
    }
    return (unsafeBitCast(low, to: V.self), unsafeBitCast(high, to: V.self))
}

/// The 4 × 4 transpose within each group of four lanes of four vectors: lane 4q + k of result j is
/// lane 4q + j of a_k, by eight unpacks, none across groups. F(4×4)'s tiles (Winograd4.swift): with
/// each group q of a_s the four columns of item s·N/4 + q, result j is column j of the N items, lane
/// 4q + k holding item k·N/4 + q; and back again.
@_transparent
func transposeLaneGroups(_ a0: V, _ a1: V, _ a2: V, _ a3: V) -> (V, V, V, V) {
    let p = unpackLanes(a0, a1), r = unpackLanes(a2, a3)
    let low = unpackPairs(p.low, r.low), high = unpackPairs(p.high, r.high)
    return (low.low, low.high, high.low, high.high)
}
