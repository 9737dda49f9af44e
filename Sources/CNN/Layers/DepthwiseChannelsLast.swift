// Depthwise convolution on small planes, channels last.
//
// The plane-by-plane kernel (`GroupedConv2D.depthwise`) computes a row of outputs in a vector, so
// on rows shorter than half a vector (a MobileNet's 7×7, 4×4 and 2×2 stages: 2 of AVX-512's 16
// lanes on a 2×2 plane) most of its work is padding. Here each sample's (C, H, W) block is
// transposed to pixels × channels (H·W, C'), C' = C rounded up to whole vectors, so that a vector
// holds one pixel's next V.scalarCount channels and every lane is an output. The kernel walks the
// output pixels and the taps that fall inside the input; a tap in the zero padding is skipped
// (where the plane kernel adds its weight times 0). Lanes past C hold whatever was there and are
// never written back.

extension ConvGeometry {
    /// A depthwise convolution runs channels last when its output rows fill at most half a vector.
    var depthwiseChannelsLast: Bool { 2 * ow <= V.scalarCount }
    /// The channels rounded up to whole vectors.
    var paddedChannels: Int { (c + V.scalarCount - 1) / V.scalarCount * V.scalarCount }
    /// Floats per sample channels last: the input's pixels, then the output's (or dy's).
    var channelsLastCount: Int { (h * w + oh * ow) * paddedChannels }
}

extension GroupedConv2D {
    /// y = the depthwise convolution of x (batch × C × H × W), plus the bias, then the clamp.
    /// Each task takes whole samples, so every output sums its taps in the same order whatever
    /// the threads.
    func depthwiseChannelsLast(_ x: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               clamp: Clamp, batch: Int, into y: UnsafeMutablePointer<Float>) {
        let g = geometry, c = g.c, cp = g.paddedChannels, hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw
        let per = g.channelsLastCount, w = V.scalarCount
        // At most max(2, batch) samples' blocks, as the model's memory plan counts them.
        let tasks = min(batch, max(2, ThreadPool.shared.threads))
        let scratch = channelsLastScratch.reserve(tasks * per + (taps + 1) * cp).pointer
        let wT = scratch + tasks * per, bT = wT + taps * cp
        transposedWeights(weights, into: wT)
        for ch in 0..<cp { bT[ch] = ch < c ? bias?[ch] ?? 0 : 0 }
        // Channels c0..<c1 of sample n, through the sample's scratch block.
        func run(_ n: Int, _ c0: Int, _ c1: Int, _ xT: UnsafeMutablePointer<Float>) {
            let yT = xT + hw * cp
            transpose(x + (n * c + c0) * hw, rows: c1 - c0, cols: hw, into: xT + c0, ldo: cp)
            for oy in 0..<g.oh {
                for ox in 0..<g.ow {
                    let out = yT + (oy * g.ow + ox) * cp
                    var v = c0
                    while v < c1 {
                        var acc = load(bT + v)
                        for ky in 0..<g.kh {
                            let iy = oy * g.sh - g.ph + ky
                            guard iy >= 0 && iy < g.h else { continue }
                            for kx in 0..<g.kw {
                                let ix = ox * g.sw - g.pw + kx
                                guard ix >= 0 && ix < g.w else { continue }
                                acc = fmadd(acc, load(wT + (ky * g.kw + kx) * cp + v), load(xT + (iy * g.w + ix) * cp + v))
                            }
                        }
                        store(clamp.apply(acc), out + v)
                        v += w
                    }
                }
            }
            transpose(yT + c0, rows: ohw, cols: c1 - c0, ldx: cp, into: y + (n * c + c0) * ohw)
        }
        if batch == 1 && ThreadPool.shared.threads > 1 && cp > w {
            // One image on two threads: the channels split in two at a vector, each task moving its
            // own channels in and out (a channel's outputs read its own input only).
            let half = (cp / w + 1) / 2 * w
            ThreadPool.shared.parallelFor(2) { task in
                run(0, task == 0 ? 0 : half, task == 0 ? min(c, half) : c, scratch)
            }
            return
        }
        ThreadPool.shared.parallelFor(tasks) { task in
            for n in stride(from: task, to: batch, by: tasks) { run(n, 0, c, scratch + task * per) }
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
        ThreadPool.shared.parallelFor(tasks) { task in
            for n in stride(from: task, to: batch, by: tasks) {
                let xT = scratch + n * per
                transpose(x + n * c * hw, rows: c, cols: hw, into: xT, ldo: cp)
                transpose(dy + n * c * ohw, rows: c, cols: ohw, into: xT + hw * cp, ldo: cp)
            }
        }
        if dw != nil || db != nil {
            let sums = channelsLastSums.reserve((taps + 1) * cp)
            sums.update(repeating: 0, count: (taps + 1) * cp)
            let parts = min(vectors, max(1, ThreadPool.shared.threads))
            ThreadPool.shared.parallelFor(parts) { part in
                for v in stride(from: part * w, to: cp, by: parts * w) {
                    for n in 0..<batch {
                        let xT = scratch + n * per, dyT = xT + hw * cp
                        if db != nil {
                            var acc = V()
                            for o in 0..<ohw { acc += load(dyT + o * cp + v) }
                            for l in 0..<w { sums[taps * cp + v + l] += Double(acc[l]) }
                        }
                        guard dw != nil else { continue }
                        for ky in 0..<g.kh {
                            for kx in 0..<g.kw {
                                var acc = V()
                                for oy in 0..<g.oh {
                                    let iy = oy * g.sh - g.ph + ky
                                    guard iy >= 0 && iy < g.h else { continue }
                                    for ox in 0..<g.ow {
                                        let ix = ox * g.sw - g.pw + kx
                                        guard ix >= 0 && ix < g.w else { continue }
                                        acc = fmadd(acc, load(dyT + (oy * g.ow + ox) * cp + v), load(xT + (iy * g.w + ix) * cp + v))
                                    }
                                }
                                let t = ky * g.kw + kx
                                for l in 0..<w { sums[t * cp + v + l] += Double(acc[l]) }
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
        ThreadPool.shared.parallelFor(tasks) { task in
            for n in stride(from: task, to: batch, by: tasks) {
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
    }

    /// The weights (C, KH·KW) as taps × channels (KH·KW, C'), zeros past C.
    private func transposedWeights(_ weights: UnsafePointer<Float>, into wT: UnsafeMutablePointer<Float>) {
        let c = geometry.c, cp = geometry.paddedChannels, taps = geometry.kh * geometry.kw
        for t in 0..<taps {
            for ch in 0..<cp { wT[t * cp + ch] = ch < c ? weights[ch * taps + t] : 0 }
        }
    }
}
