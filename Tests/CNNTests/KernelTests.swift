import Foundation
import Testing
@testable import CNN

/// The matrix products against plain loops in Double, on sizes that hit every edge of the
/// register blocks (rows and columns past a whole block, K past a whole vector, K below one).
@Suite("Matrix kernels against plain loops", .enabled(if: levelRuns, levelSkipReason))
struct KernelTests {
    // (16, 48, 20) and (12, 8, 5): a last panel of exactly one vector (AVX-512, AVX2), which
    // the half-panel kernels take. (9, 33, 17), (16, 48, 20), (24, 300, 16) and (13, 200, 64):
    // a short K, rows running along several packed panels (`gemmTileShortK`), over chunks of
    // panels with a partial last one, B's rows packed across a group's whole panels at once;
    // (24, 300, 144): few rows, whose panels are packed for L2 (seven at a time), in two groups,
    // the last with two whole panels and a partial one. Rows past the last whole register block
    // (`remainderRows`: blocks of 4 and 2 rows, then one), with 6-row (AVX2) and 8-row (AVX-512)
    // blocks: 4 + 1 (17), 4 (64, 16), 2 + 1 and 4 + 2 + 1 (15), 4 and 4 + 2 (22, a short K), 1 and
    // 4 + 1 (13).
    static let sizes = [(1, 1, 1), (3, 5, 7), (8, 32, 16), (9, 33, 17), (17, 70, 300), (64, 196, 288), (5, 40, 9), (40, 7, 600),
                        (16, 48, 20), (12, 8, 5), (24, 300, 16), (13, 200, 64), (15, 40, 300), (22, 70, 9),
                        (24, 300, 144)]

