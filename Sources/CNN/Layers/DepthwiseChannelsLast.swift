// Depthwise convolution on small planes, channels last.
//
// The plane-by-plane kernel (`GroupedConv2D.depthwise`) computes a row of outputs in a vector, so
// on rows shorter than half a vector (a MobileNet's 7×7, 4×4 and 2×2 stages: 2 of AVX-512's 16
// lanes on a 2×2 plane) most of its work is padding. Here a vector holds one pixel's next
// V.scalarCount channels, so that every lane is an output. Forward takes the channels a vector's
// worth (a block) at a time: the block's (V.scalarCount, H, W) input is transposed to pixels ×
// channels inside a zero border, (H + 2·PH) × (W + 2·PW) × V.scalarCount, and every tap of every
// output reads its input vector at a fixed distance from the output's first, the taps' weight
// vectors held in registers (as the plane kernel's, the taps in the zero padding add their weight
// times 0: the same operations, so the same bits). Backward transposes whole samples, (H·W, C'),
// C' = C rounded up to whole vectors, and skips the padding's taps. Lanes past C hold whatever
// was there and are never written back.

extension ConvGeometry {
    /// A depthwise convolution runs channels last when its output rows fill at most half a vector.
    var depthwiseChannelsLast: Bool { 2 * ow <= V.scalarCount }
    /// The channels rounded up to whole vectors.
    var paddedChannels: Int { (c + V.scalarCount - 1) / V.scalarCount * V.scalarCount }
    /// Floats per sample channels last (backward): the input's pixels, then the output's (or dy's).
    var channelsLastCount: Int { (h * w + oh * ow) * paddedChannels }
    /// Floats per task of the forward's blocks: the bordered input, then the block's pixels on
    /// their way in and out.
    var channelsLastBlockCount: Int { ((h + 2 * ph) * (w + 2 * pw) + max(h * w, oh * ow)) * V.scalarCount }
}

extension GroupedConv2D {
    /// y = the depthwise convolution of x (batch × C × H × W), plus the bias, then the clamp.
    /// The blocks of channels of all samples are shared among the tasks; each output is computed
    /// the same way whichever task takes its block.
    /// `key`: the weights' version (or their folding's key), for the cached taps × channels copy.
    func depthwiseChannelsLast(_ x: UnsafePointer<Float>, weights: UnsafePointer<Float>, key: Int, bias: UnsafePointer<Float>?,
                               clamp: Clamp, batch: Int, into y: UnsafeMutablePointer<Float>) {
        let g = geometry, c = g.c, cp = g.paddedChannels, hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let w = V.scalarCount, bw = g.w + 2 * g.pw, bordered = (g.h + 2 * g.ph) * bw * w
        let per = g.channelsLastBlockCount, blocks = cp / w, items = batch * blocks
        let tasks = min(items, max(2, ThreadPool.shared.threads))
        let scratch = channelsLastScratch.reserve(tasks * per + cp).pointer
        let wT = channelsLastWeights.reserve(taps * cp).pointer, bT = scratch + tasks * per
        if channelsLastWeightsKey != key {
            transposedWeights(weights, into: wT)
            channelsLastWeightsKey = key
        }
        for ch in 0..<cp { bT[ch] = ch < c ? bias?[ch] ?? 0 : 0 }
        ThreadPool.shared.parallelFor(tasks) { task in
            let xB = scratch + task * per, staged = xB + bordered
            xB.update(repeating: 0, count: bordered)  // the border, which the blocks leave as it is
            for item in stride(from: task, to: items, by: tasks) {
                let n = item / blocks, c0 = (item % blocks) * w, lanes = min(w, c - c0)
                transpose(x + (n * c + c0) * hw, rows: lanes, cols: hw, into: staged, ldo: w)
                for iy in 0..<g.h {
                    copyRow(xB + ((iy + g.ph) * bw + g.pw) * w, staged + iy * g.w * w, g.w * w, exact: true)
                }
                let start = load(bT + c0)
                if g.kh == 3 && g.kw == 3 {
                    blockOutputs(Taps3x3(vectors: wT + c0, stride: cp), xB, start: start, clamp: clamp, into: staged)
                } else if g.kh == 5 && g.kw == 5 {
                    blockOutputs(Taps5x5(vectors: wT + c0, stride: cp), xB, start: start, clamp: clamp, into: staged)
                } else {
                    blockOutputs(AnyVectorTaps(weights: wT + c0, stride: cp, kh: g.kh, kw: g.kw), xB, start: start, clamp: clamp, into: staged)
                }
                transpose(staged, rows: ohw, cols: lanes, ldx: w, into: y + (n * c + c0) * ohw, ldo: ohw)
            }
        }
    }

    /// A block's outputs, pixels × V.scalarCount channels, from its bordered input.
    @inline(__always)
    private func blockOutputs<Taps: ChannelsLastTaps>(_ taps: Taps, _ xB: UnsafePointer<Float>, start: V, clamp: Clamp,
                                                      into out: UnsafeMutablePointer<Float>) {
        let g = geometry, w = V.scalarCount, row = (g.w + 2 * g.pw) * w
        for oy in 0..<g.oh {
            let top = xB + oy &* g.sh &* row, o = out + oy &* g.ow &* w
            for ox in 0..<g.ow {
                store(clamp.apply(taps.sum(start, top + ox &* g.sw &* w, row: row)), o + ox &* w)
            }
        }
    }

