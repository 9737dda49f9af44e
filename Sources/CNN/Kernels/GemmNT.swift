// The product with B transposed when both operands are stored along K:
//
//   C[M, N] += A[M, K] · B[N, K]ᵀ,   C[i, j] += Σ_k a[i * lda + k] · b[j * ldb + k]
//
// This is the convolution weight gradient, dW (OC, CKK) += dy_n (OC, P) · col_n (CKK, P)ᵀ: both
// operands run along P, so the packed GEMM would have to gather one of them transposed (a scalar
// loop that cost 11 % of a training step). Here every element of C is a dot product, vectorized
// along K: a 4 × 4 block of C keeps 16 vector accumulators, loads 4 + 4 vectors per step of K and
// needs no packing. The vectors are summed across their lanes once per call, by a fixed tree, so
// each element is always computed in the same order.

/// C[i0..<i1, j0..<j1] += A · Bᵀ (rows of A and B hold K contiguous floats).
func gemmNT(i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
            c: UnsafeMutablePointer<Float>, ldc: Int) {
    if k <= 0 { return }
    var i = i0
    while i < i1 {
        let rows = min(4, i1 - i)
        var j = j0
        while j < j1 {
            let cols = min(4, j1 - j)
            if rows == 4 && cols == 4 && k >= V.scalarCount {
                dot4x4(k, a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc)
            } else {
                for r in 0..<rows {
                    for s in 0..<cols {
                        c[(i + r) * ldc + j + s] += dot(k, a + (i + r) * lda, b + (j + s) * ldb)
                    }
                }
            }
            j += 4
        }
        i += 4
    }
}

/// Lanes at or past `first` are kept by the mask; for the last, overlapping vector of a row.
@inline(__always)
private func tailMask(_ first: Int) -> SIMDMask<V.MaskStorage> {
    var lanes = V.MaskStorage()
    for l in 0..<V.scalarCount { lanes[l] = l >= first ? -1 : 0 }
    return SIMDMask(lanes)
}


/// [Σ a, Σ b, Σ c, Σ d] over the lanes of each, by halving (the same tree every time).
@inline(__always)
private func sum4(_ a: V, _ b: V, _ c: V, _ d: V) -> SIMD4<Float> {
    #if CNN_AVX512
    let a8 = a.lowHalf + a.highHalf, b8 = b.lowHalf + b.highHalf
    let c8 = c.lowHalf + c.highHalf, d8 = d.lowHalf + d.highHalf
    #else
    let a8 = a, b8 = b, c8 = c, d8 = d
    #endif
    let ab = SIMD8(lowHalf: a8.lowHalf + a8.highHalf, highHalf: b8.lowHalf + b8.highHalf)
    let cd = SIMD8(lowHalf: c8.lowHalf + c8.highHalf, highHalf: d8.lowHalf + d8.highHalf)
    let abcd = SIMD8(lowHalf: ab.evenHalf + ab.oddHalf, highHalf: cd.evenHalf + cd.oddHalf)
    return abcd.evenHalf + abcd.oddHalf
}

/// C[4, 4] += A[4, k] · B[4, k]ᵀ, for k ≥ one vector. The last partial vector is read as the
/// row's final whole vector with the lanes already counted masked off in A, so nothing is read
/// past a row.
@inline(__always)
private func dot4x4(_ k: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                    _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    let w = V.scalarCount
    var c00 = V(), c01 = V(), c02 = V(), c03 = V(), c10 = V(), c11 = V(), c12 = V(), c13 = V()
    var c20 = V(), c21 = V(), c22 = V(), c23 = V(), c30 = V(), c31 = V(), c32 = V(), c33 = V()
    @inline(__always)
    func step(_ t: Int, _ mask: SIMDMask<V.MaskStorage>?) {
        var a0 = load(a + t), a1 = load(a + lda + t), a2 = load(a + 2 * lda + t), a3 = load(a + 3 * lda + t)
        if let mask {
            a0.replace(with: 0, where: .!mask); a1.replace(with: 0, where: .!mask)
            a2.replace(with: 0, where: .!mask); a3.replace(with: 0, where: .!mask)
        }
        var x = load(b + t)
        c00 = fmadd(c00, a0, x); c10 = fmadd(c10, a1, x); c20 = fmadd(c20, a2, x); c30 = fmadd(c30, a3, x)
        x = load(b + ldb + t)
        c01 = fmadd(c01, a0, x); c11 = fmadd(c11, a1, x); c21 = fmadd(c21, a2, x); c31 = fmadd(c31, a3, x)
        x = load(b + 2 * ldb + t)
        c02 = fmadd(c02, a0, x); c12 = fmadd(c12, a1, x); c22 = fmadd(c22, a2, x); c32 = fmadd(c32, a3, x)
        x = load(b + 3 * ldb + t)
        c03 = fmadd(c03, a0, x); c13 = fmadd(c13, a1, x); c23 = fmadd(c23, a2, x); c33 = fmadd(c33, a3, x)
    }
    var t = 0
    while t + w <= k {
        step(t, nil)
        t += w
    }
    if t < k { step(k - w, tailMask(t - (k - w))) }
    func add(_ row: UnsafeMutablePointer<Float>, _ s: SIMD4<Float>) {
        UnsafeMutableRawPointer(row).storeBytes(of: UnsafeRawPointer(row).loadUnaligned(as: SIMD4<Float>.self) + s,
                                                as: SIMD4<Float>.self)
    }
    add(c, sum4(c00, c01, c02, c03))
    add(c + ldc, sum4(c10, c11, c12, c13))
    add(c + 2 * ldc, sum4(c20, c21, c22, c23))
    add(c + 3 * ldc, sum4(c30, c31, c32, c33))
}
