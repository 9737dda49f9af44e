import CCPUID

// Depthwise convolution a plane at a time: the zero-bordered scratch layout of an input plane
// (DepthwisePlan) and the kernel that computes an output plane from it in vector registers.
//
// Each output is its bias plus every tap's weight times the input it reads, in the taps' order
// (row by row), then the clamp: the same operations whichever kernel runs, so the same bits. The
// 3×3 and 5×5 kernels (MobileNets', EfficientNets') hold their weights in registers for the whole
// plane, each tap one multiply-add with its input read from memory; others loop over their taps.

/// The scratch layout of a depthwise convolution's input plane: rows of the zero-bordered plane
/// (H + 2·PH of them), each split into `stride` phases (phase p holds columns p, p + stride, ...),
/// each phase `phaseStride` floats, with room for a whole vector read past the last output.
struct DepthwisePlan {
    let g: ConvGeometry
    let phaseStride: Int
    let rowStride: Int
    let scratchCount: Int
    /// The output width rounded up to whole vectors: the weight gradient's copy of a dy plane
    /// (`pad`), `paddedOutputCount` floats, zeros past each row's end.
    let paddedOW: Int
    let paddedOutputCount: Int

    init(_ g: ConvGeometry) {
        self.g = g
        let phase = g.ow + (g.kw - 1) / g.sw + V.scalarCount
        // At stride 2 the phases are written a vector at a time (`border`): whole vectors each.
        phaseStride = g.sw == 1 ? phase : (phase + V.scalarCount - 1) / V.scalarCount * V.scalarCount
        rowStride = g.sw * phaseStride
        // At stride 2, two more rows: input rows with their border, before they are split (their
        // odd elements are read from one float past the row's end), taking turns (`border`).
        scratchCount = g.sw == 1 ? (g.h + 2 * g.ph) * rowStride : (g.h + 2 * g.ph + 2) * (rowStride + 1)
        paddedOW = (g.ow + V.scalarCount - 1) / V.scalarCount * V.scalarCount
        paddedOutputCount = g.oh * paddedOW
    }

    /// Where tap (ky, kx) reads for output (0, 0) in the bordered plane: kernel row ky, phase
    /// kx mod stride, column kx / stride (stride 1 or 2: a mask and a shift, no division).
    @inline(__always)
    func offset(_ ky: Int, _ kx: Int) -> Int {
        let shift = g.sw &- 1
        return ky &* rowStride &+ (kx & shift) &* phaseStride &+ (kx >> shift)
    }

    /// Copies an output-sized plane (OH × OW) into rows of `paddedOW`, zeros after each row.
    func pad(_ d: UnsafePointer<Float>, into rows: UnsafeMutablePointer<Float>) {
        for oy in 0..<g.oh {
            let row = rows + oy * paddedOW
            row.update(from: d + oy * g.ow, count: g.ow)
            row.advanced(by: g.ow).update(repeating: 0, count: paddedOW - g.ow)
        }
    }

    /// Copies input plane `x` (H × W) into `scratch`, bordered with zeros. `bordered`: the
    /// scratch holds another plane of this geometry, whose zeros are where this one's go (a
    /// task's planes after its first): at stride 1 only the input's own values are copied, at
    /// stride 2 the rows of zeros above and below are left as they are. `end`: where the input
    /// ends (the rows are copied a vector at a time, reading past a row but never past that).
    /// `next`: the plane the caller borders next, whose rows are asked of memory as this one's are
    /// copied (a plane ahead: at batch 32 the planes come from memory, and the copy waited on them).
    func border(_ x: UnsafePointer<Float>, into scratch: UnsafeMutablePointer<Float>, bordered: Bool, end: UnsafePointer<Float>,
                prefetching next: UnsafePointer<Float>? = nil) {
        let rows = g.h + 2 * g.ph
        @inline(__always) func prefetchRow(_ iy: Int) {
            guard let next else { return }
            var i = 0
            while i < g.w {
                cnncpu_prefetch(next + (iy &* g.w &+ i))
                i &+= 16   // floats in a 64-byte cache line
            }
        }
        // Stride 2: each input row is first copied with its zero border into one of the scratch's
        // last two rows (`lines`, whose borders stay zero from plane to plane), the next row
        // into the other while this one is split. Split straight after its copy, a row's reads
        // (each across two of the copy's stores, which cannot forward to it) waited for those
        // stores to reach the cache: `perf` put most of the border's time there.
        let lines = (scratch + rows * rowStride, scratch + rows * rowStride + rowStride + 1)
        if g.sw != 1 {
            if !bordered { lines.0.update(repeating: 0, count: 2 * (rowStride + 1)) }
            if g.h > 0 { copyRow(x, to: lines.0 + g.pw, end: end) }
        }
        if bordered && g.sw == 1 {
            for iy in 0..<g.h {
                prefetchRow(iy)
                copyRow(x + iy &* g.w, to: scratch + ((iy &+ g.ph) &* rowStride &+ g.pw), end: end)
            }
            return
        }
        for r in 0..<rows {
            let iy = r - g.ph, row = scratch + r * rowStride
            guard iy >= 0 && iy < g.h else {
                if !bordered { row.update(repeating: 0, count: rowStride) }
                continue
            }
            let src = x + iy * g.w
            prefetchRow(iy)
            if g.sw == 1 {
                row.update(repeating: 0, count: g.pw)
                copyRow(src, to: row + g.pw, end: end)
                row.advanced(by: g.pw + g.w).update(repeating: 0, count: rowStride - g.pw - g.w)
            } else {
                // Stride 2: phase 0 holds columns 2j - PW, phase 1 columns 2j + 1 - PW, split from
                // the bordered row a vector of each at a time.
                let (line, next) = iy & 1 == 0 ? lines : (lines.1, lines.0)
                if iy + 1 < g.h { copyRow(src + g.w, to: next + g.pw, end: end) }
                var j = 0
                while j < phaseStride {
                    store(evenElements(line + 2 * j), row + j)
                    store(evenElements(line + 2 * j + 1), row + phaseStride + j)
                    j += V.scalarCount
                }
            }
        }
    }

