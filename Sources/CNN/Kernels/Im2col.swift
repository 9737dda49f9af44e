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

func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
    let oh = g.oh, ow = g.ow
    var row = col
    for c in 0..<g.c {
        let plane = x + c * g.h * g.w
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                for oy in 0..<oh {
                    let iy = oy * g.sh - g.ph + ki
                    let dst = row + oy * ow
                    if iy < 0 || iy >= g.h {
                        dst.update(repeating: 0, count: ow)
                        continue
                    }
                    let src = plane + iy * g.w
                    if g.sw == 1 {
                        // Contiguous run: ix = ox - pw + kj.
                        let lo = max(0, g.pw - kj), hi = min(ow, g.w + g.pw - kj)
                        if lo > 0 { dst.update(repeating: 0, count: min(lo, ow)) }
                        if hi > lo { (dst + lo).update(from: src + (lo - g.pw + kj), count: hi - lo) }
                        if hi < ow { (dst + max(hi, 0)).update(repeating: 0, count: ow - max(hi, 0)) }
                    } else {
                        for ox in 0..<ow {
                            let ix = ox * g.sw - g.pw + kj
                            dst[ox] = (ix >= 0 && ix < g.w) ? src[ix] : 0
                        }
                    }
                }
                row += oh * ow
            }
        }
    }
}

/// dx += col2im(dcol): every column entry is added back to the input pixel it was copied from.
func col2im(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
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
