#if canImport(Glibc)
import Glibc
#endif

// Single-precision matrix product, the kernel under convolution and dense layers.
//
//   C[M, N] = (accumulate ? C : 0) + A[M, K] · B[K, N]
//
// A and B are read through two strides each, so transposes cost nothing: A's element (i, k) is
// a[i * aRow + k * aCol] (row-major A: aRow = lda, aCol = 1; stored transposed: aRow = 1,
// aCol = lda), B's element (k, j) is b[k * ldb + j * bCol] (bCol = 1 row-major; stored
// transposed: ldb = 1, bCol = its leading dimension, gathered while packing). C is row-major.
//
// Blocking (BLIS-style, sized for 48 KiB L1d / 2 MiB L2): for each panel of NR columns of B and
// each block of KC rows, the KC × NR piece of B is packed contiguously (zero-padded at the right
// edge) into a stack buffer that stays in L1, then every MR-row block of A streams over it through
// the register-blocked microkernel: MR × NR accumulators (8 × 32 with AVX-512, 6 × 16 with AVX2),
// one broadcast of A and two vector loads of B per k. Each element of C is always summed in the
// same order, whatever the tiling into tasks, so a parallel product is bit-identical to a serial
// one. Build flags (see the Makefile): CNN_FMA fuses multiply-adds (vfmadd...ps; without a target
// CPU Swift would call libm's fmaf instead), CNN_AVX512 selects the 16-wide vectors (SIMD.swift).

/// Rows and columns of the register block: 8 × 32 with AVX-512 (16 of its 32 vector registers
/// accumulate), 6 × 16 with AVX2 (12 of 16). 8 rows also divide the layers' usual sizes (32, 64,
/// 128 channels, batch 64), so no row falls to the one-row kernel.
#if CNN_AVX512
let gemmMR = 8
#else
let gemmMR = 6
#endif
let gemmNR = 2 * V.scalarCount
/// Rows of B packed at a time: KC × NR floats (32 KiB with AVX-512) stay in L1.
let gemmKC = 320
/// Floats of packed panels a short-K product keeps (`gemmTileShortK`): half of L1, 16 KiB.
let shortKPanelFloats = 4096
/// The same for a product of few rows (at most four register blocks, 32 rows with AVX-512 and 24
/// with AVX2: a 1×1 convolution down to 16-32 channels): 128 KiB, in L2. Such a product is bound
/// by reading B, each of its K rows a stream through memory; packing more panels at a time reads
/// each row in longer runs.
let fewRowsPanelFloats = 32768

/// The largest tile of C one task computes.
private let maxTileRows = 48
private let maxTileCols = 128

/// C = (accumulate ? C : 0) + A·B. `parallel` spreads tiles of C over the shared pool.
func gemm(m: Int, n: Int, k: Int,
          a: UnsafePointer<Float>, aRow: Int, aCol: Int,
          b: UnsafePointer<Float>, ldb: Int, bCol: Int = 1,
          c: UnsafeMutablePointer<Float>, ldc: Int,
          accumulate: Bool, rowBias: UnsafePointer<Float>? = nil, clamp: Clamp = .none, parallel: Bool = false,
          bRowScale: UnsafePointer<Float>? = nil, addend: Int? = nil) {
    if m <= 0 || n <= 0 { return }
    if k <= 0 {
        if !accumulate {
            for i in 0..<m {
                for j in 0..<n {
                    let v = rowBias?[i] ?? 0
                    c[i * ldc + j] = clamp.apply(addend.map { v + c[i * ldc + j + $0] } ?? v)
                }
            }
        }
        return
    }
    // A few rows (a small batch through a dense layer) stream B unpacked; narrower column tiles
    // then split that stream over the threads, each keeping its part of B in its own cache.
    var tileCols = m < gemmMR ? 2 * gemmNR : maxTileCols
    let rowTiles = (m + maxTileRows - 1) / maxTileRows
    // The rows shared evenly between the row tiles (64 rows: 32 + 32, not 48 + 16).
    let tileRows = ((m + rowTiles - 1) / rowTiles + gemmMR - 1) / gemmMR * gemmMR
    // Fewer tiles than threads (a batch of 32 through a dense layer of 128): narrower column
    // tiles, down to one panel. The tiling never changes a result, only who computes it.
    while parallel && rowTiles * ((n + tileCols - 1) / tileCols) < ThreadPool.shared.threads && tileCols > gemmNR {
        tileCols /= 2
    }
    let colTiles = (n + tileCols - 1) / tileCols
    let tiles = rowTiles * colTiles
    if parallel && tiles > 1 && m * n * k >= 1 << 17 {
        ThreadPool.shared.parallelFor(tiles) { t in
            let i0 = (t / colTiles) * tileRows, j0 = (t % colTiles) * tileCols
            gemmTile(i0: i0, i1: min(m, i0 + tileRows), j0: j0, j1: min(n, j0 + tileCols), k: k,
                     a: a, aRow: aRow, aCol: aCol, b: b, ldb: ldb, bCol: bCol, c: c, ldc: ldc, accumulate: accumulate,
                     rowBias: rowBias, clamp: clamp, bRowScale: bRowScale, addend: addend)
        }
    } else {
        gemmTile(i0: 0, i1: m, j0: 0, j1: n, k: k, a: a, aRow: aRow, aCol: aCol, b: b, ldb: ldb, bCol: bCol,
                 c: c, ldc: ldc, accumulate: accumulate, rowBias: rowBias, clamp: clamp, bRowScale: bRowScale, addend: addend)
    }
}