    /// Copies an input row (W floats) to `dst`, a bordered row, a vector at a time (a library
    /// call per row cost more than the copy on 14- and 28-wide planes), then rewrites the zeros
    /// of its right border: the last vector may carry values from past the row's end (read only
    /// where they lie before `end`), and the zeros (PW of them at least, in whole vectors) cover
    /// them. Every row of the layout has room for those vectors (see `init`).
    @inline(__always)
    private func copyRow(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, end: UnsafePointer<Float>) {
        let w = V.scalarCount
        var i = 0
        while i &+ w <= g.w {
            store(load(src + i), dst + i)
            i &+= w
        }
        if i < g.w {
            if src + (i &+ w) <= end {
                store(load(src + i), dst + i)
            } else {
                (dst + i).update(from: src + i, count: g.w &- i)
            }
        }
        var z = 0
        repeat {
            store(V(), dst + (g.w &+ z))
            z &+= w
        } while z < g.pw
    }

    /// Output plane `dst` (OH × OW) from input plane `own` as `border` left it, a row at a time.
    /// Every tap reads its kernel row's input row (at stride 2, that row's phase kx mod 2) at a
    /// fixed distance from the output column: a row takes one pointer per kernel row and phase,
    /// the taps' weights stay in registers and each multiply-add reads its input from memory.
    /// A row's last, partial vector is computed first and stored whole: its extra lanes fall on
    /// the next rows' start, which their own stores write after. Where those lanes would pass the
    /// plane's end (the next plane may be another task's, or the buffer may end there: the last
    /// row, or the last few when rows are narrower than half a vector) its own lanes are copied alone.
    @inline(__always)
    func convolve<Taps: DepthwiseTaps>(_ taps: Taps, _ own: UnsafePointer<Float>, start: V, clamp: Clamp,
                                       into dst: UnsafeMutablePointer<Float>) {
        if g.sw == 1 {
            convolve(taps, Stride1.self, own, start: start, clamp: clamp, into: dst)
        } else {
            convolve(taps, Stride2.self, own, start: start, clamp: clamp, into: dst)
        }
    }

    @inline(__always)
    private func convolve<Taps: DepthwiseTaps, S: DepthwiseStride>(_ taps: Taps, _: S.Type, _ own: UnsafePointer<Float>, start: V,
                                                                   clamp: Clamp, into dst: UnsafeMutablePointer<Float>) {
        let w = V.scalarCount, whole = g.ow / w &* w, step = S.two ? 2 &* rowStride : rowStride
        // A row's partial vector stored whole ends within the plane while oy·OW < `fits`.
        let fits = g.oh &* g.ow &- whole &- w &+ 1
        for oy in 0..<g.oh {
            let top = own + oy &* step, out = dst + oy &* g.ow
            if whole < g.ow {
                let v = clamp.apply(taps.sum(start, top, self, S.self, whole))
                if oy &* g.ow < fits {
                    store(v, out + whole)
                } else {
                    // Lane by lane: a library copy from the vector spilled to memory cost as much
                    // as the plane's multiply-adds on 14×14 planes.
                    for i in 0..<(g.ow &- whole) { out[whole &+ i] = v[i] }
                }
            }
            var ox = 0
            while ox < whole {
                store(clamp.apply(taps.sum(start, top, self, S.self, ox)), out + ox)
                ox &+= w
            }
        }
    }
}

