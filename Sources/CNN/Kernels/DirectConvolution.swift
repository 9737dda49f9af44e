// Direct convolution with ReLU and 2×2 max pooling fused, for inference in first layers.
//
// A first layer has few input channels (C = 1 or 3: 9 or 27 rows of im2col), a poor GEMM: its K is
// too short to pay for writing C, and lowering the image, writing the full-size output and
// pooling it again cost more than the multiply-adds. Here vector lanes are pooled output columns:
// a window's four outputs are four accumulators that stay in registers through all the taps, then
// get the bias, ReLU and the window's maximum, and one pooled vector is stored. The input vectors
// under a vector of windows (every other column, from 2·(KH+1)·(KW+1) rows and column offsets per
// channel) are staged once in L1 and shared by a block of output channels.
//
// Each output sums its taps in im2col's order (c, ki, kj), from zero, adds the bias, applies ReLU,
// and the window's maximum compares as the pooling layer does: the same bits as the GEMM path and
// the separate layers (which training uses, keeping the im2col matrix and the maxima's indices).

/// Output channels per block: their accumulators (4 each) and the four staged vectors they share
/// stay in registers (AVX-512: 16 + 4 of 32 registers; AVX2: 8 + 4 of 16).
#if CNN_AVX512
let directBlock = 4
#else
let directBlock = 2
#endif
/// Floats of one task's staging memory: at most 64 vectors, C·(KH+1)·(KW+1) of them used.
let directStageCount = 64 * V.scalarCount

extension ConvGeometry {
    /// The fused direct kernel applies: stride 1, and few enough channels and taps that a vector of
    /// windows' inputs stay in L1 (which also keeps C·KH·KW within one K block of the GEMM).
    var directPooling: Bool { sh == 1 && sw == 1 && c * (kh + 1) * (kw + 1) * V.scalarCount <= directStageCount }
}