/// This thread's buffer for packed panels of B (KC × NR floats, or a few-rows product's
/// `fewRowsPanelFloats`; 64-byte aligned), with room for one register block's MR × NR floats past
/// KC × NR (`gemmSamples`' staging block, which packs no more than KC rows), allocated on the
/// thread's first product and kept until it exits: a product allocates nothing.
private let packKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

@inline(__always)
func packBuffer() -> UnsafeMutablePointer<Float> {
    if let p = pthread_getspecific(packKey) { return p.assumingMemoryBound(to: Float.self) }
    var raw: UnsafeMutableRawPointer? = nil
    posix_memalign(&raw, 64, (max(gemmKC * gemmNR, fewRowsPanelFloats) + gemmMR * gemmNR) * MemoryLayout<Float>.size)
    pthread_setspecific(packKey, raw)
    return raw!.assumingMemoryBound(to: Float.self)
}

func gemmTile(i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
              a: UnsafePointer<Float>, aRow: Int, aCol: Int,
              b: UnsafePointer<Float>, ldb: Int, bCol: Int = 1, panelStride: Int = 0, bInPlace: Bool = false,
              c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
              rowBias: UnsafePointer<Float>? = nil, clamp: Clamp = .none, bRowScale: UnsafePointer<Float>? = nil,
              addend: Int? = nil) {
    let nr = gemmNR
    // Row k0 of the panel that starts at column j (with `panelStride`, B is stored as the GEMM's
    // own zero-padded panels, panelStride floats apart, rows NR apart: read in place, and j0 is a
    // panel's first column).
    @inline(__always) func panel(_ j: Int, _ k0: Int) -> UnsafePointer<Float> {
        panelStride > 0 ? b + j / nr * panelStride + k0 * nr : b + k0 * ldb + j * bCol
    }
    // How far apart the rows are where `panel` points.
    let panelRows = panelStride > 0 ? nr : ldb
    // How block k0 of K is written: the first adds to C or stores (plus the row's bias), the
    // last adds the addend and applies the clamp.
    @inline(__always) func store(_ k0: Int, _ kc: Int, _ i: Int) -> Store {
        Store(accumulate: accumulate || k0 > 0, bias: k0 == 0 ? rowBias.map { $0 + i } : nil, clamp: k0 + kc >= k ? clamp : .none,
              addend: k0 + kc >= k ? addend : nil)
    }
    // `bRowScale`: B's row k is multiplied by bRowScale[k] as it is packed (a squeeze-and-excitation
    // gate on the product's input channels), so such a B is always packed.
    if i1 - i0 < gemmMR && (bCol == 1 || panelStride > 0) && bRowScale == nil {
        // A few rows (inference on a small batch): packing B would cost as much as the product,
        // so the rows stream over B as it is, two panels at a time (four independent chains of
        // multiply-adds: one panel's two chains wait on the multiply-add's latency, half the
        // speed; `gemm` splits such products into tiles of two panels). A panel narrower than NR
        // is packed, zero-padded, unless B is stored as panels. Same operations in the same
        // order as the packed path.
        var j = j0
        while j < j1 {
            let panels = (j1 - j) / nr
            if panels > 0 || panelStride > 0 {
                let step = panels >= 2 ? 2 : 1, width = min(nr, j1 - j)
                for i in i0..<i1 {
                    var k0 = 0
                    while k0 < k {
                        let kc = min(gemmKC, k - k0)
                        let ai = a + i * aRow + k0 * aCol, ci = c + i * ldc + j
                        if step == 2 {
                            kernelRow2(kc, ai, aCol, panel(j, k0), panel(j + nr, k0), panelRows, ci, store(k0, kc, i))
                        } else {
                            kernelRow(kc, ai, aCol, panel(j, k0), panelRows, ci, width, store(k0, kc, i))
                        }
                        k0 += kc
                    }
                }
                j += step == 2 ? 2 * nr : width
            } else {
                let width = j1 - j, packed = packBuffer()
                var k0 = 0
                while k0 < k {
                    let kc = min(gemmKC, k - k0)
                    packB(b + k0 * ldb + j, ldb: ldb, bCol: 1, rows: kc, width: width, into: packed)
                    for i in i0..<i1 {
                        kernelRow(kc, a + i * aRow + k0 * aCol, aCol, packed, nr, c + i * ldc + j, width, store(k0, kc, i))
                    }
                    k0 += kc
                }
                j = j1
            }
        }
        return
    }
    do {
        let buffer = packBuffer()
        // B stored as panels, or made of one whole panel's rows (NR apart), is already packed.
        // With `bInPlace` (the caller's B has NR readable columns in every panel: Winograd's
        // transformed input) the kernel reads B's rows, ldb apart, where they are, as long as
        // they span at most 16 KiB: in L1, without the set conflicts of rows a large power of two
        // apart. Packing such a B cost a copy of it per product (7 % of a batch-1 convolution).
        let prepacked = bRowScale == nil && (panelStride > 0 || bCol == 1 && (ldb == nr && j1 - j0 == nr || bInPlace && min(k, gemmKC) * ldb <= 4096))
        let bStep = prepacked ? panelRows : nr
        // (K within one block of KC: each element is then summed as the loop below sums it, so a
        // task's rows choosing the other path change no bits.)
        let panelFloats = i1 - i0 <= 4 * gemmMR && k <= gemmKC ? fewRowsPanelFloats : shortKPanelFloats
        if !prepacked && 2 * k * nr <= panelFloats && j1 - j0 > nr && i1 - i0 > gemmMR {
            return gemmTileShortK(i0: i0, i1: i1, j0: j0, j1: j1, k: k, a: a, aRow: aRow, aCol: aCol, b: b, ldb: ldb, bCol: bCol,
                                  bRowScale: bRowScale, c: c, ldc: ldc, buffer: buffer, panelFloats: panelFloats, store: store(0, k, i0))
        }
        var j = j0
        while j < j1 {
            let width = min(nr, j1 - j)
            var k0 = 0
            while k0 < k {
                let kc = min(gemmKC, k - k0)
                let packed = prepacked ? panel(j, k0) : UnsafePointer(buffer)
                if !prepacked {
                    packB(b + k0 * ldb + j * bCol, ldb: ldb, bCol: bCol, rows: kc, width: width, scale: bRowScale.map { $0 + k0 }, into: buffer)
                }
                let ak = a + k0 * aCol
                var i = i0
                while i + gemmMR <= i1 {
                    registerBlock(kc, ak + i * aRow, aRow, aCol, packed, bStep, c + i * ldc + j, ldc, width, store(k0, kc, i))
                    i += gemmMR
                }
                if i < i1 {
                    remainderRows(i1 - i, kc, ak + i * aRow, aRow, aCol, packed, bStep, c + i * ldc + j, ldc, width, store(k0, kc, i))
                }
                k0 += kc
            }
            j += nr
        }
    }
}

