// im2col turns convolution into a matrix product; col2im is its adjoint.
//
// C = input channels, H×W = input size, KH×KW = kernel, OH×OW = output size.
// x is (C, H, W) for one sample; col is (C·KH·KW, OH·OW): row (c, ki, kj) holds, for every output
// position, the input pixel that kernel tap sees (0 where it falls in the zero padding).

struct ConvGeometry: Equatable {
    var c: Int, h: Int, w: Int
    var kh: Int, kw: Int
    var sh: Int, sw: Int
    var ph: Int, pw: Int
    var oh: Int { (h + 2 * ph - kh) / sh + 1 }
    var ow: Int { (w + 2 * pw - kw) / sw + 1 }
    var colRows: Int { c * kh * kw }
    var colCols: Int { oh * ow }
}

/// `rows`: the output rows lowered (their columns of every row of col; all by default), so that
/// tasks can lower one image's columns between them.
func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>, rows: Range<Int>? = nil) {
    let oh = g.oh, ow = g.ow
    var row = col
    for c in 0..<g.c {
        let plane = x + c * g.h * g.w
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                // Output columns [lo, hi) read inside the row (ix = ox·SW - PW + KJ); the rest are 0.
                let lo = min(ow, max(0, (g.pw - kj + g.sw - 1) / g.sw))
                let last = g.w - 1 + g.pw - kj   // ≥ 0 when some ox reads inside (floor division)
                let hi = last < 0 ? lo : max(lo, min(ow, last / g.sw + 1))
                for oy in rows ?? 0..<oh {
                    let iy = oy * g.sh - g.ph + ki
                    let dst = row + oy * ow
                    if iy < 0 || iy >= g.h {
                        dst.update(repeating: 0, count: ow)
                        continue
                    }
                    let src = plane + iy * g.w - g.pw + kj
                    if lo > 0 { dst.update(repeating: 0, count: lo) }
                    if g.sw == 1 {
                        if hi > lo { (dst + lo).update(from: src + lo, count: hi - lo) }
                    } else if g.sw == 2 {
                        // Whole vectors while their reads stay inside the row (up to `last`).
                        var ox = lo
                        while ox + V.scalarCount <= hi && 2 * (ox + V.scalarCount) - 1 <= last {
                            store(evenElements(src + 2 * ox), dst + ox)
                            ox += V.scalarCount
                        }
                        while ox < hi { dst[ox] = src[2 * ox]; ox += 1 }
                    } else {
                        for ox in lo..<hi { dst[ox] = src[ox * g.sw] }
                    }
                    if hi < ow { (dst + hi).update(repeating: 0, count: ow - hi) }
                }
                row += oh * ow
            }
        }
    }
}

/// dx += col2im(dcol): every column entry is added back to the input pixel it was copied from.
/// At column stride 2 by `col2imStride2`, the same additions in the same order.
func col2im(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    if g.sw == 2 { return col2imStride2(dcol, g, dx) }
    col2imByElements(dcol, g, dx)
}

/// `col2im` a row of a tap at a time, an element at a time at strides above 1: the reference
/// `col2imStride2` must match bit for bit.
func col2imByElements(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    let oh = g.oh, ow = g.ow
    var row = dcol
    for c in 0..<g.c {
        let plane = dx + c * g.h * g.w
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                for oy in 0..<oh {
                    let iy = oy * g.sh - g.ph + ki
                    if iy < 0 || iy >= g.h { continue }
                    let src = row + oy * ow
                    let dst = plane + iy * g.w
                    if g.sw == 1 {
                        let lo = max(0, g.pw - kj), hi = min(ow, g.w + g.pw - kj)
                        if hi > lo { addRow(dst + (lo - g.pw + kj), src + lo, hi - lo) }
                    } else {
                        for ox in 0..<ow {
                            let ix = ox * g.sw - g.pw + kj
                            if ix >= 0 && ix < g.w { dst[ix] += src[ox] }
                        }
                    }
                }
                row += oh * ow
            }
        }
    }
}