/// The stride of a depthwise kernel, as a type: its reads' distances are then constants.
protocol DepthwiseStride { static var two: Bool { get } }
enum Stride1: DepthwiseStride { static var two: Bool { false } }
enum Stride2: DepthwiseStride { static var two: Bool { true } }

/// A depthwise kernel's taps for one output channel.
protocol DepthwiseTaps {
    /// `start` plus every tap's weight times what it reads for the V.scalarCount output columns
    /// from `ox` of the row whose first kernel row starts at `top`, in the taps' order.
    func sum<S: DepthwiseStride>(_ start: V, _ top: UnsafePointer<Float>, _ plan: DepthwisePlan, _: S.Type, _ ox: Int) -> V
}

/// A depthwise kernel's taps for a block of V.scalarCount channels, pixels × channels
/// (DepthwiseChannelsLast.swift): one weight vector per tap.
protocol ChannelsLastTaps {
    /// `start` plus every tap's weights times the input vector it reads for the output whose
    /// first tap reads `at`: tap (ky, kx) reads `at` + ky·`row` + kx·V.scalarCount.
    func sum(_ start: V, _ at: UnsafePointer<Float>, row: Int) -> V
}

/// A kernel row's taps reading consecutive pixels' vectors from `r`.
@inline(__always)
private func pixelRow(_ a: V, _ r: UnsafePointer<Float>, _ w0: V, _ w1: V, _ w2: V) -> V {
    let w = V.scalarCount
    return fmadd(fmadd(fmadd(a, w0, load(r)), w1, load(r + w)), w2, load(r + 2 &* w))
}

@inline(__always)
private func pixelRow(_ a: V, _ r: UnsafePointer<Float>, _ w0: V, _ w1: V, _ w2: V, _ w3: V, _ w4: V) -> V {
    let w = V.scalarCount, a = pixelRow(a, r, w0, w1, w2)
    return fmadd(fmadd(a, w3, load(r + 3 &* w)), w4, load(r + 4 &* w))
}

/// Adds kernel row `ws`' taps (weights broadcast) reading row `r` from the output column: tap kx
/// at column kx (stride 1), or at column kx / 2 of phase kx mod 2 (stride 2, phases `phase` apart).
@inline(__always)
private func kernelRow<S: DepthwiseStride>(_ a: V, _ r: UnsafePointer<Float>, _ phase: Int, _: S.Type, _ w0: V, _ w1: V, _ w2: V) -> V {
    let r1 = S.two ? r + phase : r + 1, r2 = S.two ? r + 1 : r + 2
    return fmadd(fmadd(fmadd(a, w0, load(r)), w1, load(r1)), w2, load(r2))
}

@inline(__always)
private func kernelRow<S: DepthwiseStride>(_ a: V, _ r: UnsafePointer<Float>, _ phase: Int, _: S.Type,
                                           _ w0: V, _ w1: V, _ w2: V, _ w3: V, _ w4: V) -> V {
    let a = kernelRow(a, r, phase, S.self, w0, w1, w2)
    let r3 = S.two ? r + (phase &+ 1) : r + 3, r4 = S.two ? r + 2 : r + 4
    return fmadd(fmadd(a, w3, load(r3)), w4, load(r4))
}

struct Taps3x3: DepthwiseTaps, ChannelsLastTaps {
    let w0, w1, w2, w3, w4, w5, w6, w7, w8: V