/// A short K (a 1×1 convolution expanding 16 to 96 channels): as many panels of B as fit in half
/// of L1 are packed, then each register block of rows runs along all of them, so
/// that C is written a block of rows at a time, in runs of up to 16 KiB / K columns, instead of
/// a panel's 128 bytes in each of M rows (as many write streams as rows: at 12544 columns the
/// product was twice ONNX Runtime's time). The same operations in the same order as `gemmTile`'s.
@inline(never)
private func gemmTileShortK(i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
                            a: UnsafePointer<Float>, aRow: Int, aCol: Int,
                            b: UnsafePointer<Float>, ldb: Int, bCol: Int, bRowScale: UnsafePointer<Float>?,
                            c: UnsafeMutablePointer<Float>, ldc: Int, buffer: UnsafeMutablePointer<Float>, panelFloats: Int,
                            store first: Store) {
    // The packed panels stay in half of L1 (8 panels at K = 16, 2 at K = 64), or in L2 (few rows).
    let nr = gemmNR, panels = max(1, panelFloats / (k * nr))
    var j = j0
    while j < j1 {
        let end = min(j1, j + panels * nr)
        var p = 0
        if bCol == 1 && bRowScale == nil && (end - j) / nr >= 2 {
            // The whole panels a row of B at a time: each row is read in one run through memory.
            // (Packed a panel at a time, each row's run was read in pieces of 128 bytes, K rows
            // apart: projections to 16-32 channels at batch 32 took 1.05-1.14× this time.)
            let whole = (end - j) / nr
            for r in 0..<k {
                for q in 0..<whole {
                    packB(b + r * ldb + j + q * nr, ldb: ldb, bCol: 1, rows: 1, width: nr, into: buffer + q * k * nr + r * nr)
                }
            }
            p = whole
            if j + whole * nr < end {
                packB(b + j + whole * nr, ldb: ldb, bCol: 1, rows: k, width: end - j - whole * nr, into: buffer + p * k * nr)
                p += 1
            }
        } else {
            for jj in stride(from: j, to: end, by: nr) {
                packB(b + jj * bCol, ldb: ldb, bCol: bCol, rows: k, width: min(nr, end - jj), scale: bRowScale, into: buffer + p * k * nr)
                p += 1
            }
        }
        var i = i0
        while i + gemmMR <= i1 {
            p = 0
            for jj in stride(from: j, to: end, by: nr) {
                registerBlock(k, a + i * aRow, aRow, aCol, buffer + p * k * nr, nr, c + i * ldc + jj, ldc, min(nr, end - jj), first.fromRow(i - i0))
                p += 1
            }
            i += gemmMR
        }
        if i < i1 {
            p = 0
            for jj in stride(from: j, to: end, by: nr) {
                remainderRows(i1 - i, k, a + i * aRow, aRow, aCol, buffer + p * k * nr, nr, c + i * ldc + jj, ldc, min(nr, end - jj), first.fromRow(i - i0))
                p += 1
            }
        }
        j = end
    }
}