/// col2im at column stride 2 (a strided convolution's input gradient), an input row at a time:
/// its columns are taken apart into even and odd ones, a vector of each at a time, and tap kj,
/// which lands on column 2·ox - PW + kj = 2·(ox + m) + p for kj - PW = 2m + p, adds its row's
/// vector from ox = slot - m to the slots of parity p; then the columns are zipped back. Each
/// element gets its taps in the order `col2imByElements` adds them (kernel rows, then columns), so
/// the same bits; element by element it spent 40 % of its time on stores to the row it read.
private func col2imStride2(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    let oh = g.oh, ow = g.ow, plane = oh * ow, n = V.scalarCount
    var mMin = Int.max, mMax = Int.min
    for kj in 0..<g.kw {
        mMin = min(mMin, (kj - g.pw) >> 1)
        mMax = max(mMax, (kj - g.pw) >> 1)
    }
    // Slots (pairs of columns) [first, end): every tap's row read inside [0, OW).
    let slots = (g.w + 1) / 2, first = min(slots, max(0, mMax)), end = min(ow + mMin, g.w / 2)
    let dcolEnd = dcol + g.colRows * plane, rowEnd = V.MaskStorage(repeating: V.MaskStorage.Scalar(ow)), lanes = laneIndices
    for c in 0..<g.c {
        for ki in 0..<g.kh {
            let taps = dcol + (c * g.kh + ki) * g.kw * plane
            for oy in 0..<oh {
                let iy = oy * g.sh - g.ph + ki
                if iy < 0 || iy >= g.h { continue }
                let dst = dx + (c * g.h + iy) * g.w, src = taps + oy * ow
                @inline(__always) func bySlot(_ j: Int) {
                    for p in 0..<2 where 2 * j + p < g.w {
                        for kj in 0..<g.kw where (kj - g.pw) & 1 == p {
                            let ox = j - (kj - g.pw) >> 1
                            if ox >= 0 && ox < ow { dst[2 * j + p] += src[kj * plane + ox] }
                        }
                    }
                }
                var j = 0
                while j < slots {
                    // A block of n slots inside the row; where a tap reads past [0, OW) (a 3×3
                    // tap's last vector, one past its row), those lanes are masked off, as long
                    // as the reads stay inside dcol.
                    let masked = j < first || j + n > end
                    let readable = !masked || (0..<g.kw).allSatisfy { kj in
                        let at = src + kj * plane + j - (kj - g.pw) >> 1
                        return at >= dcol && at + n <= dcolEnd
                    }
                    guard 2 * (j + n) <= g.w && readable else {
                        for s in j..<min(slots, j + n) { bySlot(s) }
                        j += n
                        continue
                    }
                    var (even, odd) = unzipLanes(load(dst + 2 * j), load(dst + 2 * j + n))
                    for kj in 0..<g.kw {
                        let q = kj - g.pw, ox0 = j - q >> 1, t = load(src + kj * plane + ox0)
                        if masked {
                            let ox = lanes &+ V.MaskStorage(repeating: V.MaskStorage.Scalar(ox0))
                            let inside = (ox .>= V.MaskStorage()) .& (ox .< rowEnd)
                            if q & 1 == 0 { even.replace(with: even + t, where: inside) } else { odd.replace(with: odd + t, where: inside) }
                        } else {
                            if q & 1 == 0 { even += t } else { odd += t }
                        }
                    }
                    let (lo, hi) = zipLanes(even, odd)
                    store(lo, dst + 2 * j)
                    store(hi, dst + 2 * j + n)
                    j += n
                }
            }
        }
    }
}

/// d[0..<n] += s[0..<n], a vector at a time (the compiler cannot prove the rows do not overlap).
@inline(__always)
private func addRow(_ d: UnsafeMutablePointer<Float>, _ s: UnsafePointer<Float>, _ n: Int) {
    var t = 0
    while t + 8 <= n {
        let a = UnsafeRawPointer(d + t).loadUnaligned(as: SIMD8<Float>.self)
        let b = UnsafeRawPointer(s + t).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(d + t).storeBytes(of: a + b, as: SIMD8<Float>.self)
        t += 8
    }
    while t < n {
        d[t] += s[t]
        t += 1
    }
}