/// One sample: the pooled output planes (OH/2 × OW/2) of output channels `channels` into y, from the
/// sample's zero-bordered input x' (C × H' × W', with paddedCount's slack after it) and weights
/// (OC, C·KH·KW). `stage` is this task's own memory (directStageCount floats).
func directConvPooled(_ padded: UnsafePointer<Float>, _ g: ConvGeometry, weights w: UnsafePointer<Float>,
                      bias: UnsafePointer<Float>?, clamp: Clamp, channels: Range<Int>,
                      stage: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    let n = V.scalarCount, ckk = g.colRows, wp = g.paddedW, plane = g.paddedH * wp
    let ph = g.oh / 2, pw = g.ow / 2, sr = g.kh + 1, sc = g.kw + 1
    guard !channels.isEmpty else { return }
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    for py in 0..<ph {
        var px0 = 0
        while px0 < pw {
            // stage[(c·(KH+1) + r)·(KW+1) + s], lane l: x'[c][2·py + r][2·(px0 + l) + s]. The reads run
            // at most 2N - 1 floats past a row's end: into the next row, or the slack (3N).
            for c in 0..<g.c {
                for r in 0..<sr {
                    let row = padded + c * plane + (2 * py + r) * wp + 2 * px0
                    for s in 0..<sc {
                        UnsafeMutableRawPointer(stage + ((c * sr + r) * sc + s) * n).storeBytes(of: evenElements(row + s), as: V.self)
                    }
                }
            }
            var o = channels.lowerBound
            while o < channels.upperBound {
                // A last, partial block repeats the range's last channel (computed, not stored).
                let last = channels.upperBound - 1
                let w0 = w + o * ckk, w1 = w + min(o + 1, last) * ckk
                let w2 = w + min(o + 2, last) * ckk, w3 = w + min(o + 3, last) * ckk
                // a<channel><dy><dx>: the window's outputs (2py + dy, 2(px0 + l) + dx).
                var a000 = V(), a001 = V(), a010 = V(), a011 = V(), a100 = V(), a101 = V(), a110 = V(), a111 = V()
                var a200 = V(), a201 = V(), a210 = V(), a211 = V(), a300 = V(), a301 = V(), a310 = V(), a311 = V()
                var k = 0
                for c in 0..<g.c {
                    for ki in 0..<g.kh {
                        for kj in 0..<g.kw {
                            // Output (dy, dx) at tap (ki, kj) reads staged row ki + dy, offset kj + dx.
                            let s = stage + ((c * sr + ki) * sc + kj) * n
                            let x00 = load(s), x01 = load(s + n), x10 = load(s + sc * n), x11 = load(s + sc * n + n)
                            var v = V(repeating: w0[k])
                            a000 = fmadd(a000, v, x00); a001 = fmadd(a001, v, x01); a010 = fmadd(a010, v, x10); a011 = fmadd(a011, v, x11)
                            v = V(repeating: w1[k])
                            a100 = fmadd(a100, v, x00); a101 = fmadd(a101, v, x01); a110 = fmadd(a110, v, x10); a111 = fmadd(a111, v, x11)
                            if directBlock == 4 {
                                v = V(repeating: w2[k])
                                a200 = fmadd(a200, v, x00); a201 = fmadd(a201, v, x01); a210 = fmadd(a210, v, x10); a211 = fmadd(a211, v, x11)
                                v = V(repeating: w3[k])
                                a300 = fmadd(a300, v, x00); a301 = fmadd(a301, v, x01); a310 = fmadd(a310, v, x10); a311 = fmadd(a311, v, x11)
                            }
                            k += 1
                        }
                    }
                }
                let planes = y + py * pw + px0, count = ph * pw, fits = py * pw + px0 + n <= count
                storeWindows(pooledWindow(a000, a001, a010, a011, bias: bias.map { $0[o] }, clamp: clamp), planes + o * count, fits, pw - px0)
                if o + 1 <= last {
                    storeWindows(pooledWindow(a100, a101, a110, a111, bias: bias.map { $0[o + 1] }, clamp: clamp), planes + (o + 1) * count, fits, pw - px0)
                }
                if directBlock == 4 && o + 2 <= last {
                    storeWindows(pooledWindow(a200, a201, a210, a211, bias: bias.map { $0[o + 2] }, clamp: clamp), planes + (o + 2) * count, fits, pw - px0)
                }
                if directBlock == 4 && o + 3 <= last {
                    storeWindows(pooledWindow(a300, a301, a310, a311, bias: bias.map { $0[o + 3] }, clamp: clamp), planes + (o + 3) * count, fits, pw - px0)
                }
                o += directBlock
            }
            px0 += n
        }
    }
}

/// A vector of pooled outputs at `out`: whole when it `fits` in the plane (a vector past its row's
/// end spills into the next rows, written after it), else its first `valid` lanes one by one.
@_transparent
func storeWindows(_ v: V, _ out: UnsafeMutablePointer<Float>, _ fits: Bool, _ valid: Int) {
    if fits {
        UnsafeMutableRawPointer(out).storeBytes(of: v, as: V.self)
    } else {
        for l in 0..<valid { out[l] = v[l] }
    }
}

/// A vector of windows' four sums (top-left, top-right, bottom-left, bottom-right): the bias added
/// as the GEMM's output write adds it (none at all without one: +0 would turn -0 into +0), ReLU,
/// then the maximum as max pooling compares.
@_transparent
func pooledWindow(_ a: V, _ b: V, _ c: V, _ d: V, bias: Float?, clamp: Clamp) -> V {
    var (a, b, c, d) = (a, b, c, d)
    if let bias {
        let bv = V(repeating: bias)
        (a, b, c, d) = (bv + a, bv + b, bv + c, bv + d)
    }
    if clamp != .none { (a, b, c, d) = (clamp.apply(a), clamp.apply(b), clamp.apply(c), clamp.apply(d)) }
    return windowMax(a, b, c, d, first: V.MaskStorage(), w: 0, indices: false, mask: false).0
}