/// Aᵀ (K, rows) of a row-major A (rows, K) as the GEMM's panels of B: [r / NR][k][r % NR], rows
/// a multiple of NR (a convolution's weights, the right operand of a transposed product).
func packTransposedPanels(_ a: UnsafePointer<Float>, rows: Int, k: Int, into out: UnsafeMutablePointer<Float>) {
    let nr = gemmNR
    for r in 0..<rows {
        let panel = out + r / nr * k * nr + r % nr, src = a + r * k
        for kk in 0..<k { panel[kk * nr] = src[kk] }
    }
}

/// Copies rows × width of B into `out` as rows × NR, zero-padding the columns past `width`; with
/// `scale`, row r multiplied by scale[r].
@inline(__always)
func packB(_ b: UnsafePointer<Float>, ldb: Int, bCol: Int, rows: Int, width: Int, scale: UnsafePointer<Float>? = nil,
           into out: UnsafeMutablePointer<Float>) {
    let nr = gemmNR, w = V.scalarCount
    if bCol == 1 && width == nr {
        if let scale {
            for r in 0..<rows {
                let src = b + r * ldb, dst = out + r * nr, s = V(repeating: scale[r])
                store(load(src) * s, dst)
                store(load(src + w) * s, dst + w)
            }
            return
        }
        for r in 0..<rows {
            let src = b + r * ldb, dst = out + r * nr
            store(load(src), dst)
            store(load(src + w), dst + w)
        }
        return
    }
    // A partial panel, or transposed storage (bCol > 1: each packed row gathers one element from
    // each of `width` columns).
    for r in 0..<rows {
        let src = b + r * ldb, dst = out + r * nr
        if let s = scale?[r] {
            for j in 0..<width { dst[j] = src[j * bCol] * s }
        } else {
            for j in 0..<width { dst[j] = src[j * bCol] }
        }
        for j in width..<nr { dst[j] = 0 }
    }
}