// Stride 1 (every 3×3 "same" convolution): the input is first copied into a zero-bordered plane
// per channel, (C, H + 2·PH, W + 2·PW), after which every row of the im2col matrix is a plain
// copy of OW contiguous values, with no bounds logic: whole vectors, the last one spilling into
// the next row, which is written next and overwrites the spill. (Copying row by row with memmove
// cost a call per 7-28 floats: 10 % of inference time.)

extension ConvGeometry {
    // Winograd on an odd output height reads a row of tiles past the plane: its copy has one zero
    // row more at the bottom, so that the read stays inside it. (An odd width's last tiles read
    // one column past a row, the next row's first: only their right outputs, past the plane and
    // not written, depend on that column. The same holds for the bottom row, but it would be read
    // past the copy's end.)
    var paddedH: Int { h + 2 * ph + (winograd ? oh % 2 : 0) }
    var paddedW: Int { w + 2 * pw }
    /// Floats of one sample's zero-bordered copy, plus slack for whole-vector reads (three vectors:
    /// Winograd's input transform reads two vectors from two columns past a tile row's start).
    var paddedCount: Int { c * paddedH * paddedW + 3 * V.scalarCount }
}

/// padded = x with a zero border of PH rows and PW columns around each channel. `readable`: the
/// floats that may be read from x (the rest of its batch). Each row is copied in whole vectors,
/// the last spilling past the row, and a vector of zeros is stored right after the row: it clears
/// the spill (the right border and the next row's left one; the next row is written after it),
/// and stays within the bottom border and the slack. Rows short of a vector (conv2's 14 floats)
/// would otherwise be copied one float at a time. `channels`: only those (all by default), at their
/// places in padded, zeroed with the slack after them; the rest of padded is left as it is.
/// `rows`: only those rows of the bordered planes and the row after them (reads run past a row's
/// end), of every channel (nothing for an empty range); the rows above keep what they held, the
/// next one may take the last row's spill, and the slack after the last plane is zeroed. One image
/// split over two threads by output rows then borders only its half of x and the rows beside it,
/// not all of it in each task, and reads little of what the other core wrote (ResNet-20 at batch 1:
/// 0.71 instead of 0.74 ms).
func padInput(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ padded: UnsafeMutablePointer<Float>, readable: Int,
              channels: Range<Int>? = nil, rows: Range<Int>? = nil) {
    let hp = g.paddedH, wp = g.paddedW, n = V.scalarCount, w = g.w
    let whole = (w + n - 1) / n * n
    let channels = channels ?? 0..<g.c
    let span = rows.map { r in
        let first = min(hp, max(0, r.lowerBound))
        return r.isEmpty ? first..<first : first..<max(first, min(hp, r.upperBound + 1))
    } ?? 0..<hp
    if span == 0..<hp {
        (padded + channels.lowerBound * hp * wp).update(repeating: 0, count: channels.count * hp * wp + 3 * n)
    } else {
        for c in channels { (padded + (c * hp + span.lowerBound) * wp).update(repeating: 0, count: span.count * wp) }
        if channels.upperBound == g.c { (padded + g.c * hp * wp).update(repeating: 0, count: 3 * n) }
    }
    let end = max(0, min(g.h, span.upperBound - g.ph)), inputRows = min(end, max(0, span.lowerBound - g.ph))..<end
    // With `rows`, a row's vectors (and the zeros after them, up to W + N floats past its first)
    // stay within the span's rows of its plane: rows narrower than a vector (8 floats in AVX-512's
    // 16) would reach on into the next plane's first rows, which keep what they held. Past that,
    // the row is copied exactly (its border is zero already).
    let limit = span == 0..<hp ? Int.max : span.upperBound * wp
    for c in channels {
        for y in inputRows {
            let src = (c * g.h + y) * w, dst = padded + (c * hp + y + g.ph) * wp + g.pw
            if src + whole <= readable && (y + g.ph) * wp + g.pw + w + n <= limit {
                var t = 0
                while t < w {
                    UnsafeMutableRawPointer(dst + t).storeBytes(of: UnsafeRawPointer(x + src + t).loadUnaligned(as: V.self), as: V.self)
                    t += n
                }
                UnsafeMutableRawPointer(dst + w).storeBytes(of: V(), as: V.self)
            } else {
                copyRow(dst, x + src, w, exact: true)
            }
        }
    }
}

