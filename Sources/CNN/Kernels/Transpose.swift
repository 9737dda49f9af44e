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

/// The even and the odd elements of a and b laid end to end.
@inline(__always)
private func unzip(_ a: V, _ b: V) -> (V, V) {
    #if CNN_AVX512
    let ab = SIMD32(lowHalf: a, highHalf: b)
    #else
    let ab = SIMD16(lowHalf: a, highHalf: b)
    #endif
    return (ab.evenHalf, ab.oddHalf)
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
                for k in 0..<(w / 2) { (n[k], n[k + w / 2]) = unzip(rows[2 * k], rows[2 * k + 1]) }
                for k in 0..<w { rows[k] = n[k] }
            }
            rounds /= 2
        }
        for i in 0..<w { UnsafeMutableRawPointer(out + i * ldo).storeBytes(of: rows[i], as: V.self) }
    }
}

/// p[0], p[2], ..., p[2N - 2]: the even elements of the 2N floats from p. Where the odd ones are
/// needed too, they are evenElements(p + 1): SIMD32's oddHalf was left as an out-of-line call in
/// the pooling and Winograd loops, evenHalf compiles to one permute.
@inline(__always)
func evenElements(_ p: UnsafePointer<Float>) -> V {
    let a = UnsafeRawPointer(p).loadUnaligned(as: V.self), b = UnsafeRawPointer(p + V.scalarCount).loadUnaligned(as: V.self)
    #if CNN_AVX512
    return SIMD32(lowHalf: a, highHalf: b).evenHalf
    #else
    return SIMD16(lowHalf: a, highHalf: b).evenHalf
    #endif
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