/// How a register block is written into C: added to it or stored, with the row's bias added
/// (`bias` points at the block's first row), then another matrix of C's layout added (`addend`:
/// its element (i, j) lies that many floats past C's, a residual block's shortcut) and the clamp
/// applied (a convolution's fused epilogue). Each element is summed as the separate layers would:
/// ((bias + A·B) + addend), then clamped.
struct Store {
    var accumulate: Bool
    var bias: UnsafePointer<Float>?
    var clamp: Clamp
    var addend: Int? = nil

    /// The same write for the rows from `r` on: the bias pointer moves with them.
    @_transparent
    func fromRow(_ r: Int) -> Store {
        var shifted = self
        shifted.bias = bias.map { $0 + r }
        return shifted
    }

    /// The clamp applied to `v`, computed for the floats at `c`: after the addend's, if any.
    @_transparent
    func finish(_ v: V, _ c: UnsafeMutablePointer<Float>) -> V {
        guard let addend else { return clamp.apply(v) }
        return clamp.apply(v + load(c + addend))
    }

    @_transparent
    func finish(_ x: Float, _ c: UnsafeMutablePointer<Float>) -> Float {
        guard let addend else { return clamp.apply(x) }
        return clamp.apply(x + c[addend])
    }
}

/// Writes an accumulator pair into row `r` of the block, all NR columns or the first `width`.
@_transparent   // @inline(__always) left some of the eight calls in kernel8 out of line
func storeRow(_ lo: V, _ hi: V, _ c: UnsafeMutablePointer<Float>, _ width: Int, _ st: Store, _ r: Int) {
    let w = V.scalarCount
    var lo = lo, hi = hi
    if let b = st.bias {
        lo = V(repeating: b[r]) + lo
        hi = V(repeating: b[r]) + hi
    }
    if width == 2 * w {
        if st.accumulate {
            lo = load(c) + lo
            hi = load(c + w) + hi
        }
        (lo, hi) = (st.finish(lo, c), st.finish(hi, c + w))
        store(lo, c)
        store(hi, c + w)
        return
    }
    storePartialRow(lo, hi, c, width, st)
}

/// Writes one accumulator into row `r` of the block: a panel's first `width` ≤ V.scalarCount columns.
@_transparent
func storeHalfRow(_ lo: V, _ c: UnsafeMutablePointer<Float>, _ width: Int, _ st: Store, _ r: Int) {
    var lo = lo
    if let b = st.bias { lo = V(repeating: b[r]) + lo }
    guard width == V.scalarCount else { return storePartialRow(lo, V(), c, width, st) }
    if st.accumulate { lo = load(c) + lo }
    lo = st.finish(lo, c)
    store(lo, c)
}

/// The first `width` < NR columns (the right edge of C), kept out of line: a whole first vector
/// as one, the rest a column at a time.
@inline(never)
private func storePartialRow(_ lo: V, _ hi: V, _ c: UnsafeMutablePointer<Float>, _ width: Int, _ st: Store) {
    let w = V.scalarCount
    var (part, c, width) = (lo, c, width)
    if width >= w {
        store(st.finish(st.accumulate ? load(c) + lo : lo, c), c)
        (part, c, width) = (hi, c + w, width - w)
    }
    for j in 0..<width {
        c[j] = st.finish(st.accumulate ? c[j] + part[j] : part[j], c + j)
    }
}

/// One register block of MR rows: C[MR, NR] (+)= A[MR, kc] · B[kc, NR] (packed, or rows ldb
/// apart), `width` columns written. A panel at most half full (16 output channels in AVX-512's 32
/// columns) takes the block's first vector only: the same operations on its columns, half of them.
@inline(__always)
func registerBlock(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                   _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                   _ width: Int, _ st: Store) {
    #if CNN_AVX512
    if width <= V.scalarCount {
        kernel8Half(kc, a, aRow, aCol, b, ldb, c, ldc, width, st)
    } else {
        kernel8(kc, a, aRow, aCol, b, ldb, c, ldc, width, st)
    }
    #else
    if width <= V.scalarCount {
        kernel6Half(kc, a, aRow, aCol, b, ldb, c, ldc, width, st)
    } else {
        kernel6(kc, a, aRow, aCol, b, ldb, c, ldc, width, st)
    }
    #endif
}

