// Products whose columns are the pixels of a batch of samples, read from and written to the
// samples' own planes.
//
// A 1×1 convolution over small planes (P of 4, 16, 49 or 196 pixels) fills the GEMM's 32-column
// panels badly one sample at a time (49 pixels take 64 columns). Multiplied as one matrix
// (C, B·P) over the batch, its panels are whole; here a panel's columns are gathered from the
// samples while it is packed (it is copied anyway) and a register block that spans two samples
// is staged in the thread's buffer and scattered, so the batch's pixels are never copied into
// one matrix and back (two passes over memory that cost more than the panels saved).

/// Where column j of a matrix lies: pixel j % perSample of sample j / perSample, whose rows are
/// `rowStride` floats apart from the sample's first, the samples `sampleStride` apart.
struct SampleColumns {
    var perSample: Int
    var sampleStride: Int
    var rowStride: Int

    /// Samples of `p` pixels whose (rows, P) planes follow each other `sampleStride` apart.
    static func planes(_ p: Int, sampleStride: Int) -> SampleColumns {
        SampleColumns(perSample: p, sampleStride: sampleStride, rowStride: p)
    }

    /// An ordinary row-major matrix, rows `ld` apart: one sample.
    static func matrix(ld: Int) -> SampleColumns {
        SampleColumns(perSample: Int.max, sampleStride: 0, rowStride: ld)
    }

    /// Calls `body(offset, start, count, sample)` for each sample's run of the columns
    /// j..<j + width: the run's first column within them, its row 0, how many columns it has, and
    /// which sample they are.
    @inline(__always)
    func runs(_ base: UnsafePointer<Float>, _ j: Int, _ width: Int,
              _ body: (Int, UnsafePointer<Float>, Int, Int) -> Void) {
        var offset = 0
        while offset < width {
            let column = j + offset
            let n = column / perSample, q = column % perSample
            let count = min(width - offset, perSample - q)
            body(offset, base + n * sampleStride + q, count, n)
            offset += count
        }
    }
}

/// C[i0..<i1, j0..<j1] = bias + A · B, clamped (a convolution's output write), with B's and C's
/// columns laid out as `bColumns` and `cColumns` say. Each element is summed in the same order as
/// `gemmTile`'s, so the result is the same bits as a product sample by sample. `bRowScale`: row k
/// of sample n's columns of B is multiplied by bRowScale[n · K + k] as it is packed. `addend`: a
/// matrix laid out as C, that many floats past it, added before the clamp (see `Store`).
func gemmSamples(i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
                 a: UnsafePointer<Float>, aRow: Int, aCol: Int,
                 b: UnsafePointer<Float>, _ bColumns: SampleColumns,
                 c: UnsafeMutablePointer<Float>, _ cColumns: SampleColumns,
                 rowBias: UnsafePointer<Float>?, clamp: Clamp, bRowScale: UnsafePointer<Float>? = nil, addend: Int? = nil) {
    let nr = gemmNR, packed = packBuffer(), stage = packed + gemmKC * nr
    var j = j0
    while j < j1 {
        let width = min(nr, j1 - j)
        // A panel within one sample is written in place; one across two is staged.
        let n = j / cColumns.perSample, q = j % cColumns.perSample
        let inPlace = q + width <= cColumns.perSample
        let panelC = c + n * cColumns.sampleStride + q
        var k0 = 0
        while k0 < k {
            let kc = min(gemmKC, k - k0)
            packSampleColumns(b + k0 * bColumns.rowStride, bColumns, j, width, rows: kc,
                              scale: bRowScale.map { ($0 + k0, k) }, into: packed)
            let ak = a + k0 * aCol
            var i = i0
            while i < i1 {
                let rows = min(gemmMR, i1 - i)
                // A staged block's addend and clamp are applied as it is scattered.
                let last = k0 + kc >= k, addsHere = last && addend != nil && !inPlace
                let st = Store(accumulate: k0 > 0, bias: k0 == 0 ? rowBias.map { $0 + i } : nil,
                               clamp: last && !addsHere ? clamp : .none, addend: last && inPlace ? addend : nil)
                let out = inPlace ? panelC + i * cColumns.rowStride : stage
                let ldc = inPlace ? cColumns.rowStride : nr
                let target = c + i * cColumns.rowStride
                if !inPlace && st.accumulate {
                    cColumns.runs(UnsafePointer(target), j, width) { offset, start, count, _ in
                        for r in 0..<rows { copyRow(stage + r * nr + offset, start + r * cColumns.rowStride, count, exact: true) }
                    }
                }
                if rows == gemmMR {
                    registerBlock(kc, ak + i * aRow, aRow, aCol, packed, nr, out, ldc, width, st)
                } else {
                    remainderRows(rows, kc, ak + i * aRow, aRow, aCol, packed, nr, out, ldc, width, st)
                }
                if !inPlace {
                    cColumns.runs(UnsafePointer(target), j, width) { offset, start, count, _ in
                        let start = UnsafeMutablePointer(mutating: start)
                        if addsHere, let addend {
                            for r in 0..<rows {
                                let dst = start + r * cColumns.rowStride, src = stage + r * nr + offset
                                for t in 0..<count { dst[t] = clamp.apply(src[t] + dst[t + addend]) }
                            }
                            return
                        }
                        for r in 0..<rows { copyRow(start + r * cColumns.rowStride, stage + r * nr + offset, count, exact: true) }
                    }
                }
                i += rows
            }
            k0 += kc
        }
        j += nr
    }
}

/// Packs `rows` rows of B's columns j..<j + width (laid out as `columns` says, from `b`'s row 0)
/// into `out` as rows × NR, zero-padding the columns past `width`; with `scale` (its row 0, the
/// floats between two samples' scales), row r of sample n multiplied by scale[n · stride + r].
@inline(__always)
private func packSampleColumns(_ b: UnsafePointer<Float>, _ columns: SampleColumns, _ j: Int, _ width: Int,
                               rows: Int, scale: (UnsafePointer<Float>, Int)?, into out: UnsafeMutablePointer<Float>) {
    let nr = gemmNR, w = V.scalarCount, ld = columns.rowStride
    columns.runs(b, j, width) { offset, start, count, n in
        if let (scale, stride) = scale {
            let own = scale + n * stride
            for r in 0..<rows {
                let s = own[r], src = start + r * ld, dst = out + r * nr + offset
                for t in 0..<count { dst[t] = src[t] * s }
            }
        } else if count == nr {
            for r in 0..<rows {
                store(load(start + r * ld), out + r * nr)
                store(load(start + r * ld + w), out + r * nr + w)
            }
        } else {
            for r in 0..<rows { copyRow(out + r * nr + offset, start + r * ld, count, exact: true) }
        }
    }
    if width < nr {
        for r in 0..<rows { (out + r * nr + width).update(repeating: 0, count: nr - width) }
    }
}