    @Test(arguments: sizes)
    func gemmAllLayouts(_ size: (Int, Int, Int)) {
        let (m, n, k) = size
        var r = TestRandom(UInt64(m * 1000 + n * 10 + k))
        let a = r.values(m * k), b = r.values(k * n), c0 = r.values(m * n)
        for transA in [false, true] {
            for transB in [false, true] {
                for accumulate in [false, true] {
                  for epilogue in [Clamp.none, .relu, .relu6] {
                    // A stored (M, K) or (K, M); B stored (K, N) or (N, K). The epilogue: a bias per
                    // row and ReLU or ReLU6 (a convolution's fused output write); biases up to ±8
                    // with ReLU6, so that outputs pass its cap.
                    let bias = r.values(m).map { epilogue == .relu6 ? 8 * $0 : $0 }
                    var expected = [Double](repeating: 0, count: m * n)
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = accumulate ? Double(c0[i * n + j]) : 0
                            for t in 0..<k {
                                let av = transA ? a[t * m + i] : a[i * k + t]
                                let bv = transB ? b[j * k + t] : b[t * n + j]
                                s += Double(av) * Double(bv)
                            }
                            expected[i * n + j] = epilogue == .none ? s : min(max(0, s + Double(bias[i])), epilogue == .relu6 ? 6 : .infinity)
                        }
                    }
                    var c = c0
                    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        bias.withUnsafeBufferPointer { biasp in
                            gemm(m: m, n: n, k: k, a: ap.baseAddress!, aRow: transA ? 1 : k, aCol: transA ? m : 1,
                                 b: bp.baseAddress!, ldb: transB ? 1 : n, bCol: transB ? k : 1,
                                 c: cp.baseAddress!, ldc: n, accumulate: accumulate,
                                 rowBias: epilogue == .none ? nil : biasp.baseAddress!, clamp: epilogue, parallel: true)
                        }
                    } } }
                    let e = maxRelativeError(c.map(Double.init), expected)
                    #expect(e < 1e-4, "gemm \(m)x\(n)x\(k) transA \(transA) transB \(transB) accumulate \(accumulate) epilogue \(epilogue): error \(e)")
                  }
                }
            }
        }
    }

    /// The product over a batch's pixels read from and written to the samples' planes: against
    /// plain loops, and the same bits as the product sample by sample. Sizes: panels that span
    /// two samples (49, 100 pixels) or several (4), K past one packed block (400 > KC: the staged
    /// block accumulates), rows past a whole register block; B as planes or as one matrix. The
    /// samples' planes lie apart, with NaN between them, which must stay untouched.
    @Test(arguments: [(16, 49, 3, 20), (13, 4, 9, 7), (24, 100, 2, 400), (8, 196, 2, 64), (3, 49, 5, 33), (15, 49, 2, 40)])
    func gemmOverSamplesMatchesLoops(_ size: (Int, Int, Int, Int)) {
        let (m, p, batch, k) = size
        var r = TestRandom(UInt64(m * 100 + p * 10 + batch + k))
        let inStride = k * p + 5, outStride = m * p + 7, columns = batch * p
        let a = r.values(m * k), bias = r.values(m).map { 8 * $0 }
        var x = [Float](repeating: .nan, count: batch * inStride)
        for n in 0..<batch { for t in 0..<k * p { x[n * inStride + t] = r.rng.uniform() * 2 - 1 } }
        // The same pixels as one (K, B·P) matrix.
        var matrix = [Float](repeating: 0, count: k * columns)
        for n in 0..<batch { for t in 0..<k { for q in 0..<p { matrix[t * columns + n * p + q] = x[n * inStride + t * p + q] } } }
        for clamp in [Clamp.none, .relu6] {
            var expected = [Float](repeating: .nan, count: batch * outStride), bySample = expected
            for n in 0..<batch {
                for i in 0..<m {
                    for q in 0..<p {
                        var s = Double(bias[i])
                        for t in 0..<k { s += Double(a[i * k + t]) * Double(x[n * inStride + t * p + q]) }
                        expected[n * outStride + i * p + q] = Float(clamp == .none ? s : min(max(0, s), 6))
                    }
                }
                a.withUnsafeBufferPointer { ap in x.withUnsafeBufferPointer { xp in bySample.withUnsafeMutableBufferPointer { yp in
                    bias.withUnsafeBufferPointer { bp in
                        gemm(m: m, n: p, k: k, a: ap.baseAddress!, aRow: k, aCol: 1, b: xp.baseAddress! + n * inStride, ldb: p,
                             c: yp.baseAddress! + n * outStride, ldc: p, accumulate: false, rowBias: bp.baseAddress!, clamp: clamp)
                    }
                } } }
            }
            for asMatrix in [false, true] {
                var y = [Float](repeating: .nan, count: batch * outStride)
                a.withUnsafeBufferPointer { ap in y.withUnsafeMutableBufferPointer { yp in bias.withUnsafeBufferPointer { bp in
                    (asMatrix ? matrix : x).withUnsafeBufferPointer { source in
                        let layout: SampleColumns = asMatrix ? .matrix(ld: columns) : .planes(p, sampleStride: inStride)
                        // Uneven pieces of columns, as tasks would take them.
                        for (j0, j1) in [(0, min(columns, 37)), (min(columns, 37), columns)] where j0 < j1 {
                            gemmSamples(i0: 0, i1: m, j0: j0, j1: j1, k: k, a: ap.baseAddress!, aRow: k, aCol: 1,
                                        b: source.baseAddress!, layout, c: yp.baseAddress!, .planes(p, sampleStride: outStride),
                                        rowBias: bp.baseAddress!, clamp: clamp)
                        }
                    }
                } } }
                let label = "\(m)x\(p)x\(batch)x\(k) \(clamp) matrix \(asMatrix)"
                let differing = zip(y, bySample).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(label): \(differing) elements differ from the per-sample product's bits")
                let written = (0..<y.count).filter { !expected[$0].isNaN }
                #expect(written.allSatisfy { !y[$0].isNaN } && y.indices.allSatisfy { !expected[$0].isNaN || y[$0].isNaN },
                        "\(label): wrote outside the planes or missed an output")
                let e = maxRelativeError(written.map { Double(y[$0]) }, written.map { Double(expected[$0]) })
                #expect(e < 1e-4, "\(label): error \(e)")
            }
        }
    }

    @Test(arguments: sizes)
    func gemmNTMatchesLoops(_ size: (Int, Int, Int)) {
        let (m, n, k) = size
        var r = TestRandom(UInt64(m * 7 + n * 3 + k))
        // Rows padded past K (lda, ldb > k) so that reading past a row's end would show.
        let lda = k + 3, ldb = k + 5
        let a = r.values(m * lda, -1, 1), b = r.values(n * ldb, -1, 1), c0 = r.values(m * n)
        var expected = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = Double(c0[i * n + j])
                for t in 0..<k { s += Double(a[i * lda + t]) * Double(b[j * ldb + t]) }
                expected[i * n + j] = s
            }
        }
        var c = c0
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            gemmNT(i0: 0, i1: m, j0: 0, j1: n, k: k, a: ap.baseAddress!, lda: lda, b: bp.baseAddress!, ldb: ldb,
                   c: cp.baseAddress!, ldc: n)
        } } }
        let e = maxRelativeError(c.map(Double.init), expected)
        #expect(e < 1e-4, "gemmNT \(m)x\(n)x\(k): error \(e)")
    }

    /// The activations' vector eˣ: within 3 ulp of the exact value wherever the result is a
    /// normal float, +inf above 88.72, 0 below -87.34, NaN kept, every lane on its own.
    @Test func vectorExp() {
        var worst: Double = 0
        var r = TestRandom(5)
        var xs: [Float] = (0..<20_000).map { _ in r.rng.uniform() * 175 - 87 }
        xs += [0, -0, 1, -1, 1e-8, -1e-8, 0.34657359, -0.34657359, 88.7, 88.72, -87.3, -87.33]
        for start in stride(from: 0, to: xs.count, by: V.scalarCount) {
            var v = V(repeating: 0)
            for l in 0..<V.scalarCount where start + l < xs.count { v[l] = xs[start + l] }
            let e = exp(v)
            for l in 0..<V.scalarCount where start + l < xs.count {
                let exact = Foundation.exp(Double(v[l]))
                worst = max(worst, abs(Double(e[l]) - exact) / exact)
            }
        }
        #expect(worst < 3 * 5.96e-8, "relative error \(worst)")
        var edges = V(repeating: 0)
        let cases: [Float] = [89, 1000, .infinity, -88, -1000, -.infinity, .nan, 0]
        for (l, c) in cases.prefix(V.scalarCount).enumerated() { edges[l] = c }
        let e = exp(edges)
        #expect(e[0] == .infinity && e[1] == .infinity && e[2] == .infinity)
        #expect(e[3] == 0 && e[4] == 0 && e[5] == 0)
        #expect(e[6].isNaN && e[7] == 1)
    }

    /// Distributed training's sum in shared memory: floats lo..<hi of every rank's block summed in
    /// rank order and written to all of them, the plain loop's bits, nothing outside touched.
    @Test func sharedGradientSumIsThePlainLoops() {
        var r = TestRandom(11)
        for ranks in 1...4 {
            let n = 75
            let values = (0..<ranks).map { _ in r.values(n, -3, 3) }
            let blocks = values.map { FloatBuffer($0) }
            // Two ranks' slices with vector parts and tails.
            for (lo, hi) in [(0, 37), (37, 75)] {
                SharedGradients.sum(blocks.map(\.pointer), from: lo, to: hi)
            }
            for j in 0..<n {
                var s = values[0][j]
                for k in 1..<ranks { s += values[k][j] }
                for b in blocks { #expect(b[j].bitPattern == s.bitPattern) }
            }
            let partial = values.map { FloatBuffer($0) }
            SharedGradients.sum(partial.map(\.pointer), from: 5, to: 21)
            for (k, b) in partial.enumerated() {
                for j in 0..<n where j < 5 || j >= 21 { #expect(b[j] == values[k][j]) }
            }
        }
    }

    /// The pixel check before a prediction: the first value outside [0, 1] (NaN, a value just past
    /// either end) wherever it falls, in a whole vector or in the tail; 0, -0 and 1 pass.
    @Test func firstValueOutsideTheUnitInterval() {
        for count in [0, 5, 16, 37, 100] {
            var x = (0..<count).map { Float($0 % 7) / 6 }
            if count > 2 { x[1] = -0.0; x[2] = 1 }
            #expect(firstOutsideUnitInterval(x, count: count) == nil, "count \(count)")
            for bad in [Float.nan, Float(1).nextUp, -Float.leastNonzeroMagnitude, .infinity, 255] {
                for at in Set([0, count / 2, count - 1]) where count > 0 {
                    var y = x
                    y[at] = bad
                    if at + 3 < count { y[at + 3] = 2 }  // a later one is not reported
                    #expect(firstOutsideUnitInterval(y, count: count) == at, "count \(count), \(bad) at \(at)")
                }
            }
        }
    }

    // Rows or columns of 1, 2 or 4 (narrowColumns, storeNarrowRows) from (37, 4) on.
    @Test(arguments: [(1, 1), (5, 3), (16, 16), (17, 33), (64, 196), (40, 8), (3136, 128),
                      (37, 4), (160, 2), (33, 1), (4, 37), (2, 160), (1, 50), (4, 16), (16, 4), (8, 4), (4, 8)])
    func transposeMatchesLoops(_ size: (Int, Int)) {
        let (rows, cols) = size
        var r = TestRandom(UInt64(rows * 31 + cols))
        let x = r.values(rows * cols)
        var out = [Float](repeating: .nan, count: rows * cols)
        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
            transpose(xp.baseAddress!, rows: rows, cols: cols, into: op.baseAddress!)
        } }
        var wrong = 0
        for i in 0..<rows { for j in 0..<cols where out[j * rows + i] != x[i * cols + j] { wrong += 1 } }
        #expect(wrong == 0, "transpose \(rows)x\(cols): \(wrong) elements wrong")
    }

    /// padInput of some rows (one image's half on two threads) writes those rows of every plane as
    /// the whole image's bordering does, and the row after them, and nothing above them: borders of
    /// one and two, rows shorter than a vector, ranges at the top, in the middle, at the bottom,
    /// past it, and empty.
    @Test(arguments: [(3, 8, 8, 1), (2, 9, 11, 1), (2, 7, 5, 2), (3, 32, 32, 1), (2, 16, 14, 2), (1, 5, 3, 1)])
    func paddingRowsMatchesWholeImage(_ shape: (Int, Int, Int, Int)) {
        let (c, h, w, pad) = shape
        let g = ConvGeometry(c: c, h: h, w: w, kh: 3, kw: 3, sh: 1, sw: 1, ph: pad, pw: pad)
        let hp = g.paddedH, wp = g.paddedW, sentinel = Float(-7)
        var r = TestRandom(UInt64(h * 100 + w))
        let x = r.values(c * h * w)
        var whole = [Float](repeating: sentinel, count: g.paddedCount)
        x.withUnsafeBufferPointer { xp in
            whole.withUnsafeMutableBufferPointer { padInput(xp.baseAddress!, g, $0.baseAddress!, readable: x.count) }
        }
        for rows in [0..<3, 2..<hp / 2 + 1, hp / 2..<hp, hp - 2..<hp + 4, 4..<4] {
            var part = [Float](repeating: sentinel, count: g.paddedCount)
            x.withUnsafeBufferPointer { xp in
                part.withUnsafeMutableBufferPointer { padInput(xp.baseAddress!, g, $0.baseAddress!, readable: x.count, rows: rows) }
            }
            let written = rows.isEmpty ? 0..<0 : max(0, rows.lowerBound)..<min(hp, rows.upperBound + 1)
            var wrong = 0
            for ch in 0..<c {
                for row in 0..<hp {
                    let at = (ch * hp + row) * wp
                    if written.contains(row) {
                        wrong += (0..<wp).filter { part[at + $0] != whole[at + $0] }.count
                    } else if row < written.lowerBound || written.isEmpty {
                        wrong += (0..<wp).filter { part[at + $0] != sentinel }.count
                    }
                }
            }
            #expect(wrong == 0, "padInput \(shape) rows \(rows): \(wrong) elements wrong")
        }
    }

    // col2im at column stride 2 (vectors of even and odd columns) against the element loop: the
    // same bits, added to a dx already holding values. 3×3 and 1×1 as in ResNets' strided layers
    // (ResNet-20's 32 and 16 wide: a last block whose reads past the row are masked off, or,
    // in the last row of dcol, taken element by element), odd widths (a last odd column), 5×5
    // with one or two columns of padding (reads before the row), an even kernel, rows shorter
    // than a vector, and row stride 1.
    @Test(arguments: [(3, 8, 8, 3, 3, 2, 1), (2, 9, 11, 3, 3, 2, 1), (4, 16, 16, 1, 1, 2, 0), (2, 7, 45, 5, 5, 2, 2),
                      (3, 10, 37, 3, 3, 1, 0), (2, 12, 40, 4, 4, 2, 1), (1, 5, 3, 3, 3, 2, 1), (2, 32, 64, 3, 3, 2, 1),
                      (2, 16, 16, 3, 3, 2, 1), (3, 32, 32, 3, 3, 2, 1), (2, 9, 20, 5, 5, 2, 1)])
    func col2imStride2MatchesElementLoop(_ shape: (Int, Int, Int, Int, Int, Int, Int)) {
        let (c, h, w, k, kw, sh, pad) = shape
        let g = ConvGeometry(c: c, h: h, w: w, kh: k, kw: kw, sh: sh, sw: 2, ph: pad, pw: pad)
        var r = TestRandom(UInt64(c * 1000 + w))
        let dcol = r.values(g.colRows * g.colCols), dx = r.values(c * h * w)
        var fast = dx, loops = dx
        dcol.withUnsafeBufferPointer { d in
            fast.withUnsafeMutableBufferPointer { col2im(d.baseAddress!, g, $0.baseAddress!) }
            loops.withUnsafeMutableBufferPointer { col2imByElements(d.baseAddress!, g, $0.baseAddress!) }
        }
        let wrong = zip(fast, loops).filter { $0.0.bitPattern != $0.1.bitPattern }.count
        #expect(wrong == 0, "col2im \(shape): \(wrong) of \(dx.count) elements differ")
    }

    /// A sample's prediction is the same bits whatever batch it is in and however many threads
    /// run it: batch 1 takes other paths (output positions split over two threads, the dense
    /// layer's unpacked rows; strided convolutions' output rows split, and the output channels
    /// of convolutions on few positions: 10×10, 7×7, 1×1 and strided; Winograd's rows of tiles)
    /// that must do the same operations in the same order.
    @Test(arguments: [
        referenceNetwork,
        "input(3,40,40) conv(16,7,stride=2,pad=3) relu conv(20,3,stride=2,pad=1) conv(24,1) relu " +
            "conv(16,1,stride=2) conv(17,3,pad=1) batchnorm relu conv(16,3) flatten dense(5)",
        // 1×1 on 196 positions at batch 1: an expansion split by output channels, a projection by columns.
        "input(8,14,14) conv(64,1) relu6 conv(16,1) flatten dense(3)",
        // 49 positions at batch 1, output channels in whole panels: the product transposed
        // (strided, 5×5 with K past a packed block, 1×1 without lowering; with and without bias).
        "input(8,14,14) conv(64,3,stride=2,pad=1) relu conv(64,5,pad=2) conv(32,1,bias=false) relu6 flatten dense(3)",
        // Winograd at batch 1 split by rows of tiles, a residual sum in the last one's write.
        "input(8,32,32) residual[conv(16,3,pad=1) relu conv(8,3,pad=1)] relu flatten dense(3)",
    ])
    func predictionsDoNotDependOnBatchOrThreads(_ text: String) throws {
        try threadSettingLock.with {
            let model = try Model(architecture: Architecture(parsing: text), seed: 5)
            // Biases start at zero: give them values, so that their part in every path is checked.
            var biases = TestRandom(3)
            for (name, p) in model.namedParameters where name.hasSuffix("bias") { p.value.copy(from: FloatBuffer(biases.values(p.count))) }
            let n = 9
            var r = TestRandom(8)
            let x = r.values(n * model.inputShape.count, 0, 1)
            var results: [[Float]] = []
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                x.withUnsafeBufferPointer { xp in
                    results.append(model.predict(xp.baseAddress!, batch: n, logits: true))
                    var single: [Float] = []
                    for i in 0..<n { single += model.predict(xp.baseAddress! + i * model.inputShape.count, batch: 1, logits: true) }
                    results.append(single)
                }
            }
            for (i, result) in results.enumerated() {
                #expect(result == results[0], "run \(i) (batch \(i % 2 == 0 ? n : 1), \(i / 2 + 1) threads) differs")
            }
        }
    }

    /// `predict` runs large images a few at a time (a power of two whose largest activation stays
    /// within its budget), small ones 32 at a time; a batch across chunks predicts each image as
    /// alone.
    @Test func predictionChunksKeepLargeActivationsSmall() throws {
        #expect(try Model(architecture: Architecture(parsing: referenceNetwork), seed: 1).predictionChunk == 32)
        let model = try Model(architecture: Architecture(parsing: "input(3,224,224) conv(96,3,stride=2,pad=1) relu globalavgpool flatten dense(3)"), seed: 2)
        #expect(model.largestActivation == 96 * 112 * 112)
        #expect(model.predictionChunk == 8)  // 16 Mi floats / 1.2 M: 13, down to a power of two
        let n = 10
        var r = TestRandom(4)
        let x = r.values(n * model.inputShape.count, 0, 1)
        x.withUnsafeBufferPointer { xp in
            let all = model.predict(xp.baseAddress!, batch: n, logits: true)
            var single: [Float] = []
            for i in 0..<n { single += model.predict(xp.baseAddress! + i * model.inputShape.count, batch: 1, logits: true) }
            #expect(all == single)
        }
    }

    /// A convolution followed by 2×2 max pooling pools its own output (Winograd: per tile, and in
    /// inference multiplied by tiles, with partial vectors and panels of channels, small planes
    /// bordered in registers with padding 0, 1 or 2; im2col: from
    /// each task's scratch, the output channels split at batch 1; few input channels in
    /// inference: directly, blocks of channels with a partial last one) and keeps the pooling's
    /// indices in training; a ReLU between is fused too. Logits and gradients must be the bits of
    /// the separate layers: ReLU or not, bias or not, odd sizes (the last row and column dropped),
    /// one image or three, one thread or two, inference and training.
    @Test(arguments: [
        "input(1,12,34) conv(3,3,pad=1) relu maxpool(2) conv(4,3,pad=1) relu maxpool(2) flatten dense(5)",
        "input(9,8,10) conv(16,3,pad=1) relu maxpool(2) conv(16,3) maxpool(2) flatten dense(5)",
        "input(2,11,9) conv(16,2) relu maxpool(2) flatten dense(3)",
        "input(3,13,37) conv(5,3,bias=false) relu maxpool(2) flatten dense(4)",
        "input(1,9,6) conv(6,3,pad=1) maxpool(2) flatten dense(2)",
        "input(8,6,10) conv(20,3,pad=1) relu maxpool(2) flatten dense(3)",
        "input(8,4,6) conv(40,3,pad=1) maxpool(2) flatten dense(3)",
        "input(8,8,12) conv(16,3) relu maxpool(2) flatten dense(3)",
        "input(8,4,6) conv(12,3,pad=2) maxpool(2) flatten dense(3)",
        // Winograd on a 7×7 output: the pooling stays a layer of its own (the first is fused).
        "input(8,14,14) conv(8,3,pad=1) relu maxpool(2) conv(16,3,pad=1) relu maxpool(2) flatten dense(3)",
        referenceNetwork,
    ])
    func fusedPoolingMatchesSeparateLayers(_ text: String) throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate(text)
            // Biases start at zero: give them values, so that their part in every path is checked.
            var biases = TestRandom(5)
            for (name, p) in fused.namedParameters where name.hasSuffix("bias") { p.value.copy(from: FloatBuffer(biases.values(p.count))) }
            for (a, b) in zip(fused.namedParameters, separate.namedParameters) { b.parameter.value.copy(from: a.parameter.value) }
            #expect(fused.layers.contains { ($0 as? Conv2D)?.pooling != nil })
            #expect(!separate.layers.contains { ($0 as? Conv2D)?.pooling != nil })
            for case let conv as Conv2D in fused.layers where conv.geometry.winograd && conv.geometry.oh % 2 == 1 {
                #expect(conv.pooling == nil)
            }
            var r = TestRandom(4)
            expectSameBits(fused, separate, inputs: r.values(3 * fused.inputShape.count), gradients: r.values(3 * fused.numClasses))
        }
    }

    /// A convolution pooled as it is written runs F(2×2) (its tiles are the pooling's windows) on
    /// a plane where the same layer unpooled runs F(4×4): gradients within 1e-4 of the separate
    /// layers' (the forwards round differently, so not the same bits), batches of 3 and 1, one
    /// and two threads.
    @Test func pooledWinogradBesideWinograd4() throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate("input(8,16,16) conv(8,3,pad=1) maxpool(2) flatten dense(3)")
            for (a, b) in zip(fused.namedParameters, separate.namedParameters) { b.parameter.value.copy(from: a.parameter.value) }
            let conv = try #require(fused.layers.first as? Conv2D)
            #expect(conv.pooling != nil && conv.geometry.winograd4)
            var r = TestRandom(8)
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                for batch in [3, 1] {
                    let x = FloatBuffer(r.values(batch * fused.inputShape.count)), g = r.values(batch * fused.numClasses)
                    let gradients = [fused, separate].map { model in
                        var rng = Random(seed: 1)
                        _ = model.forward(x, batch: batch, training: true, rng: &rng)
                        model.zeroGradients()
                        model.backward(FloatBuffer(g), batch: batch)
                        return model.gradients.map { $0.array.map(Double.init) }
                    }
                    for (a, b) in zip(gradients[0], gradients[1]) {
                        #expect(maxRelativeError(a, b) < 1e-4, "\(threads) threads, batch \(batch): \(maxRelativeError(a, b))")
                    }
                }
            }
        }
    }

    /// A ReLU or ReLU6 right after a convolution (Winograd, im2col, strided, 1×1, grouped,
    /// depthwise planar and channels last) is applied in its output write, and a SiLU at inference:
    /// logits and gradients must be the bits of the separate layers, with inputs and biases past
    /// ReLU6's cap. A ReLU6 before max pooling keeps the pooling a layer of its own.
    @Test(arguments: [
        "input(8,10,10) conv(16,3,pad=1) relu6 conv(16,3,pad=1,groups=16) relu6 conv(16,3,stride=2,pad=1,groups=16) relu " +
            "conv(24,1) relu6 maxpool(2) flatten dense(3)",
        "input(32,4,4) conv(32,3,pad=1,groups=32) relu6 conv(32,1) relu conv(16,3,pad=1,groups=4) relu6 flatten dense(3)",
        "input(3,9,9) conv(8,3,stride=2) relu6 conv(12,2) relu6 flatten dense(3)",
        "input(8,10,10) conv(16,3,pad=1) silu conv(16,3,pad=1,groups=16) silu conv(16,3,stride=2,pad=1,groups=16) silu " +
            "conv(24,1) silu flatten dense(3)",
        "input(32,4,4) conv(32,3,pad=1,groups=32) silu conv(32,1) silu conv(16,3,pad=1,groups=4) silu flatten dense(3)",
        "input(3,9,9) conv(8,3,stride=2) silu conv(12,2) silu flatten dense(3)",
        // Depthwise rows of whole vectors and a part (3×3 and 5×5 kernels in registers, strides 1 and 2).
        "input(4,7,37) conv(4,3,pad=1,groups=4) relu6 conv(4,5,stride=2,pad=2,groups=4) silu conv(4,5,pad=2,groups=4) relu " +
            "conv(4,3,stride=2,pad=1,groups=4) relu6 flatten dense(3)",
    ])
    func fusedActivationsMatchSeparateLayers(_ text: String) throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate(text)
            var values = TestRandom(5)
            for (name, p) in fused.namedParameters {
                if name.hasSuffix("bias") { p.value.copy(from: FloatBuffer(values.values(p.count, -8, 8))) }
                if name.hasSuffix("weight") { p.value.copy(from: FloatBuffer(values.values(p.count, -2, 2))) }
            }
            for (a, b) in zip(fused.namedParameters, separate.namedParameters) { b.parameter.value.copy(from: a.parameter.value) }
            let convs = fused.layers.filter { $0 is Conv2D || $0 is GroupedConv2D }
            #expect(convs.allSatisfy {
                let conv = $0 as? Conv2D, grouped = $0 as? GroupedConv2D
                return (conv?.fusedActivation ?? grouped!.fusedActivation) != .none || (conv?.inferenceActivation ?? grouped!.inferenceActivation) == .silu
            })
            #expect(!fused.layers.contains { ($0 as? Conv2D)?.pooling != nil })
            var r = TestRandom(4)
            expectSameBits(fused, separate, inputs: r.values(3 * fused.inputShape.count, -4, 4), gradients: r.values(3 * fused.numClasses))
        }
    }

    /// A residual block whose body ends with a convolution has it write the sum at inference, with
    /// the activation after the block: logits and gradients must be the bits of the separate
    /// layers on every path that convolution can take (Winograd's output writes for rows of a
    /// vector, half a vector, a whole plane in one vector, rows that spill, odd sizes, F(4×4) rows of
    /// 5 tiles whose last quarter of a vector is partly past the row (20 wide); im2col split
    /// by columns, by rows, sample by sample, K past one packed block; a 1×1 over a batch's pixels
    /// with blocks staged across samples; a strided shortcut; SiLU and ReLU6 after the sum, and
    /// none).
    @Test(arguments: [
        "input(8,16,16) residual[conv(8,3,pad=1) relu conv(8,3,pad=1)] relu flatten dense(3)",
        "input(8,8,8) residual[conv(8,3,pad=1) relu conv(8,3,pad=1)] relu6 flatten dense(3)",
        "input(8,7,7) residual[conv(8,3,pad=1) relu conv(8,3,pad=1)] relu flatten dense(3)",
        "input(8,20,20) residual[conv(8,3,pad=1)] relu residual[conv(8,3,pad=1)] relu flatten dense(3)",
        "input(8,13,11) residual[conv(16,3,pad=1) relu conv(8,3,pad=1)] silu flatten dense(3)",
        "input(4,16,16) residual[conv(4,3,pad=1) relu conv(4,3,pad=1)] relu flatten dense(3)",
        "input(16,6,6) residual[conv(16,5,pad=2)] relu flatten dense(3)",
        "input(16,5,5) residual[conv(8,5,pad=2) relu conv(16,5,pad=2)] relu globalavgpool flatten dense(3)",
        "input(8,12,12) residual[conv(16,3,stride=2,pad=1) relu conv(16,3,pad=1) | conv(16,1,stride=2)] relu flatten dense(3)",
        "input(8,14,14) residual[conv(32,1) relu6 conv(32,3,pad=1,groups=32) relu6 conv(8,1)] flatten dense(3)",
        "input(16,7,7) residual[conv(64,1) relu6 conv(16,1)] silu residual[conv(16,1)] flatten dense(3)",
        // Batch 1 on 49 positions: the product transposed, the sum added as it is transposed back.
        "input(8,14,14) residual[conv(64,3,stride=2,pad=1) relu conv(64,5,pad=2) | conv(64,1,stride=2)] relu flatten dense(3)",
        "input(32,7,7) residual[conv(64,1) relu conv(32,1)] relu6 flatten dense(3)",
    ])
    func residualSumInTheWriteMatchesSeparateLayers(_ text: String) throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate(text)
            var values = TestRandom(9)
            for (name, p) in fused.namedParameters where name.hasSuffix("bias") { p.value.copy(from: FloatBuffer(values.values(p.count, -2, 2))) }
            for (a, b) in zip(fused.namedParameters, separate.namedParameters) { b.parameter.value.copy(from: a.parameter.value) }
            #expect(fused.layers.contains { ($0 as? Residual)?.sumsInLastConvolution != nil })
            #expect(!separate.layers.contains { ($0 as? Residual)?.sumsInLastConvolution != nil })
            var r = TestRandom(4)
            expectSameBits(fused, separate, inputs: r.values(3 * fused.inputShape.count, -4, 4), gradients: r.values(3 * fused.numClasses))
        }
    }

    /// One image on two threads through Winograd: its rows of tiles cut in two where
    /// `winogradTileRowCut` allows (F(2×2) on planes 16 wide with AVX2's vectors, 32 and 64 with
    /// either, an odd height, whose last row of tiles is half outside; F(4×4) on 64 wide), its output
    /// channels otherwise (F(4×4) on 16×16): each convolution's outputs are the bits of one thread,
    /// which transforms the whole plane at once. (With a residual sum in the write:
    /// `predictionsDoNotDependOnBatchOrThreads`.)
    @Test(arguments: [
        "input(8,31,32) conv(12,3,pad=1) conv(8,3,pad=1)",
        "input(16,16,16) conv(16,3,pad=1) conv(16,3,pad=1)",
        "input(8,16,64) conv(8,3,pad=1) conv(9,3)",
    ])
    func winogradImageOnTwoThreadsMatchesOne(_ text: String) throws {
        try threadSettingLock.with {
            let convs = try [0, 1].map { try #require(makeLayer(text + " flatten", index: $0).1 as? Conv2D) }
            #expect(convs.allSatisfy { $0.geometry.winograd })
            if text.hasPrefix("input(8,") {
                #expect(convs.contains { $0.geometry.unpooledTileRowCut != nil }, "\(text): no convolution cuts its rows of tiles")
            }
            var r = TestRandom(4)
            let inputs = convs.map { r.values($0.inputShape.count, -2, 2) }
            var outputs: [[[Float]]] = []
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                outputs.append(zip(convs, inputs).map { conv, input in
                    var rng = Random(seed: 1)
                    return conv.forward(FloatBuffer(input), batch: 1, training: false, rng: &rng).array
                })
            }
            for (i, conv) in convs.enumerated() {
                let same = outputs[0][i] == outputs[1][i]
                #expect(same, "\(text): convolution \(i) (F(4×4): \(conv.geometry.winograd4), cut at tile row \(String(describing: conv.geometry.unpooledTileRowCut)))")
            }
        }
    }

    /// A squeeze-and-excitation before a 1×1 convolution hands its gates to the convolution at
    /// inference, which scales its input channels while packing them: logits and gradients must be
    /// the bits of the separate layers, on every path of a 1×1 convolution (batch 1 split by rows or
    /// columns, a short K, fewer rows than a register block, the batch's pixels as one product,
    /// sample by sample; inside a residual block).
    @Test(arguments: [
        "input(16,7,7) conv(32,1) silu se(8,act=silu) conv(24,1) flatten dense(3)",
        "input(8,14,14) conv(16,3,pad=1,groups=8) se(4) conv(64,1) relu flatten dense(3)",
        "input(8,16,16) conv(8,1) se(4) conv(40,1) flatten dense(3)",
        "input(4,6,6) se(2) conv(5,1) flatten dense(3)",
        "input(8,8,8) residual[conv(8,3,pad=1,groups=8) se(4,act=relu) conv(8,1)] relu flatten dense(3)",
    ])
    func gatedProductMatchesSeparateLayers(_ text: String) throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate(text)
            var values = TestRandom(7)
            for (name, p) in fused.namedParameters where name.hasSuffix("bias") { p.value.copy(from: FloatBuffer(values.values(p.count))) }
            for (a, b) in zip(fused.namedParameters, separate.namedParameters) { b.parameter.value.copy(from: a.parameter.value) }
            func gated(_ layers: [Layer]) -> Bool {
                layers.contains { ($0 as? Conv2D)?.gatedBy != nil || ($0 as? Block)?.sequences.contains { gated($0.layers) } ?? false }
            }
            #expect(gated(fused.layers) && !gated(separate.layers))
            var r = TestRandom(4)
            expectSameBits(fused, separate, inputs: r.values(3 * fused.inputShape.count), gradients: r.values(3 * fused.numClasses))
        }
    }

    /// Batch norm after a convolution (im2col, Winograd, strided, 1×1, grouped, depthwise, the
    /// direct first-layer path, inside a residual block), and a ReLU after it, are folded into the
    /// convolution at inference: the logits must be the separate layers' up to rounding, the same
    /// bits at one and two threads, made again when the weights or statistics change; training
    /// runs the layers as written (the same bits as the separate layers).
    @Test(arguments: [
        "input(3,10,12) conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,stride=2,pad=1) batchnorm flatten dense(4)",
        "input(4,9,9) conv(8,3,pad=1,groups=4) batchnorm relu6 conv(16,1) batchnorm relu globalavgpool flatten dense(3)",
        "input(8,8,8) conv(8,3,stride=2,pad=1,groups=8) batchnorm relu flatten dense(3)",
        "input(1,28,28) conv(16,3,pad=1) batchnorm relu maxpool(2) conv(32,3,pad=1) batchnorm relu flatten dense(3)",
        "input(4,8,8) residual[conv(4,3,pad=1,bias=false) batchnorm relu conv(4,3,pad=1,bias=false) batchnorm] relu globalavgpool flatten dense(3)",
        "input(8,10,10) conv(8,3,pad=1,bias=false) batchnorm relu6 conv(16,1) batchnorm relu6 conv(16,3,pad=1,groups=16) batchnorm relu6 conv(8,3,stride=2,pad=1) batchnorm relu6 flatten dense(3)",
        "input(16,4,4) conv(16,3,pad=1,groups=16,bias=false) batchnorm relu6 conv(8,1,bias=false) batchnorm relu6 flatten dense(3)",
        // A SiLU after the norm goes into the output write too (at inference only).
        "input(8,10,10) conv(8,3,pad=1,bias=false) batchnorm silu conv(16,1) batchnorm silu conv(16,3,pad=1,groups=16) batchnorm silu " +
            "conv(8,3,stride=2,pad=1) batchnorm silu flatten dense(3)",
    ])
    func batchNormFoldedAtInference(_ text: String) throws {
        try threadSettingLock.with {
            let (fused, separate) = try fusedAndSeparate(text)
            #expect(fused.namedLayers.contains { ($0.layer as? Conv2D)?.folding != nil || ($0.layer as? GroupedConv2D)?.folding != nil })
            #expect(!separate.namedLayers.contains { ($0.layer as? Conv2D)?.folding != nil || ($0.layer as? GroupedConv2D)?.folding != nil })
            let count = fused.inputShape.count, classes = fused.numClasses
            var r = TestRandom(4)
            let x = r.values(3 * count), g = r.values(3 * classes)
            // Statistics and affine parameters far from their initial 0 and 1, biases not zero.
            func randomize(_ seed: UInt64) {
                var values = TestRandom(seed)
                for (name, p) in fused.namedParameters {
                    let v: [Float]
                    switch name.split(separator: ".").last ?? "" {
                    // Seed 13: variances so small that the normalized values pass ReLU6's cap.
                    case "running_var": v = seed == 13 ? values.values(p.count, 0.002, 0.02) : values.values(p.count, 0.3, 2)
                    case "weight" where p.shape.count == 1: v = values.values(p.count, 0.5, 1.5)
                    case "weight": let scale = values.values(1, 0.8, 1.2)[0]; v = p.value.array.map { $0 * scale }
                    default: v = values.values(p.count, -0.5, 0.5)
                    }
                    p.value.copy(from: FloatBuffer(v))
                    p.version += 1
                }
                for (a, b) in zip(fused.namedParameters, separate.namedParameters) {
                    b.parameter.value.copy(from: a.parameter.value)
                    b.parameter.version += 1
                }
            }
            for seed: UInt64 in [5, 9, 13] {
                randomize(seed)
                for batch in [1, 3] {
                    let input = FloatBuffer(Array(x.prefix(batch * count)))
                    var byThreads: [[Float]] = []
                    for threads in [1, 2] {
                        ThreadPool.setThreads(threads)
                        defer { ThreadPool.setThreads(1) }
                        var rng = Random(seed: 1)
                        let y = fused.forward(input, batch: batch, training: false, rng: &rng).array
                        let z = separate.forward(input, batch: batch, training: false, rng: &rng).array
                        let scale = z.map { abs($0) }.max() ?? 1
                        let worst = zip(y, z).map { abs($0 - $1) }.max() ?? 0
                        #expect(worst <= 1e-5 * max(1, scale), "inference, seed \(seed), batch \(batch), \(threads) threads: \(worst)")
                        byThreads.append(y)
                    }
                    #expect(byThreads[0] == byThreads[1], "inference, seed \(seed), batch \(batch): 1 and 2 threads differ")
                }
            }
            // Training: the batch's statistics, every layer as written.
            var outputs: [[Float]] = [], gradients: [[[Float]]] = []
            for model in [fused, separate] {
                var rng = Random(seed: 1)
                outputs.append(model.forward(FloatBuffer(x), batch: 3, training: true, rng: &rng).array)
                model.zeroGradients()
                model.backward(FloatBuffer(g), batch: 3)
                gradients.append(model.gradients.map { $0.array })
            }
            #expect(outputs[0] == outputs[1], "training logits")
            #expect(gradients[0] == gradients[1], "training gradients")
        }
    }

    /// The model of `text` planned (and set up by `configure`) and one whose layers keep buffers of
    /// their own, the plan's reference, with the same parameters (biases and running means not 0).
    private func plannedAndOwn(_ text: String, _ configure: (Model) -> Void = { _ in }) throws -> (Model, Model) {
        let architecture = try Architecture(parsing: text)
        let planned = try Model(architecture: architecture, seed: 6)
        let own = try Model(architecture: architecture, fusing: true, planning: false)
        configure(planned)
        var values = TestRandom(5)
        for (name, p) in planned.namedParameters where name.hasSuffix("bias") || name.hasSuffix("running_mean") {
            p.value.copy(from: FloatBuffer(values.values(p.count, -0.3, 0.3)))
        }
        try own.assign(from: planned)
        return (planned, own)
    }

    /// Blocks one after the other (residual blocks, then a concatenation, nested ones, and a
    /// projection shortcut that adds its input gradient into the body's, after a layer that passes
    /// through): a block's dy may then be in the buffers of the next one's sequences.
    static let adjacentBlocks = "input(4,8,8) conv(8,1) batchnorm residual[conv(8,3,pad=1) batchnorm relu conv(8,1) batchnorm] " +
        "residual[conv(8,1) batchnorm relu6 conv(8,3,pad=1,groups=8) batchnorm] concat[residual[conv(8,3,pad=1) relu] | conv(4,1)] " +
        "residual[residual[conv(12,3,pad=1) batchnorm] conv(12,1)] relu dropout(0) " +
        "residual[conv(16,3,stride=2,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] residual[conv(16,1) relu] flatten dense(3)"

    /// The memory plan (MemoryPlan.swift): layers whose outputs and input gradients take turns on
    /// shared buffers must compute the same bits as layers that each keep their own, in training
    /// (logits and every gradient, two steps in a row) and at inference, at one and two threads,
    /// for every kind of layer and block (what backward reads: a dense layer's, a grouped
    /// convolution's, SE's input, sigmoid's and tanh's output, dropout's mask; pass-through layers;
    /// residual and concatenation blocks, nested), and hold less memory.
    @Test(arguments: [
        referenceNetwork,
        "input(3,10,12) conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,stride=2,pad=1) batchnorm relu6 flatten dense(4)",
        "input(4,8,8) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu " +
            "residual[conv(16,3,stride=2,pad=1) batchnorm relu conv(16,3,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] relu globalavgpool flatten dense(3)",
        "input(4,9,9) conv(8,1) batchnorm relu6 residual[conv(16,1) batchnorm silu conv(16,3,pad=1,groups=16) batchnorm hardswish se(4,act=silu) conv(8,1) batchnorm] " +
            "conv(8,3,stride=2,pad=1,groups=4) sigmoid globalavgpool flatten dropout(0.5) dense(3)",
        "input(3,8,8) concat[conv(4,1) relu | conv(4,3,pad=1) tanh | ] maxpool(2) flatten dense(6) relu dropout(0.3) dense(5) sigmoid dense(3)",
        "input(2,6,6) concat[residual[conv(2,3,pad=1) relu] | conv(3,1) leakyrelu(0.1) | residual[concat[conv(1,1) | conv(1,3,pad=1) gelu] batchnorm]] relu avgpool(2) flatten dense(3)",
        // Convolutions that lower their input again in backward: after a norm (with and without
        // its ReLU or ReLU6, inside a block and at its start), after a kept ReLU output (Winograd,
        // at a stride, at stride 1 without Winograd), and the 1×1 ones that still copy.
        "input(3,9,9) conv(6,3,pad=1,bias=false) batchnorm conv(8,5,pad=2) batchnorm relu residual[conv(8,3,pad=1) batchnorm relu " +
            "conv(8,3,pad=1,bias=false) batchnorm] relu conv(4,3,pad=1) relu residual[conv(4,3,pad=1) batchnorm] relu " +
            "conv(6,3,stride=2) batchnorm relu6 conv(6,1) batchnorm conv(16,1) flatten dense(3)",
        adjacentBlocks,
        // A residual block with a projection shortcut right after a concatenation (a fuzzing
        // finding): it returned its sum in its body's buffer, which the concatenation's first
        // branch then wrote its input gradient over while the other branches still read from it.
        "input(9,10,10) conv(66,1,stride=2,groups=3,bias=false) se(2,act=relu,gate=hardsigmoid) concat[conv(3,1) | conv(5,3,pad=1) tanh] " +
            "residual[conv(74,3,stride=2,pad=1,bias=false) batchnorm tanh conv(74,3,pad=1,bias=false) batchnorm | conv(74,1,stride=2,bias=false) batchnorm] tanh globalavgpool flatten dense(2)",
        "input(4,5,5) conv(4,1) se(2) concat[conv(3,1) | conv(5,3,pad=1) tanh] residual[conv(6,3,stride=2,pad=1) tanh conv(6,3,pad=1) | conv(6,1,stride=2)] flatten dense(5)",
        "input(4,5,5) conv(4,1) concat[conv(3,1) | conv(5,3,pad=1) tanh] residual[conv(6,3,stride=2,pad=1) batchnorm tanh conv(6,3,pad=1) batchnorm | conv(6,1,stride=2) batchnorm] tanh flatten dense(5)",
        "input(3,6,6) conv(3,1) residual[conv(3,3,pad=1) tanh conv(3,3,pad=1)] residual[conv(6,3,stride=2,pad=1) tanh conv(6,3,pad=1) | conv(6,1,stride=2)] flatten dense(5)",
        // Zero padding before a convolution (TensorFlow's "same" at stride 2), inside a block and after a kept output.
        "input(3,8,8) zeropad(0,1,0,1) conv(6,3,stride=2) batchnorm relu residual[zeropad(1) conv(6,3) relu] zeropad(2,0,1,1) maxpool(2) flatten dense(4)",
    ])
    func memoryPlanComputesTheSameBits(_ text: String) throws {
        try threadSettingLock.with {
            let (planned, own) = try plannedAndOwn(text)
            expectSameBits(planned, own, batches: [1, 3], inputKept: true)
            #expect(planned.bufferFloats < own.bufferFloats, "planned \(planned.bufferFloats) floats, own \(own.bufferFloats)")
        }
    }

    /// Recomputed blocks (`Model.recomputesBlocks`, MemoryPlanner): top-level residual and
    /// concatenation blocks that keep nothing for backward and run forward again first must
    /// compute the same bits as blocks that keep their layers' outputs, in training (logits, every
    /// gradient, running statistics, two steps) and at inference, at one and two threads: blocks
    /// in a row and after layers that pass through, a shortcut, nested blocks, SE, dropout inside
    /// a block (the same masks again), a block on the network's input (not recomputed), blocks
    /// one after the other. With blocks of one shape in a row, the plan holds less.
    @Test(arguments: [
        "input(4,8,8) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu " +
            "residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu " +
            "residual[conv(16,3,stride=2,pad=1) batchnorm relu conv(16,3,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] relu globalavgpool flatten dense(3)",
        "input(4,9,9) conv(8,1) batchnorm relu6 residual[conv(16,1) batchnorm silu conv(16,3,pad=1,groups=16) batchnorm hardswish se(4,act=silu) conv(8,1) batchnorm] " +
            "residual[conv(16,1) batchnorm relu6 dropout(0.4) conv(16,3,pad=1,groups=16) batchnorm relu6 conv(8,1) batchnorm] " +
            "conv(8,3,stride=2,pad=1,groups=4) sigmoid globalavgpool flatten dropout(0.5) dense(3)",
        "input(2,6,6) concat[residual[conv(2,3,pad=1) relu] | conv(3,1) leakyrelu(0.1) | residual[concat[conv(1,1) | conv(1,3,pad=1) gelu] batchnorm]] relu " +
            "concat[residual[conv(7,3,pad=1) batchnorm relu] | conv(3,1) batchnorm | ] avgpool(2) flatten dense(3)",
        "input(3,8,8) residual[conv(3,3,pad=1) batchnorm relu conv(3,3,pad=1) batchnorm] flatten residual[dense(12) batchnorm relu dense(192)] dense(3)",
        adjacentBlocks,
    ])
    func recomputedBlocksComputeTheSameBits(_ text: String) throws {
        try threadSettingLock.with {
            let (recomputing, own) = try plannedAndOwn(text) { $0.recomputesBlocks = true }
            #expect(recomputing.layers.contains { ($0 as? Block)?.recomputation != nil })
            expectSameBits(recomputing, own, batches: [1, 3], inputKept: true)
            let norms = { (m: Model) in m.namedLayers.compactMap { ($0.layer as? BatchNorm)?.batchesTracked } }
            #expect(norms(recomputing) == norms(own), "batches tracked")
            if text.hasPrefix("input(4,8,8) conv(8,3,pad=1)") {
                // The same steps with the blocks keeping their layers' outputs.
                let keeping = try Model(architecture: recomputing.architecture, seed: 6)
                var rng = Random(seed: 1)
                _ = keeping.forward(FloatBuffer(count: 3 * keeping.inputShape.count), batch: 3, training: true, rng: &rng, inputKept: true)
                keeping.backward(FloatBuffer(count: 3 * keeping.numClasses), batch: 3)
                #expect(recomputing.bufferFloats < keeping.bufferFloats, "recomputing \(recomputing.bufferFloats) floats, keeping \(keeping.bufferFloats)")
            }
        }
    }

    /// Batch norm over planes of 1, 2 or 4 values goes a group of channels at a time
    /// (BatchNormSmallPlanes.swift): the same bits as plane by plane, in training (outputs, running
    /// statistics, input and parameter gradients, with and without a fused ReLU or ReLU6, with and
    /// without the input gradient) and at inference, at one and two threads (whose tasks split the
    /// channels into groups and a remainder), and planes of 3 and 9 values left to the plane loop.
    @Test(arguments: [
        "input(37,2,2) batchnorm relu6 conv(40,1) batchnorm relu conv(19,1) batchnorm relu6 conv(21,3,pad=1,groups=1) batchnorm flatten dense(3)",
        "input(35,1,4) batchnorm conv(33,1,bias=false) batchnorm relu flatten dense(40) batchnorm relu dense(17) batchnorm dense(3)",
        "input(6,9,9) conv(48,3,stride=4) batchnorm relu6 conv(32,2) batchnorm relu conv(40,1,stride=2) batchnorm flatten dense(3)",
        "input(5,3,3) conv(34,1) batchnorm relu conv(36,3,pad=1) batchnorm conv(20,3,stride=3) batchnorm relu6 flatten dense(3)",
    ])
    func batchNormSmallPlanes(_ text: String) throws {
        try threadSettingLock.with {
            let architecture = try Architecture(parsing: text)
            let grouped = try Model(architecture: architecture, seed: 6), planes = try Model(architecture: architecture, seed: 6)
            var values = TestRandom(8)
            for (name, p) in grouped.namedParameters where name.hasSuffix("bias") || name.hasSuffix("weight") && p.count < 64 {
                p.value.copy(from: FloatBuffer(values.values(p.count, -0.6, 0.9)))
            }
            try planes.assign(from: grouped)
            let norms = planes.namedLayers.compactMap { $0.layer as? BatchNorm }
            #expect(norms.count >= 3)
            for norm in norms { norm.groupsSmallPlanes = false }
            let small = grouped.namedLayers.compactMap { $0.layer as? BatchNorm }.filter {
                let s = $0.inputShape.h * $0.inputShape.w
                return (s == 1 || s == 2 || s == 4) && $0.inputShape.c >= BatchNorm.group
            }
            #expect(!small.isEmpty, "no norm over small planes in groups")
            expectSameBits(grouped, planes, batches: [1, 5], input: (-2, 3))
        }
    }

    /// In training, a convolution after a batch norm or after a layer's kept output (the ReLU after
    /// a residual block) keeps no copy of its input (MemoryPlan.swift): in a ResNet every one but
    /// the first, which reads the network's input (unless the caller keeps it, as the training
    /// loop does), and the 1×1 shortcut, whose weight gradient (8 rows) is by dot products over
    /// kept columns. Frozen layers run at inference: the first trained convolution after them, fed
    /// their copied output, keeps its own copy.
    @Test func convolutionsLowerKeptInputsAgain() throws {
        let text = "input(3,8,8) conv(8,3,pad=1,bias=false) batchnorm relu " +
            "residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu " +
            "residual[conv(16,3,stride=2,pad=1,bias=false) batchnorm relu conv(16,3,pad=1,bias=false) batchnorm " +
            "| conv(16,1,stride=2,bias=false) batchnorm] relu globalavgpool flatten dense(3)"
        let model = try Model(architecture: Architecture(parsing: text), seed: 2)
        let convs = model.namedLayers.compactMap { $0.layer as? Conv2D }
        #expect(convs.count == 6)
        var rng = Random(seed: 1)
        var r = TestRandom(4)
        let x = FloatBuffer(r.values(2 * model.inputShape.count))
        _ = model.forward(x, batch: 2, training: true, rng: &rng)
        #expect(convs.map(\.lowersInputAgain) == [false, true, true, true, true, false])
        _ = model.forward(x, batch: 2, training: true, rng: &rng, inputKept: true)
        #expect(convs.map(\.lowersInputAgain) == [true, true, true, true, true, false])
        try model.freeze(until: 3)
        _ = model.forward(x, batch: 2, training: true, rng: &rng, inputKept: true)
        #expect(convs.map(\.lowersInputAgain) == [false, false, true, true, true, false])
    }
}