/// The register block: C[6, NR] (+)= A[6, kc] · B[kc, NR] (packed, or rows ldb apart).
@inline(__always)
private func kernel6(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                     _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ width: Int, _ st: Store) {
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
    var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow), a2 = rowPointer(a, 2, aRow), a3 = rowPointer(a, 3, aRow)
    let a4 = rowPointer(a, 4, aRow), a5 = rowPointer(a, 5, aRow)
    var o = 0, pb = b
    let w = V.scalarCount
    for _ in 0..<kc {
        let b0 = load(pb), b1 = load(pb + w)
        var x = V(repeating: a0[o])
        c00 = fmadd(c00, x, b0); c01 = fmadd(c01, x, b1)
        x = V(repeating: a1[o])
        c10 = fmadd(c10, x, b0); c11 = fmadd(c11, x, b1)
        x = V(repeating: a2[o])
        c20 = fmadd(c20, x, b0); c21 = fmadd(c21, x, b1)
        x = V(repeating: a3[o])
        c30 = fmadd(c30, x, b0); c31 = fmadd(c31, x, b1)
        x = V(repeating: a4[o])
        c40 = fmadd(c40, x, b0); c41 = fmadd(c41, x, b1)
        x = V(repeating: a5[o])
        c50 = fmadd(c50, x, b0); c51 = fmadd(c51, x, b1)
        o &+= aCol
        pb += ldb
    }
    storeRow(c00, c01, c, width, st, 0)
    storeRow(c10, c11, c + ldc, width, st, 1)
    storeRow(c20, c21, c + 2 * ldc, width, st, 2)
    storeRow(c30, c31, c + 3 * ldc, width, st, 3)
    storeRow(c40, c41, c + 4 * ldc, width, st, 4)
    storeRow(c50, c51, c + 5 * ldc, width, st, 5)
}

/// kernel6 on the first V.scalarCount columns of the panel only.
@inline(__always)
private func kernel6Half(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                         _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                         _ width: Int, _ st: Store) {
    var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow), a2 = rowPointer(a, 2, aRow), a3 = rowPointer(a, 3, aRow)
    let a4 = rowPointer(a, 4, aRow), a5 = rowPointer(a, 5, aRow)
    var o = 0, pb = b
    for _ in 0..<kc {
        let b0 = load(pb)
        c0 = fmadd(c0, V(repeating: a0[o]), b0)
        c1 = fmadd(c1, V(repeating: a1[o]), b0)
        c2 = fmadd(c2, V(repeating: a2[o]), b0)
        c3 = fmadd(c3, V(repeating: a3[o]), b0)
        c4 = fmadd(c4, V(repeating: a4[o]), b0)
        c5 = fmadd(c5, V(repeating: a5[o]), b0)
        o &+= aCol
        pb += ldb
    }
    storeHalfRow(c0, c, width, st, 0)
    storeHalfRow(c1, c + ldc, width, st, 1)
    storeHalfRow(c2, c + 2 * ldc, width, st, 2)
    storeHalfRow(c3, c + 3 * ldc, width, st, 3)
    storeHalfRow(c4, c + 4 * ldc, width, st, 4)
    storeHalfRow(c5, c + 5 * ldc, width, st, 5)
}

/// kernel8 on the first V.scalarCount columns of the panel only.
@inline(__always)
private func kernel8Half(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                         _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                         _ width: Int, _ st: Store) {
    var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V(), c6 = V(), c7 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow), a2 = rowPointer(a, 2, aRow), a3 = rowPointer(a, 3, aRow)
    let a4 = rowPointer(a, 4, aRow), a5 = rowPointer(a, 5, aRow), a6 = rowPointer(a, 6, aRow), a7 = rowPointer(a, 7, aRow)
    var o = 0, pb = b
    for _ in 0..<kc {
        let b0 = load(pb)
        c0 = fmadd(c0, V(repeating: a0[o]), b0)
        c1 = fmadd(c1, V(repeating: a1[o]), b0)
        c2 = fmadd(c2, V(repeating: a2[o]), b0)
        c3 = fmadd(c3, V(repeating: a3[o]), b0)
        c4 = fmadd(c4, V(repeating: a4[o]), b0)
        c5 = fmadd(c5, V(repeating: a5[o]), b0)
        c6 = fmadd(c6, V(repeating: a6[o]), b0)
        c7 = fmadd(c7, V(repeating: a7[o]), b0)
        o &+= aCol
        pb += ldb
    }
    storeHalfRow(c0, c, width, st, 0)
    storeHalfRow(c1, c + ldc, width, st, 1)
    storeHalfRow(c2, c + 2 * ldc, width, st, 2)
    storeHalfRow(c3, c + 3 * ldc, width, st, 3)
    storeHalfRow(c4, c + 4 * ldc, width, st, 4)
    storeHalfRow(c5, c + 5 * ldc, width, st, 5)
    storeHalfRow(c6, c + 6 * ldc, width, st, 6)
    storeHalfRow(c7, c + 7 * ldc, width, st, 7)
}

