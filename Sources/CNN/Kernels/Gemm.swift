// Single-precision matrix product, the kernel under convolution and dense layers.
//
//   C[M, N] = (accumulate ? C : 0) + A[M, K] · B[K, N]
//
// A is read through two strides, so Aᵀ costs nothing: element (i, k) is a[i * aRow + k * aCol]
// (row-major A: aRow = lda, aCol = 1; transposed storage: aRow = 1, aCol = lda).
// B and C are row-major with leading dimensions ldb and ldc. A caller that needs Bᵀ transposes it
// into a planned scratch buffer first (`transpose`).
//
// The register block is 4 rows × 32 columns (eight 16-wide accumulators); K is cut into blocks of
// 256 so that the 256 × 32 panel of B stays in L1 while every row block of A streams over it.
// Each element of C is always summed in the same order, whatever the tiling into tasks, so a
// parallel product is bit-identical to a serial one.

typealias V16 = SIMD16<Float>

@inline(__always)
private func load16(_ p: UnsafePointer<Float>) -> V16 {
    UnsafeRawPointer(p).loadUnaligned(as: V16.self)
}

@inline(__always)
private func store16(_ v: V16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: V16.self)
}

private let kBlock = 256
private let tileRows = 64
private let tileCols = 128

/// C = (accumulate ? C : 0) + A·B. `parallel` spreads tiles of C over the shared pool.
func gemm(m: Int, n: Int, k: Int,
          a: UnsafePointer<Float>, aRow: Int, aCol: Int,
          b: UnsafePointer<Float>, ldb: Int,
          c: UnsafeMutablePointer<Float>, ldc: Int,
          accumulate: Bool, parallel: Bool = false) {
    if m <= 0 || n <= 0 { return }
    if k <= 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    let rowTiles = (m + tileRows - 1) / tileRows
    let colTiles = (n + tileCols - 1) / tileCols
    let tiles = rowTiles * colTiles
    let work = m * n * k
    if parallel && tiles > 1 && work >= 1 << 16 {
        ThreadPool.shared.parallelFor(tiles) { t in
            let i0 = (t / colTiles) * tileRows, j0 = (t % colTiles) * tileCols
            gemmTile(i0: i0, i1: min(m, i0 + tileRows), j0: j0, j1: min(n, j0 + tileCols), k: k,
                     a: a, aRow: aRow, aCol: aCol, b: b, ldb: ldb, c: c, ldc: ldc,
                     accumulate: accumulate)
        }
    } else {
        gemmTile(i0: 0, i1: m, j0: 0, j1: n, k: k, a: a, aRow: aRow, aCol: aCol, b: b, ldb: ldb,
                 c: c, ldc: ldc, accumulate: accumulate)
    }
}

@inline(__always)
private func gemmTile(i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
                      a: UnsafePointer<Float>, aRow: Int, aCol: Int,
                      b: UnsafePointer<Float>, ldb: Int,
                      c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
    var k0 = 0
    while k0 < k {
        let kc = min(kBlock, k - k0)
        let acc = accumulate || k0 > 0
        let ak = a + k0 * aCol, bk = b + k0 * ldb
        var j = j0
        while j < j1 {
            let width = min(32, j1 - j)
            var i = i0
            while i + 4 <= i1 {
                if width == 32 {
                    kernel4x32(kc, ak + i * aRow, aRow, aCol, bk + j, ldb, c + i * ldc + j, ldc, acc)
                } else {
                    for r in 0..<4 {
                        kernelRow(kc, width, ak + (i + r) * aRow, aCol, bk + j, ldb, c + (i + r) * ldc + j, acc)
                    }
                }
                i += 4
            }
            while i < i1 {
                kernelRow(kc, width, ak + i * aRow, aCol, bk + j, ldb, c + i * ldc + j, acc)
                i += 1
            }
            j += 32
        }
        k0 += kc
    }
}

/// The register block: C[4, 32] (+)= A[4, kc] · B[kc, 32].
@inline(__always)
private func kernel4x32(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                        _ b: UnsafePointer<Float>, _ ldb: Int,
                        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
    var c00 = V16(), c01 = V16(), c10 = V16(), c11 = V16()
    var c20 = V16(), c21 = V16(), c30 = V16(), c31 = V16()
    var pa = a, pb = b
    let a1 = aRow, a2 = 2 * aRow, a3 = 3 * aRow
    for _ in 0..<kc {
        let b0 = load16(pb), b1 = load16(pb + 16)
        let x0 = V16(repeating: pa[0]), x1 = V16(repeating: pa[a1])
        let x2 = V16(repeating: pa[a2]), x3 = V16(repeating: pa[a3])
        c00 = c00 + x0 * b0; c01 = c01 + x0 * b1
        c10 = c10 + x1 * b0; c11 = c11 + x1 * b1
        c20 = c20 + x2 * b0; c21 = c21 + x2 * b1
        c30 = c30 + x3 * b0; c31 = c31 + x3 * b1
        pa += aCol
        pb += ldb
    }
    if accumulate {
        c00 = c00 + load16(c); c01 = c01 + load16(c + 16)
        c10 = c10 + load16(c + ldc); c11 = c11 + load16(c + ldc + 16)
        c20 = c20 + load16(c + 2 * ldc); c21 = c21 + load16(c + 2 * ldc + 16)
        c30 = c30 + load16(c + 3 * ldc); c31 = c31 + load16(c + 3 * ldc + 16)
    }
    store16(c00, c); store16(c01, c + 16)
    store16(c10, c + ldc); store16(c11, c + ldc + 16)
    store16(c20, c + 2 * ldc); store16(c21, c + 2 * ldc + 16)
    store16(c30, c + 3 * ldc); store16(c31, c + 3 * ldc + 16)
}

/// One row, any width up to 32: C[1, width] (+)= A[1, kc] · B[kc, width].
@inline(__always)
private func kernelRow(_ kc: Int, _ width: Int, _ a: UnsafePointer<Float>, _ aCol: Int,
                       _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ c: UnsafeMutablePointer<Float>, _ accumulate: Bool) {
    if width == 32 {
        var c0 = V16(), c1 = V16()
        var pa = a, pb = b
        for _ in 0..<kc {
            let x = V16(repeating: pa[0])
            c0 = c0 + x * load16(pb); c1 = c1 + x * load16(pb + 16)
            pa += aCol; pb += ldb
        }
        if accumulate { c0 = c0 + load16(c); c1 = c1 + load16(c + 16) }
        store16(c0, c); store16(c1, c + 16)
        return
    }
    // Narrow edge: 32 scalar accumulators in a fixed-size tuple-free loop.
    var acc = (V16(), V16())
    var pa = a, pb = b
    for _ in 0..<kc {
        let x = pa[0]
        for j in 0..<width {
            if j < 16 { acc.0[j] = acc.0[j] + x * pb[j] } else { acc.1[j - 16] = acc.1[j - 16] + x * pb[j] }
        }
        pa += aCol; pb += ldb
    }
    for j in 0..<width {
        let v = j < 16 ? acc.0[j] : acc.1[j - 16]
        c[j] = accumulate ? c[j] + v : v
    }
}

/// out[j, i] = x[i, j] for an (rows × cols) row-major x.
func transpose(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
    let t = 32
    var i0 = 0
    while i0 < rows {
        let i1 = min(rows, i0 + t)
        var j0 = 0
        while j0 < cols {
            let j1 = min(cols, j0 + t)
            for i in i0..<i1 {
                for j in j0..<j1 { out[j * rows + i] = x[i * cols + j] }
            }
            j0 = j1
        }
        i0 = i1
    }
}