extension ConvGeometry {
    /// The rows of the zero-bordered input that output positions `columns` (row-major) read.
    func paddedRows(columns: Range<Int>) -> Range<Int> {
        guard !columns.isEmpty else { return 0..<0 }
        return columns.lowerBound / ow * sh..<(columns.upperBound - 1) / ow * sh + kh
    }
}

/// im2col for stride 1 from the zero-bordered copy: columns `columns` of every row of col (whose
/// rows are colCols apart). Writes stay inside those columns of each row, except that with all
/// columns a row may spill into the next one (written after it), never past the matrix.
func im2colPadded(_ padded: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>,
                  columns: Range<Int>? = nil) {
    let ow = g.ow, hp = g.paddedH, wp = g.paddedW, p = g.colCols, n = V.scalarCount
    let range = columns ?? 0..<p
    let whole = range == 0..<p
    let end = col + g.colRows * p
    let firstY = range.lowerBound / ow, firstX = range.lowerBound % ow
    var row = col
    for c in 0..<g.c {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                let limit = whole ? end : row + range.upperBound
                var src = padded + (c * hp + ki + firstY) * wp + kj + firstX
                var q = range.lowerBound, count = min(ow - firstX, range.count)
                while q < range.upperBound {
                    let dst = row + q
                    copyRow(dst, src, count, exact: dst + (count + n - 1) / n * n > limit)
                    src += wp - (q == range.lowerBound ? firstX : 0)
                    q += count
                    count = min(ow, range.upperBound - q)
                }
                row += p
            }
        }
    }
}

/// dx += col2im(dcol) for stride 1, summed into a zero-bordered plane (`padded`, paddedCount
/// floats) and copied out: rows of whole vectors, their lanes past OW zeroed so a spill adds 0.
func col2imPadded(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, _ padded: UnsafeMutablePointer<Float>,
                  _ dx: UnsafeMutablePointer<Float>) {
    let oh = g.oh, ow = g.ow, hp = g.paddedH, wp = g.paddedW, n = V.scalarCount
    padded.update(repeating: 0, count: g.paddedCount)
    var src = dcol
    let end = dcol + g.colRows * g.colCols
    for c in 0..<g.c {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                var dst = padded + (c * hp + ki) * wp + kj
                for _ in 0..<oh {
                    var t = 0
                    while t < ow {
                        let lanes = min(n, ow - t)
                        var v: V
                        if src + t + n <= end {
                            v = UnsafeRawPointer(src + t).loadUnaligned(as: V.self)
                            if lanes < n { v.replace(with: 0, where: laneIndices .>= V.MaskStorage(repeating: V.MaskStorage.Scalar(lanes))) }
                        } else {
                            v = V()
                            for l in 0..<lanes { v[l] = src[t + l] }
                        }
                        let d = UnsafeMutableRawPointer(dst + t)
                        d.storeBytes(of: d.loadUnaligned(as: V.self) + v, as: V.self)
                        t += n
                    }
                    src += ow
                    dst += wp
                }
            }
        }
    }
    for c in 0..<g.c {
        for y in 0..<g.h {
            addRow(dx + (c * g.h + y) * g.w, padded + (c * hp + y + g.ph) * wp + g.pw, g.w)
        }
    }
}

/// 0, 1, 2, ... in the lanes of a vector mask's storage.
private let laneIndices: V.MaskStorage = {
    var v = V.MaskStorage()
    for i in 0..<V.scalarCount { v[i] = V.MaskStorage.Scalar(i) }
    return v
}()

/// dst[0..<count] = src[0..<count] in whole vectors. Reads may run up to a vector past the row
/// (the caller's buffers have that slack); writes may too, unless `exact`.
@inline(__always)
func copyRow(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int, exact: Bool) {
    let n = V.scalarCount
    var t = 0
    while t + n <= count || (!exact && t < count) {
        UnsafeMutableRawPointer(dst + t).storeBytes(of: UnsafeRawPointer(src + t).loadUnaligned(as: V.self), as: V.self)
        t += n
    }
    while t < count {
        dst[t] = src[t]
        t += 1
    }
}