/// The AVX-512 register block: C[8, NR] (+)= A[8, kc] · B[kc, NR] (packed, or rows ldb apart).
@inline(__always)
private func kernel8(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                     _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ width: Int, _ st: Store) {
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V(), c30 = V(), c31 = V()
    var c40 = V(), c41 = V(), c50 = V(), c51 = V(), c60 = V(), c61 = V(), c70 = V(), c71 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow), a2 = rowPointer(a, 2, aRow), a3 = rowPointer(a, 3, aRow)
    let a4 = rowPointer(a, 4, aRow), a5 = rowPointer(a, 5, aRow), a6 = rowPointer(a, 6, aRow), a7 = rowPointer(a, 7, aRow)
    var o = 0, pb = b
    let w = V.scalarCount
    for _ in 0..<kc {
        let b0 = load(pb), b1 = load(pb + w)
        var x = V(repeating: a0[o])
        c00 = fmadd(c00, x, b0); c01 = fmadd(c01, x, b1)
        x = V(repeating: a1[o])
        c10 = fmadd(c10, x, b0); c11 = fmadd(c11, x, b1)
        x = V(repeating: a2[o])
        c20 = fmadd(c20, x, b0); c21 = fmadd(c21, x, b1)
        x = V(repeating: a3[o])
        c30 = fmadd(c30, x, b0); c31 = fmadd(c31, x, b1)
        x = V(repeating: a4[o])
        c40 = fmadd(c40, x, b0); c41 = fmadd(c41, x, b1)
        x = V(repeating: a5[o])
        c50 = fmadd(c50, x, b0); c51 = fmadd(c51, x, b1)
        x = V(repeating: a6[o])
        c60 = fmadd(c60, x, b0); c61 = fmadd(c61, x, b1)
        x = V(repeating: a7[o])
        c70 = fmadd(c70, x, b0); c71 = fmadd(c71, x, b1)
        o &+= aCol
        pb += ldb
    }
    storeRow(c00, c01, c, width, st, 0)
    storeRow(c10, c11, c + ldc, width, st, 1)
    storeRow(c20, c21, c + 2 * ldc, width, st, 2)
    storeRow(c30, c31, c + 3 * ldc, width, st, 3)
    storeRow(c40, c41, c + 4 * ldc, width, st, 4)
    storeRow(c50, c51, c + 5 * ldc, width, st, 5)
    storeRow(c60, c61, c + 6 * ldc, width, st, 6)
    storeRow(c70, c71, c + 7 * ldc, width, st, 7)
}

/// The rows below the last whole register block (fewer than MR): blocks of 4 and 2 rows (8 and 4
/// independent chains of multiply-adds), then one. One row's two chains wait on the multiply-add's
/// latency: with AVX2's 6-row block, a 16-channel layer's last 4 rows took as long as its first 12
/// (the one-row kernel was 14 % of ResNet-20's inference). Each element is computed as by the
/// block: the same multiply-adds in the same order.
@inline(__always)
func remainderRows(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                   _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                   _ width: Int, _ st: Store) {
    var r = 0
    if rows >= 4 {
        kernel4(kc, a, aRow, aCol, b, ldb, c, ldc, width, st)
        r = 4
    }
    if rows - r >= 2 {
        kernel2(kc, a + r * aRow, aRow, aCol, b, ldb, c + r * ldc, ldc, width, st.fromRow(r))
        r += 2
    }
    if r < rows {
        kernelRow(kc, a + r * aRow, aCol, b, ldb, c + r * ldc, width, st.fromRow(r))
    }
}

