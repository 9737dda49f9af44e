// A convolution's product without its im2col matrix: each panel of the product's right operand
// (KC rows × NR output positions, as `packB` lays it out) is lowered straight from the
// zero-bordered input, then multiplied where it lies, in L1.
//
// Lowering a whole image first wrote its im2col matrix (3.7 MB for ResNet's 7×7 stem on one
// thread's half of a 224 × 224 image) and packing read it back, K rows as many streams, for a
// product that reads each of its elements once from the packed panel: at batch 1 the lowering
// and the packing took a quarter of that layer's time. Here the panel's positions are cut into
// runs along output rows once, and each of its K rows is a few vector copies (every other input
// at stride 2) from the bordered input.
//
// The same operations in the same order as `gemmTile` over the im2col matrix (each output its
// bias, then its K products in order, then the addend and the clamp): the same bits.

extension ConvGeometry {
    /// Whether `convolveLoweredPanels` takes this convolution: strides of 1 or 2 across (the
    /// runs' vector reads), any down.
    var lowersPanels: Bool { (sw == 1 || sw == 2) && kh * kw > 1 }
}

/// Output positions `columns` of one image (y, OC × P) from its zero-bordered input (`padInput`'s
/// layout, paddedCount floats), weights (OC, CKK), with the bias, the addend (floats past y) and
/// the clamp of the output write. A short K (a first layer's 27) packs as many panels as fit in
/// half of L1 and runs each block of rows along all of them, as `gemmTileShortK` does.
func convolveLoweredPanels(_ padded: UnsafePointer<Float>, _ g: ConvGeometry, weights w: UnsafePointer<Float>, outChannels oc: Int,
                           columns: Range<Int>, bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int?,
                           into y: UnsafeMutablePointer<Float>) {
    let nr = gemmNR, n = V.scalarCount, k = g.colRows, p = g.colCols, ow = g.ow, wp = g.paddedW
    let plane = g.paddedH * wp, taps = g.kh * g.kw, buffer = packBuffer()
    let group = 2 * k * nr <= shortKPanelFloats ? max(1, shortKPanelFloats / (k * nr)) : 1
    withUnsafeTemporaryAllocation(of: (column: Int, count: Int, offset: Int).self, capacity: nr) { runs in
        // Rows k0..<k0 + kc of the panel of `width` positions from j into `dst`.
        func pack(_ j: Int, _ width: Int, _ k0: Int, _ kc: Int, into panel: UnsafeMutablePointer<Float>) {
            // The panel's runs: consecutive positions of one output row, and where their first
            // reads in the bordered plane for tap (0, 0) of channel 0.
            var runCount = 0, t = 0
            while t < width {
                let q = j + t, oy = q / ow, ox = q - oy * ow, count = min(width - t, ow - ox)
                runs[runCount] = (t, count, oy * g.sh * wp + ox * g.sw)
                runCount += 1
                t += count
            }
            // Row r: tap (ki, kj) of channel c. Whole vectors are written, up to a vector past a
            // run (into the next run or row, written after it, or past the last row: the next
            // panel's first, or the buffer's staging block), and read up to two vectors past an
            // input row (the next rows, or the bordered input's slack). The tap is counted along,
            // not divided out of the row (its two divisions were 7 % of this function's samples on
            // ResNet-18's 7×7 stem).
            var c = k0 / taps, ki = (k0 % taps) / g.kw, kj = k0 % taps % g.kw
            // How far this row's tap (ki, kj) of channel c reads past tap (0, 0) of channel 0; the
            // counters then move on to the next row's tap.
            @inline(__always) func nextTap() -> Int {
                let at = c * plane + ki * wp + kj
                kj += 1
                if kj == g.kw {
                    kj = 0
                    ki += 1
                    if ki == g.kh { (ki, c) = (0, c + 1) }
                }
                return at
            }
            if runCount == 1 && width == nr {
                // The panel is one stretch of an output row (a wide layer's usual case): each row
                // is two vector copies, without the loop over runs (that loop took 18 % of
                // ResNet-18's 7×7 stride-2 stem, as much as the four-row block's share).
                let base = padded + runs[0].offset
                for r in 0..<kc {
                    let src = base + nextTap(), dst = panel + r * nr
                    if g.sw == 1 {
                        store(load(src), dst)
                        store(load(src + n), dst + n)
                    } else {
                        store(evenElements(src), dst)
                        store(evenElements(src + 2 * n), dst + n)
                    }
                }
                return
            }
            for r in 0..<kc {
                let src = padded + nextTap(), dst = panel + r * nr
                for run in 0..<runCount {
                    let (column, count, offset) = runs[run]
                    var i = 0
                    if g.sw == 1 {
                        while i < count { store(load(src + (offset + i)), dst + (column + i)); i += n }
                    } else {
                        while i < count { store(evenElements(src + (offset + 2 * i)), dst + (column + i)); i += n }
                    }
                }
                if width < nr { (dst + width).update(repeating: 0, count: nr - width) }
            }
        }
        var j = columns.lowerBound
        while j < columns.upperBound {
            let end = min(columns.upperBound, j + group * nr)
            var k0 = 0
            while k0 < k {
                let kc = min(gemmKC, k - k0)
                for jj in stride(from: j, to: end, by: nr) {
                    pack(jj, min(nr, end - jj), k0, kc, into: buffer + (jj - j) / nr * kc * nr)
                }
                let last = k0 + kc >= k
                var i = 0
                while i < oc {
                    let st = Store(accumulate: k0 > 0, bias: k0 == 0 ? bias.map { $0 + i } : nil, clamp: last ? clamp : .none,
                                   addend: last ? addend : nil)
                    let rows = min(gemmMR, oc - i)
                    for jj in stride(from: j, to: end, by: nr) {
                        let panel = buffer + (jj - j) / nr * kc * nr, width = min(nr, end - jj)
                        if rows == gemmMR {
                            registerBlock(kc, w + i * k + k0, k, 1, panel, nr, y + i * p + jj, p, width, st)
                        } else {
                            remainderRows(rows, kc, w + i * k + k0, k, 1, panel, nr, y + i * p + jj, p, width, st)
                        }
                    }
                    i += rows
                }
                k0 += kc
            }
            j = end
        }
    }
}