/// The network of `text` with its layers fused (seed 6) and without (the parameters to be copied).
private func fusedAndSeparate(_ text: String) throws -> (Model, Model) {
    let architecture = try Architecture(parsing: text)
    return (try Model(architecture: architecture, seed: 6), try Model(architecture: architecture, fusing: false))
}

/// A model with its layers fused and the same model without: logits and gradients must be the same
/// bits with one thread or two, for one image or three, in inference and training.
private func expectSameBits(_ fused: Model, _ separate: Model, inputs x: [Float], gradients g: [Float]) {
    let count = fused.inputShape.count, classes = fused.numClasses
    for threads in [1, 2] {
        ThreadPool.setThreads(threads)
        defer { ThreadPool.setThreads(1) }
        for batch in [1, 3] {
            let input = FloatBuffer(Array(x.prefix(batch * count)))
            for training in [false, true] {
                var outputs: [[Float]] = [], gradients: [[[Float]]] = []
                for model in [fused, separate] {
                    var rng = Random(seed: 1)
                    outputs.append(model.forward(input, batch: batch, training: training, rng: &rng).array)
                    if training {
                        model.zeroGradients()
                        model.backward(FloatBuffer(Array(g.prefix(batch * classes))), batch: batch)
                        gradients.append(model.gradients.map { $0.array })
                    }
                }
                let run = "\(threads) threads, batch \(batch), training \(training)"
                #expect(outputs[0] == outputs[1], "logits: \(run)")
                if training { #expect(gradients[0] == gradients[1], "gradients: \(run)") }
            }
        }
    }
}