/// Four rows: C[4, NR] (+)= A[4, kc] · B[kc, NR].
@inline(never)   // (one call per remainder block and panel: small against its kc multiply-adds)
private func kernel4(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                     _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ width: Int, _ st: Store) {
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V(), c30 = V(), c31 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow), a2 = rowPointer(a, 2, aRow), a3 = rowPointer(a, 3, aRow)
    var o = 0, pb = b
    let w = V.scalarCount
    for _ in 0..<kc {
        let b0 = load(pb), b1 = load(pb + w)
        var x = V(repeating: a0[o])
        c00 = fmadd(c00, x, b0); c01 = fmadd(c01, x, b1)
        x = V(repeating: a1[o])
        c10 = fmadd(c10, x, b0); c11 = fmadd(c11, x, b1)
        x = V(repeating: a2[o])
        c20 = fmadd(c20, x, b0); c21 = fmadd(c21, x, b1)
        x = V(repeating: a3[o])
        c30 = fmadd(c30, x, b0); c31 = fmadd(c31, x, b1)
        o &+= aCol
        pb += ldb
    }
    storeRow(c00, c01, c, width, st, 0)
    storeRow(c10, c11, c + ldc, width, st, 1)
    storeRow(c20, c21, c + 2 * ldc, width, st, 2)
    storeRow(c30, c31, c + 3 * ldc, width, st, 3)
}

/// Two rows: C[2, NR] (+)= A[2, kc] · B[kc, NR].
@inline(never)
private func kernel2(_ kc: Int, _ a: UnsafePointer<Float>, _ aRow: Int, _ aCol: Int,
                     _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ width: Int, _ st: Store) {
    var c00 = V(), c01 = V(), c10 = V(), c11 = V()
    let a0 = a, a1 = rowPointer(a, 1, aRow)
    var o = 0, pb = b
    let w = V.scalarCount
    for _ in 0..<kc {
        let b0 = load(pb), b1 = load(pb + w)
        var x = V(repeating: a0[o])
        c00 = fmadd(c00, x, b0); c01 = fmadd(c01, x, b1)
        x = V(repeating: a1[o])
        c10 = fmadd(c10, x, b0); c11 = fmadd(c11, x, b1)
        o &+= aCol
        pb += ldb
    }
    storeRow(c00, c01, c, width, st, 0)
    storeRow(c10, c11, c + ldc, width, st, 1)
}

/// One row: C[1, NR] (+)= A[1, kc] · B[kc, NR], the same operations as the block's rows. B's rows
/// are ldb apart and hold NR readable columns (the packed, zero-padded panel, or B itself);
/// `width` columns are written.
@inline(__always)
func kernelRow(_ kc: Int, _ a: UnsafePointer<Float>, _ aCol: Int,
                       _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>,
                       _ width: Int, _ st: Store) {
    let w = V.scalarCount
    var c0 = V(), c1 = V()
    var pa = a, pb = b
    for _ in 0..<kc {
        let x = V(repeating: pa[0])
        c0 = fmadd(c0, x, load(pb)); c1 = fmadd(c1, x, load(pb + w))
        pa += aCol
        pb += ldb
    }
    storeRow(c0, c1, c, width, st, 0)
}

/// One row, two whole panels (the second's rows at `b1`): C[1, 2·NR] (+)= A[1, kc] · B[kc, 2·NR].
@inline(__always)
private func kernelRow2(_ kc: Int, _ a: UnsafePointer<Float>, _ aCol: Int,
                        _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>, _ ldb: Int,
                        _ c: UnsafeMutablePointer<Float>, _ st: Store) {
    let w = V.scalarCount
    var c0 = V(), c1 = V(), c2 = V(), c3 = V()
    var pa = a, p0 = b0, p1 = b1
    for _ in 0..<kc {
        let x = V(repeating: pa[0])
        c0 = fmadd(c0, x, load(p0)); c1 = fmadd(c1, x, load(p0 + w))
        c2 = fmadd(c2, x, load(p1)); c3 = fmadd(c3, x, load(p1 + w))
        pa += aCol
        p0 += ldb
        p1 += ldb
    }
    storeRow(c0, c1, c, 2 * w, st, 0)
    storeRow(c2, c3, c + 2 * w, 2 * w, st, 0)
}

/// The engine's matrix product for callers outside the module (benchmarks, tools):
/// C (M×N) = (accumulate ? C : 0) + op(A) · B, with op(A) = A (M×K) or Aᵀ (A stored K×M).
public func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, transposeA: Bool = false,
                  b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                  parallel: Bool = true) {
    gemm(m: m, n: n, k: k, a: a, aRow: transposeA ? 1 : k, aCol: transposeA ? m : 1, b: b, ldb: n,
         c: c, ldc: n, accumulate: accumulate, parallel: parallel)
}