    /// Backward of `depthwiseChannelsLast`: every sample's x and dy are first transposed, channels
    /// last. The weight and bias gradients: each vector of channels is one task's, and each
    /// sample's sum over the outputs (in vector lanes, one per channel) is added in Double, the
    /// samples in order. The input gradient: each sample's is one task's, every output adding its
    /// taps' weights times dy to the inputs they read, in the outputs' order.
    func depthwiseChannelsLastBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, batch: Int,
                                       dw: UnsafeMutablePointer<Float>?, db: UnsafeMutablePointer<Float>?,
                                       dx: UnsafeMutablePointer<Float>?) {
        let g = geometry, c = g.c, cp = g.paddedChannels, hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let per = g.channelsLastCount, w = V.scalarCount, vectors = cp / w
        let scratch = channelsLastScratch.reserve(batch * per + taps * cp).pointer
        let wT = scratch + batch * per
        let tasks = min(batch, max(2, ThreadPool.shared.threads))
        ThreadPool.shared.parallelItems(batch, slots: tasks) { n, _ in
            let xT = scratch + n * per
            transpose(x + n * c * hw, rows: c, cols: hw, into: xT, ldo: cp)
            transpose(dy + n * c * ohw, rows: c, cols: ohw, into: xT + hw * cp, ldo: cp)
        }
        if dw != nil || db != nil {
            let sums = channelsLastSums.reserve((taps + 1) * cp)
            sums.update(repeating: 0, count: (taps + 1) * cp)
            let parts = min(vectors, max(1, ThreadPool.shared.threads)), step = parts * w
            ThreadPool.shared.parallelFor(parts) { part in
                // Four of the part's vectors at a time: four independent chains of multiply-adds
                // (one chain waited on each FMA's latency). A vector past the channels repeats the
                // first, and its sums are dropped. Each lane adds its products in the same order.
                for first in stride(from: part * w, to: cp, by: 4 * step) {
                    let v = (first, first + step < cp ? first + step : first, first + 2 * step < cp ? first + 2 * step : first,
                             first + 3 * step < cp ? first + 3 * step : first)
                    let kept = min(4, (cp - first + step - 1) / step)
                    @inline(__always) func add(_ acc: (V, V, V, V), to row: Int) {
                        let out = sums + row * cp
                        addWidened(acc.0, into: out + v.0)
                        if kept > 1 { addWidened(acc.1, into: out + v.1) }
                        if kept > 2 { addWidened(acc.2, into: out + v.2) }
                        if kept > 3 { addWidened(acc.3, into: out + v.3) }
                    }
                    for n in 0..<batch {
                        let xT = scratch + n * per, dyT = xT + hw * cp
                        if db != nil {
                            var acc = (V(), V(), V(), V())
                            for o in 0..<ohw {
                                let d = dyT + o &* cp
                                acc = (acc.0 + load(d + v.0), acc.1 + load(d + v.1), acc.2 + load(d + v.2), acc.3 + load(d + v.3))
                            }
                            add(acc, to: taps)
                        }
                        guard dw != nil else { continue }
                        for ky in 0..<g.kh {
                            for kx in 0..<g.kw {
                                var acc = (V(), V(), V(), V())
                                for oy in 0..<g.oh {
                                    let iy = oy &* g.sh &- g.ph &+ ky
                                    guard iy >= 0 && iy < g.h else { continue }
                                    for ox in 0..<g.ow {
                                        let ix = ox &* g.sw &- g.pw &+ kx
                                        guard ix >= 0 && ix < g.w else { continue }
                                        let d = dyT + (oy &* g.ow &+ ox) &* cp, i = xT + (iy &* g.w &+ ix) &* cp
                                        acc = (fmadd(acc.0, load(d + v.0), load(i + v.0)), fmadd(acc.1, load(d + v.1), load(i + v.1)),
                                               fmadd(acc.2, load(d + v.2), load(i + v.2)), fmadd(acc.3, load(d + v.3), load(i + v.3)))
                                    }
                                }
                                add(acc, to: ky * g.kw + kx)
                            }
                        }
                    }
                }
            }
            for ch in 0..<c {
                if let dw { for t in 0..<taps { dw[ch * taps + t] += Float(sums[t * cp + ch]) } }
                if let db { db[ch] += Float(sums[taps * cp + ch]) }
            }
        }
        guard let dx else { return }
        transposedWeights(weight.value.pointer, into: wT)
        ThreadPool.shared.parallelItems(batch, slots: tasks) { n, _ in
            // The input's pixels are no longer needed: dx is summed in their place.
            let dxT = scratch + n * per, dyT = dxT + hw * cp
            dxT.update(repeating: 0, count: hw * cp)
            for oy in 0..<g.oh {
                for ox in 0..<g.ow {
                    let d = dyT + (oy * g.ow + ox) * cp
                    for ky in 0..<g.kh {
                        let iy = oy * g.sh - g.ph + ky
                        guard iy >= 0 && iy < g.h else { continue }
                        for kx in 0..<g.kw {
                            let ix = ox * g.sw - g.pw + kx
                            guard ix >= 0 && ix < g.w else { continue }
                            let target = dxT + (iy * g.w + ix) * cp, wt = wT + (ky * g.kw + kx) * cp
                            var v = 0
                            while v < cp {
                                store(fmadd(load(target + v), load(wt + v), load(d + v)), target + v)
                                v += w
                            }
                        }
                    }
                }
            }
            transpose(dxT, rows: hw, cols: c, ldx: cp, into: dx + n * c * hw)
        }
    }

    /// The weights (C, KH·KW) as taps × channels (KH·KW, C'), zeros past C.
    private func transposedWeights(_ weights: UnsafePointer<Float>, into wT: UnsafeMutablePointer<Float>) {
        let c = geometry.c, cp = geometry.paddedChannels, taps = geometry.kh * geometry.kw
        for t in 0..<taps {
            for ch in 0..<cp { wT[t * cp + ch] = ch < c ? weights[ch * taps + t] : 0 }
        }
    }
}