    /// Channels last: tap t's weights are the vector at `vectors` + t·`stride`.
    @inline(__always)
    init(vectors k: UnsafePointer<Float>, stride: Int) {
        @inline(__always) func v(_ t: Int) -> V { load(k + t &* stride) }
        (w0, w1, w2, w3, w4, w5, w6, w7, w8) = (v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8))
    }

    @inline(__always)
    func sum(_ start: V, _ at: UnsafePointer<Float>, row: Int) -> V {
        let a = pixelRow(start, at, w0, w1, w2)
        return pixelRow(pixelRow(a, at + row, w3, w4, w5), at + 2 &* row, w6, w7, w8)
    }

    @inline(__always)
    init(_ k: UnsafePointer<Float>) {
        (w0, w1, w2) = (V(repeating: k[0]), V(repeating: k[1]), V(repeating: k[2]))
        (w3, w4, w5) = (V(repeating: k[3]), V(repeating: k[4]), V(repeating: k[5]))
        (w6, w7, w8) = (V(repeating: k[6]), V(repeating: k[7]), V(repeating: k[8]))
    }

    @inline(__always)
    func sum<S: DepthwiseStride>(_ start: V, _ top: UnsafePointer<Float>, _ plan: DepthwisePlan, _: S.Type, _ ox: Int) -> V {
        let r0 = top + ox, r1 = r0 + plan.rowStride, r2 = r1 + plan.rowStride, p = plan.phaseStride
        let a = kernelRow(start, r0, p, S.self, w0, w1, w2)
        return kernelRow(kernelRow(a, r1, p, S.self, w3, w4, w5), r2, p, S.self, w6, w7, w8)
    }
}

struct Taps5x5: DepthwiseTaps, ChannelsLastTaps {
    let w: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)

    /// Channels last: tap t's weights are the vector at `vectors` + t·`stride`.
    @inline(__always)
    init(vectors k: UnsafePointer<Float>, stride: Int) {
        @inline(__always) func v(_ t: Int) -> V { load(k + t &* stride) }
        w = (v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8), v(9), v(10), v(11), v(12),
             v(13), v(14), v(15), v(16), v(17), v(18), v(19), v(20), v(21), v(22), v(23), v(24))
    }

    @inline(__always)
    func sum(_ start: V, _ at: UnsafePointer<Float>, row: Int) -> V {
        var a = pixelRow(start, at, w.0, w.1, w.2, w.3, w.4)
        a = pixelRow(a, at + row, w.5, w.6, w.7, w.8, w.9)
        a = pixelRow(a, at + 2 &* row, w.10, w.11, w.12, w.13, w.14)
        a = pixelRow(a, at + 3 &* row, w.15, w.16, w.17, w.18, w.19)
        return pixelRow(a, at + 4 &* row, w.20, w.21, w.22, w.23, w.24)
    }

    @inline(__always)
    init(_ k: UnsafePointer<Float>) {
        @inline(__always) func b(_ i: Int) -> V { V(repeating: k[i]) }
        w = (b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7), b(8), b(9), b(10), b(11), b(12),
             b(13), b(14), b(15), b(16), b(17), b(18), b(19), b(20), b(21), b(22), b(23), b(24))
    }

    @inline(__always)
    func sum<S: DepthwiseStride>(_ start: V, _ top: UnsafePointer<Float>, _ plan: DepthwisePlan, _: S.Type, _ ox: Int) -> V {
        let r0 = top + ox, s = plan.rowStride, p = plan.phaseStride
        var a = kernelRow(start, r0, p, S.self, w.0, w.1, w.2, w.3, w.4)
        a = kernelRow(a, r0 + s, p, S.self, w.5, w.6, w.7, w.8, w.9)
        a = kernelRow(a, r0 + 2 &* s, p, S.self, w.10, w.11, w.12, w.13, w.14)
        a = kernelRow(a, r0 + 3 &* s, p, S.self, w.15, w.16, w.17, w.18, w.19)
        return kernelRow(a, r0 + 4 &* s, p, S.self, w.20, w.21, w.22, w.23, w.24)
    }
}

/// Any other kernel: its weights read and broadcast, and its offsets computed, tap by tap.
struct AnyTaps: DepthwiseTaps {
    let weights: UnsafePointer<Float>

    @inline(__always)
    func sum<S: DepthwiseStride>(_ start: V, _ top: UnsafePointer<Float>, _ plan: DepthwisePlan, _: S.Type, _ ox: Int) -> V {
        let g = plan.g
        var a = start
        for ky in 0..<g.kh {
            for kx in 0..<g.kw {
                a = fmadd(a, V(repeating: weights[ky &* g.kw &+ kx]), load(top + (plan.offset(ky, kx) &+ ox)))
            }
        }
        return a
    }
}

/// Any other kernel, channels last: tap t's weights are the vector at `weights` + t·`stride`.
struct AnyVectorTaps: ChannelsLastTaps {
    let weights: UnsafePointer<Float>
    let stride, kh, kw: Int

    @inline(__always)
    func sum(_ start: V, _ at: UnsafePointer<Float>, row: Int) -> V {
        var a = start
        for ky in 0..<kh {
            for kx in 0..<kw {
                a = fmadd(a, load(weights + (ky &* kw &+ kx) &* stride), load(at + (ky &* row &+ kx &* V.scalarCount)))
            }
        }
        return a
    }
}
