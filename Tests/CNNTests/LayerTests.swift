import Testing
@testable import CNN

@Suite("Layers: fast kernels against the reference, gradients against finite differences", .enabled(if: levelRuns, levelSkipReason))
struct LayerTests {
    @Test(arguments: [
        "input(2,5,6) conv(3,3) flatten",
        "input(2,5,6) conv(3,3,pad=1) flatten",
        "input(3,7,6) conv(4,3x2,stride=2,pad=1x0) flatten",
        "input(1,6,6) conv(2,1,bias=false) flatten",
        "input(2,8,9) conv(5,3,stride=2x1,pad=2) flatten",
        "input(2,3,1) conv(3,3,stride=2,pad=1) flatten",  // taps past both edges of a 1-wide row
        "input(8,6,16) conv(9,3,pad=1) flatten",   // Winograd's outputs a row per vector (AVX-512), 3 rows of tiles
        "input(8,10,8) conv(9,3,pad=1) flatten",   // two rows per vector (AVX-512; one with AVX2), 5 rows of tiles
        "input(8,6,4) conv(9,3,pad=1) flatten",    // two rows per vector with AVX2, 3 rows of tiles
        "input(2,9,40) conv(16,7,stride=3,pad=3) flatten",  // strided rows read in runs
        // Stride 2: rows gathered a vector at a time (35 outputs: two vectors of AVX-512 and a
        // tail, the last taps' reads stopping at the row's end), without padding, odd widths.
        "input(2,5,70) conv(3,7,stride=2,pad=3) flatten",
        "input(1,4,41) conv(2,3,stride=2) flatten",
        "input(1,4,4) conv(40,3,pad=1) flatten",     // 40 output channels: the 4×32 register block
        "input(1,9,9) conv(12,3,pad=1) flatten",     // weight gradient by dot products, K past a vector
        "input(2,8,8) conv(16,3,pad=1) flatten",     // weight gradient by the product, dy transposed in blocks
        "input(2,4,21) conv(3,3x2,pad=1x0) flatten", // stride 1, rows of 20: a vector and a part
        "input(8,6,6) conv(8,3,pad=1) flatten",      // Winograd forward and input gradient
        "input(9,8,10) conv(10,3) flatten",          // the same without padding (dy padded by 2)
        "input(8,4,6) conv(40,3,pad=1) flatten",     // Winograd, dW with a whole panel of dM's tiles and a vector
        // Winograd on odd output sizes (a row and a column of tiles past the plane): 7×7; odd
        // both ways without padding (dy padded by 2); odd rows only, with rows of a vector and of
        // half a vector (AVX-512), padding 2 (dy unpadded).
        "input(8,7,7) conv(16,3,pad=1) flatten",
        "input(8,9,5) conv(9,3) flatten",
        "input(12,7,16) conv(8,3,pad=1) flatten",
        "input(12,3,6) conv(8,3,pad=2) flatten",
        "input(129,3,3) conv(2,3,pad=1) flatten",    // odd with more than 128 channels: im2col
        // Winograd forward, 4 output channels: dx by col2im, in memory the forward did not take.
        "input(16,5,5) conv(4,3,pad=1) flatten",
        "input(16,6,6) conv(4,3,pad=1) flatten",
        "input(5,2,2) conv(7,1) flatten",            // 1×1 on small planes: one product over the batch's pixels
        "input(24,4,4) conv(40,1,bias=false) flatten", // 16 pixels: over the batch with 32-wide panels, per sample below
    ])
    func conv(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        if text.hasPrefix("input(5,2,2)"), let g = (layer as? Conv2D)?.geometry {
            #expect(g.multipliesBatch(2) && !g.multipliesBatch(1))
        }
        if let g = (layer as? Conv2D)?.geometry, g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.c >= 8 {
            #expect(g.winograd == (g.oh % 2 == 0 && g.ow % 2 == 0 || g.c <= 128 || g.oh >= 7 && g.ow >= 7))
        }
        checkLayer(layer, batch: 2)
    }

    /// F(4×4, 3×3) (Winograd4.swift) on planes whose sides are multiples of 4: forward, gradients and
    /// inference against the plain loops (`checkAgainstPlainLoops`: batches of 3 and 1, one and two
    /// threads; the convolution's gradients are checked against finite differences by `conv`, on
    /// smaller planes: here they would take 9 s per case), and one image's on two threads (its rows
    /// of tiles or its output channels cut in two) the bits of one: rows of 4 tiles (a group of N
    /// tiles spanning rows, AVX2; one row a group, AVX-512), also the input gradient's convolution
    /// of dy; 8 tiles a row and 3 rows (a last group half empty with AVX-512, the rows cut after the
    /// first with AVX2); without padding, where dy's convolution (18×18) takes F(2×2). Rows of 7
    /// and 5 tiles (ResNet-18's 28×28; 20 wide): counted in whole quarters of a vector in the lanes,
    /// the tiles past the row neither read as the row's nor written (AVX2, AVX-512).
    @Test(arguments: [
        "input(8,16,16) conv(9,3,pad=1) flatten",
        "input(8,12,32) conv(8,3,pad=1,bias=false) flatten",
        "input(9,18,18) conv(8,3) flatten",
        "input(8,28,28) conv(9,3,pad=1) flatten",
        "input(9,16,20) conv(8,3,pad=1,bias=false) flatten",
    ])
    func winograd4(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        #expect(conv.geometry.winograd4)
        let back = conv.geometry.inputGradientWinograd(outChannels: conv.outputShape.c)
        #expect(back?.winograd4 == text.contains("pad=1"))
        checkAgainstPlainLoops(layer, text)
        var r = TestRandom(3)
        let x = FloatBuffer(r.values(layer.inputShape.count)), dy = FloatBuffer(r.values(layer.outputShape.count))
        let results = threadSettingLock.with {
            [1, 2].map { threads in
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                var rng = Random(seed: 1)
                let y = layer.forward(x, batch: 1, training: true, rng: &rng).array
                return y + (layer.backward(dy, batch: 1, needInputGradient: true)?.array ?? [])
            }
        }
        #expect(results[0] == results[1], "\(text): two threads differ from one")
    }

    /// F(2×2) on an odd plane of at least 7×7 with more than 128 channels (ResNet-18's 512-channel
    /// 7×7 layers; the same transforms as `conv`'s odd planes, checked there against finite
    /// differences on fewer channels): forward, gradients and inference against the plain loops.
    @Test func winogradOddPlaneManyChannels() throws {
        let text = "input(130,7,9) conv(8,3,pad=1) flatten"
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        #expect(conv.geometry.winograd && !conv.geometry.winograd4)
        #expect(conv.geometry.inputGradientWinograd(outChannels: 8) != nil)
        checkAgainstPlainLoops(layer, text)
    }

    /// F(4×4) in training without a kept copy of the input (`readsKeptInput`): forward borders
    /// each sample in its task's slot, and the weight gradient borders it again: against the
    /// plain loops, one and two threads.
    @Test func winograd4LoweringAgain() throws {
        let text = "input(8,8,32) conv(8,3,pad=1) flatten"
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        conv.readsKeptInput = true
        #expect(conv.geometry.winograd4)
        var rng = Random(seed: 1)
        _ = layer.forward(FloatBuffer(count: 3 * layer.inputShape.count), batch: 3, training: true, rng: &rng)
        #expect(conv.lowersInputAgain)
        checkAgainstPlainLoops(layer, text)
    }

    /// A convolution whose input is kept anyway (`readsKeptInput`: after a residual block's ReLU)
    /// keeps no copy and lowers each sample again in backward, a task's channels into its own slot:
    /// Winograd's bordered input (a whole panel of dM's tiles and a vector), im2col at a stride, at stride
    /// 1 and for the product's weight gradient, against the reference and finite differences, on
    /// one and two threads. (The 1×1 product over the batch's pixels and the weight gradient by dot
    /// products read kept columns: they still copy.)
    @Test(arguments: [
        ("input(8,6,6) conv(8,3,pad=1) flatten", true),
        ("input(8,4,6) conv(40,3,pad=1) flatten", true),
        ("input(9,8,10) conv(10,3) flatten", true),
        ("input(2,5,70) conv(3,7,stride=2,pad=3) flatten", true),
        ("input(2,4,21) conv(3,3x2,pad=1x0) flatten", true),
        ("input(2,8,8) conv(16,3,pad=1) flatten", true),
        ("input(16,5,5) conv(4,3,pad=1) flatten", true),
        ("input(5,2,2) conv(7,1) flatten", false),
        ("input(1,9,9) conv(12,3,pad=1) flatten", false),
    ])
    func convLoweringKeptInputAgain(_ text: String, _ lowers: Bool) throws {
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        conv.readsKeptInput = true
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                checkLayer(layer, batch: 2)
                #expect(conv.lowersInputAgain == lowers, "\(text)")
            }
        }
    }

    /// Without a copy to keep (inference, or training that lowers again), a convolution lowers the
    /// product's panels straight from the bordered input (LoweredPanels.swift): the same bits as
    /// the im2col matrix's product (training with a copy). Strides 1 and 2, rows of positions
    /// crossing panels, a short K (panels packed together), K past one block of the product
    /// (360 > 320), output channels past the register blocks; batches of 3 and 1 (two tasks
    /// splitting the image), one and two threads.
    @Test(arguments: [
        "input(3,37,45) conv(32,7,stride=2,pad=3) flatten",
        "input(3,30,27) conv(13,3,stride=2,pad=1) flatten",
        "input(40,9,11) conv(11,3,stride=2,pad=1) flatten",
        "input(5,19,23) conv(9,5,pad=2) flatten",
        "input(129,5,7) conv(12,3,pad=1) flatten",
        "input(2,33,70) conv(20,3x5,stride=1x2,pad=1x2) flatten",
        // Rows of 70 positions: panels that are one stretch of a row (two vector copies a row of K).
        "input(4,6,70) conv(10,3,pad=1) flatten",
        "input(3,9,140) conv(8,7,stride=2,pad=3) flatten",
    ])
    func convLoweredPanels(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        #expect(conv.geometry.lowersPanels && !conv.geometry.winograd, "\(text): not through the lowered panels")
        let p64 = layer.parameters.map { $0.value.array.map(Double.init) }
        var r = TestRandom(9)
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                for batch in [3, 1] {
                    let x = r.values(batch * layer.inputShape.count)
                    var rng = Random(seed: 1)
                    let copied = layer.forward(FloatBuffer(x), batch: batch, training: true, rng: &rng).array
                    let inferred = layer.forward(FloatBuffer(x), batch: batch, training: false, rng: &rng).array
                    let same = inferred == copied   // (not in #expect, which would print both arrays)
                    #expect(same, "\(text): batch \(batch), \(threads) threads: inference differs from the im2col product")
                    let reference = Reference.forward(layer, x.map(Double.init), batch: batch, p64, training: false)
                    let error = maxRelativeError(inferred.prefix(reference.count).map(Double.init), reference)
                    #expect(inferred.count >= reference.count && error < 1e-4, "\(text): inference differs from the reference by \(error)")
                }
            }
        }
    }

    /// The Winograd weight gradient (by the transform, Winograd.swift) cuts the batch in two fixed
    /// halves whatever the threads, each task summing its samples in order: batches of 3 (2 + 1)
    /// and 1, on one and two threads, from a kept copy or the input lowered again, give the same
    /// bits; they match the plain-loop reference, and single-sample steps summed (within rounding).
    /// Planes of 40 × 520 (dM's rows too long to read in place: packed), odd planes (tiles past
    /// them, whose dy counts as zero) with 20 output channels (a partial vector) and a bias, and
    /// 48 channels without padding (a panel and a vector).
    @Test(arguments: ["input(8,40,520) conv(8,3,pad=1,bias=false) flatten", "input(9,7,9) conv(20,3,pad=1) flatten",
                      "input(16,8,6) conv(48,3) flatten"])
    func winogradWeightGradient(_ text: String) throws {
        let (_, a) = try makeLayer(text)
        let (_, b) = try makeLayer(text)
        let copying = try #require(a as? Conv2D), lowering = try #require(b as? Conv2D)
        lowering.readsKeptInput = true
        #expect(copying.geometry.winograd)
        let count = a.inputShape.count, outCount = a.outputShape.count
        var r = TestRandom(3)
        let x = r.values(3 * count), g = r.values(3 * outCount)
        // Samples `samples`' weight gradient, on `threads` threads.
        func gradient(_ conv: Conv2D, _ samples: Range<Int>, threads: Int) -> [Float] {
            ThreadPool.setThreads(threads)
            defer { ThreadPool.setThreads(1) }
            var rng = Random(seed: 1)
            conv.weight.grad?.fill(0)
            let xs = Array(x[samples.lowerBound * count..<samples.upperBound * count])
            let gs = Array(g[samples.lowerBound * outCount..<samples.upperBound * outCount])
            _ = conv.forward(FloatBuffer(xs), batch: samples.count, training: true, rng: &rng)
            _ = conv.backward(FloatBuffer(gs), batch: samples.count, needInputGradient: false)
            return conv.weight.grad?.array ?? []
        }
        threadSettingLock.with {
            for batch in [3, 1] {
                let expected = gradient(copying, 0..<batch, threads: 1)
                for (conv, threads) in [(copying, 2), (lowering, 1), (lowering, 2)] {
                    let same = gradient(conv, 0..<batch, threads: threads) == expected
                    #expect(same, "\(text): batch \(batch), \(threads) threads, lowered \(conv === lowering): other bits")
                }
                let p64 = a.parameters.map { $0.value.array.map(Double.init) }
                let reference = Reference.convBackward(a, x.prefix(batch * count).map(Double.init),
                                                       g.prefix(batch * outCount).map(Double.init), batch: batch, p64).dw
                // Relative to the gradient's scale: a sum over thousands of tiles (the 40 × 520
                // planes) has elements near zero, whose error is the rounding of the large ones.
                let scale = reference.map(abs).max() ?? 1
                let error = maxRelativeError(expected.map(Double.init), reference, floor: 1e-2 * scale)
                #expect(expected.count == reference.count && error < 1e-4, "\(text): batch \(batch): differs from the reference by \(error)")
            }
            let whole = gradient(copying, 0..<3, threads: 2)
            var summed = [Double](repeating: 0, count: whole.count)
            for n in 0..<3 {
                for (i, v) in gradient(copying, n..<n + 1, threads: 1).enumerated() { summed[i] += Double(v) }
            }
            let scale = summed.map(abs).max() ?? 1, error = maxRelativeError(whole.map(Double.init), summed, floor: 1e-2 * scale)
            #expect(error < 1e-4, "\(text): the batch differs from its samples' steps summed by \(error)")
        }
    }

    /// Grouped and depthwise convolutions (their own direct kernel; depthwise at stride 1 and 2 by
    /// rows in registers): strides, padding, rectangular kernels, channel multipliers, without
    /// bias, rows shorter than a vector and longer, on one and two threads.
    @Test(arguments: [
        "input(4,7,6) conv(4,3,pad=1,groups=4) flatten",                 // depthwise
        "input(6,9,8) conv(6,3,stride=2,pad=1,groups=6) flatten",        // depthwise, stride 2
        "input(3,5,37) conv(3,3,pad=1,groups=3) flatten",                // rows of vectors and a part
        "input(2,9,34) conv(2,5,stride=2,pad=2,groups=2,bias=false) flatten", // 5×5, stride 2, even width
        "input(2,7,19) conv(2,3x5,stride=2,pad=1x2,groups=2) flatten",   // rectangular, stride 2
        "input(3,6,11) conv(3,3,groups=3) flatten",                      // no padding
        "input(3,8,7) conv(6,3x2,pad=2x0,groups=3,bias=false) flatten",  // multiplier 2
        "input(8,6,6) conv(4,1,groups=2) flatten",                       // grouped 1×1
        "input(6,10,9) conv(9,5,stride=3x2,pad=2,groups=3) flatten",     // wide kernel, odd strides
        "input(4,5,5) conv(4,3,stride=1,pad=3,groups=4) flatten",        // padding past the kernel's reach
        "input(3,9,21) conv(3,5,pad=2,groups=3,bias=false) flatten",     // depthwise 5×5: input gradient by the forward's kernel
        "input(2,7,19) conv(2,3x5,pad=1x2,groups=2) flatten",            // rectangular, stride 1
        "input(3,6,10) conv(3,3,pad=2,groups=3) flatten",                // padding 2 with a 3×3 kernel: a larger output
        "input(3,4,5) conv(3,1,groups=3) flatten",                       // depthwise 1×1
        // A partial vector stored whole onto the next row but not past the plane: 14 rows of 14;
        // stride 2 onto 3 rows of 14; 9 rows of 28; 5×5 kernels (weights in registers) at strides
        // 1 and 2 on rows of two vectors and a part.
        "input(2,14,14) conv(2,3,pad=1,groups=2) flatten",
        "input(2,6,28) conv(2,3,stride=2,pad=1,groups=2,bias=false) flatten",
        "input(2,9,28) conv(2,3,pad=1,groups=2) flatten",
        "input(2,6,37) conv(2,5,pad=2,groups=2) flatten",
        "input(2,7,75) conv(2,5,stride=2,pad=2,groups=2,bias=false) flatten",
        // The input gradient's rows narrower than half a vector (3 of 8, 7 of 16) under a forward's
        // wider ones: a partial vector stored whole would pass the plane's end (found by fuzzing).
        "input(3,4,3) conv(3,3,pad=2,groups=3) flatten",
        "input(3,3,7) conv(3,3,pad=2,groups=3,bias=false) flatten",
        "input(2,2,5) conv(2,5,pad=4,groups=2) flatten",
        // Channels last (rows of at most half a vector): more channels than a vector, stride 2,
        // a 2×2 plane, padding past the kernel's reach.
        "input(20,4,4) conv(20,3,pad=1,groups=20) flatten",
        "input(18,5,5) conv(18,3,stride=2,pad=1,groups=18,bias=false) flatten",
        "input(5,2,2) conv(5,3,pad=1,groups=5) flatten",
        "input(4,3,4) conv(4,3,pad=3,groups=4) flatten",
        // Weight gradients of up to four vectors at once, and a remainder (5 vectors: 1 and 2
        // threads split them differently); 5×5 taps.
        "input(70,3,3) conv(70,3,pad=1,groups=70) flatten",
        "input(40,4,4) conv(40,5,pad=2,groups=40,bias=false) flatten",
    ])
    func groupedConv(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? GroupedConv2D)
        let g = conv.geometry
        #expect((conv.depthwisePlan != nil) == (g.c == conv.groups && conv.outputShape.c == g.c && g.sh == g.sw && g.sw <= 2))
        #expect((conv.depthwiseGradientPlan != nil) == (conv.depthwisePlan != nil && g.sw == 1 && g.ph < g.kh && g.pw < g.kw))
        if text.hasPrefix("input(5,2,2)") { #expect(g.depthwiseChannelsLast) }
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                checkLayer(layer, batch: 3)
                checkLayer(layer, batch: 1)  // one image on two threads: split by planes or channels
            }
        }
    }

    /// Squeeze-and-excitation against the reference and finite differences, with the activations
    /// EfficientNet (SiLU, sigmoid) and MobileNetV3 (ReLU, hard sigmoid) use, one and two threads.
    @Test(arguments: ["input(6,5,4) se(3) flatten", "input(8,3,7) se(2,act=silu) flatten",
                      "input(4,6,6) se(4,act=relu,gate=hardsigmoid) flatten", "input(5,1,1) se(1,act=gelu) flatten"])
    func squeezeExcite(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let se = try #require(layer as? SqueezeExcite)
        #expect(se.parameters.map(\.name) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        var r = TestRandom(5)
        for p in se.parameters { p.value.copy(from: FloatBuffer(r.values(p.count))) }
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                checkLayer(layer, batch: 3)
            }
        }
    }

    /// Residual and concatenation blocks: the block's forward (its layers fused where they can be:
    /// conv + ReLU, conv + ReLU + max pooling) against the unfused references, and its backward
    /// against finite differences for the input and every parameter of every inner layer.
    @Test(arguments: [
        "input(4,6,6) residual[conv(4,3,pad=1) batchnorm relu conv(4,3,pad=1) batchnorm] flatten",
        "input(3,8,8) residual[conv(6,3,stride=2,pad=1) relu conv(6,3,pad=1,groups=2) | conv(6,1,stride=2) batchnorm] flatten",
        "input(3,6,6) concat[conv(2,1) | conv(3,3,pad=1) relu | ] flatten",
        "input(2,8,8) residual[concat[conv(1,1,stride=2) | conv(1,3,pad=1) relu maxpool(2) conv(1,1) | conv(2,2,stride=2)] se(2) conv(2,1) | avgpool(2)] flatten",
        "input(1,1,6) flatten residual[dense(6) tanh dense(6)]",
    ])
    func blocks(_ text: String) throws {
        let (_, layer) = try makeLayer(text, index: text.contains("flatten residual") ? 1 : 0)
        #expect(layer is Block)
        var r = TestRandom(9)
        for p in layer.parameters where p.name.hasSuffix("weight") || p.name.hasSuffix("bias") {
            p.value.copy(from: FloatBuffer(r.values(p.count, -0.7, 0.7)))
        }
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                checkLayer(layer, batch: 3)
            }
        }
    }

    /// Inference runs 3×3 stride-1 convolutions by Winograd's F(2×2, 3×3) (F(4×4) on planes whose
    /// sides are multiples of 4), and 1×1 ones on the
    /// input itself: forward against the reference, one image and several, with the fused ReLU, on
    /// one and two threads.
    @Test(arguments: [
        "input(8,6,6) conv(16,3,pad=1) flatten",
        "input(9,10,12) conv(5,3,pad=1,bias=false) flatten",
        "input(16,8,8) conv(24,3) flatten",
        "input(8,4,36) conv(8,3,pad=1) relu flatten",     // 18 tiles in a row: more than a vector
        "input(8,6,20) conv(8,3,pad=1) flatten",          // 10 tiles in a row: one vector (AVX-512), two
        "input(8,10,12) conv(16,3,pad=1) relu flatten",   // 6 tiles in a row: two rows in a vector
        "input(8,7,7) conv(16,3,pad=1) relu flatten",     // odd sizes: a row and a column of tiles more
        "input(16,9,37) conv(8,3,pad=1) flatten",         // odd, 19 tiles in a row
        "input(8,6,6) conv(16,1) flatten",                // 1×1: the input is the im2col matrix
        "input(5,12,13) conv(7,1) relu flatten",          // 1×1, one image split between two threads
        "input(8,16,16) conv(16,3,pad=1) relu flatten",   // F(4×4): one image's output channels cut in two
        "input(16,32,32) conv(8,3,pad=1) relu flatten",   // F(4×4): 8 rows of tiles cut in two
    ])
    func convInference(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let conv = try #require(layer as? Conv2D)
        #expect(conv.geometry.winograd != (conv.geometry.kh == 1))
        var r = TestRandom(4)
        let params = layer.parameters
        for p in params { p.value.copy(from: FloatBuffer(r.values(p.count))) }
        let p64 = params.map { $0.value.array.map(Double.init) }
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                for batch in [1, 3] {
                    let x = r.values(batch * layer.inputShape.count)
                    var rng = Random(seed: 1)
                    let y = layer.forward(FloatBuffer(x), batch: batch, training: false, rng: &rng).array
                    var expected = Reference.forward(layer, x.map(Double.init), batch: batch, p64, training: false)
                    if conv.fusedActivation == .relu { expected = expected.map { max($0, 0) } }
                    let e = maxRelativeError(Array(y.prefix(expected.count)).map(Double.init), expected)
                    #expect(e < 1e-4, "\(text), batch \(batch), \(threads) threads: differs from the reference by \(e)")
                }
            }
        }
    }

    /// Two samples share each Winograd product where one sample's tiles fill only half of the
    /// GEMM's panel (`winogradPairsSamples`: 8×8 and 7×7 planes with AVX-512, 4×4 and 3×3 ones with
    /// both levels): each sample's outputs, and in training its input gradient (dy's convolution is
    /// paired too), are the bits of that sample alone; a batch of 5 leaves the last one alone. One
    /// and two threads.
    @Test(arguments: [
        "input(16,8,8) conv(24,3,pad=1) flatten",
        "input(9,7,7) conv(16,3,pad=1,bias=false) flatten",
        "input(8,4,4) conv(8,3,pad=1) flatten",
        "input(12,3,3) conv(10,3,pad=1) flatten",
    ])
    func winogradPairedSamples(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let g = try #require(layer as? Conv2D).geometry
        #expect(g.winograd && !g.winograd4)
        #expect(g.winogradPairsSamples == (g.tiles <= V.scalarCount), "\(text): \(g.tiles) tiles, \(V.scalarCount) lanes")
        let back = try #require(g.inputGradientWinograd(outChannels: layer.outputShape.c))
        #expect(back.winogradPairsSamples == g.winogradPairsSamples)
        var r = TestRandom(7)
        for p in layer.parameters { p.value.copy(from: FloatBuffer(r.values(p.count))) }
        let batch = 5, ic = layer.inputShape.count, oc = layer.outputShape.count
        let x = r.values(batch * ic), dy = r.values(batch * oc)
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                for training in [false, true] {
                    var rng = Random(seed: 1)
                    let y = layer.forward(FloatBuffer(x), batch: batch, training: training, rng: &rng).array
                    let dx = training ? layer.backward(FloatBuffer(dy), batch: batch, needInputGradient: true)?.array ?? [] : []
                    for n in 0..<batch {
                        let alone = layer.forward(FloatBuffer(Array(x[n * ic..<(n + 1) * ic])), batch: 1, training: training, rng: &rng).array
                        #expect(Array(y[n * oc..<(n + 1) * oc]) == Array(alone.prefix(oc)),
                                "\(text), sample \(n), training \(training), \(threads) threads: not the bits of the sample alone")
                        guard training else { continue }
                        let dxAlone = layer.backward(FloatBuffer(Array(dy[n * oc..<(n + 1) * oc])), batch: 1, needInputGradient: true)?.array ?? []
                        #expect(Array(dx[n * ic..<(n + 1) * ic]) == Array(dxAlone.prefix(ic)),
                                "\(text), sample \(n), \(threads) threads: the input gradient is not the bits of the sample alone")
                    }
                }
            }
        }
    }

    @Test(arguments: [
        "input(2,6,6) maxpool(2) flatten",
        "input(2,12,40) maxpool(2) flatten",         // rows long enough for the vector path
        "input(2,7,5) maxpool(3,stride=2) flatten",
        "input(1,6,8) maxpool(2x4) flatten",
        "input(2,7,6) maxpool(3,stride=2,pad=1) flatten",   // ResNet-18's stem pooling
        "input(1,5,6) maxpool(2x3,stride=1,pad=1) flatten",
        "input(2,9,37) maxpool(3,stride=2,pad=1) flatten",  // inference's rows of column maxima: vectors and a tail
        // Inference at stride 2: vectors of windows inside the row, single windows at both edges.
        "input(2,5,112) maxpool(3,stride=2,pad=1) flatten",
        "input(1,6,75) maxpool(5,stride=2,pad=2) flatten",
        // ceil=true: a last window overhanging the input's end (SqueezeNet's, GoogLeNet's pooling).
        "input(2,12,12) maxpool(3,stride=2,ceil=true) flatten",
        "input(2,7,6) maxpool(2,ceil=true) flatten",
        "input(2,9,38) maxpool(3,stride=2,pad=1,ceil=true) flatten",
        "input(2,6,6) avgpool(2) flatten",
        "input(2,7,5) avgpool(3,stride=1) flatten",
        // Padding counted as zeros (Inception's average pooling branch).
        "input(2,7,5) avgpool(3,stride=1,pad=1) flatten",
        "input(1,8,9) avgpool(3,stride=2,pad=1) flatten",
        // Padding not counted: a border window divided by its inputs alone (NASNet's pooling).
        "input(2,7,5) avgpool(3,stride=1,pad=1,count_include_pad=false) flatten",
        "input(1,8,9) avgpool(3x5,stride=2,pad=1x2,count_include_pad=false) flatten",
        "input(3,5,4) globalavgpool flatten",
    ])
    func pooling(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        // Distinct values keep max pooling away from ties, where it is not differentiable.
        var r = TestRandom(3)
        let n = 2 * layer.inputShape.count
        let perm = (0..<n).map { Float($0) / Float(n) - 0.5 }.sorted { _, _ in r.rng.uniform() < 0.5 }
        checkLayer(layer, batch: 2, inputs: perm)
        // Inference takes other paths (max pooling keeps no indices): the same values.
        var rng = Random(seed: 1)
        let x = FloatBuffer(perm)
        let trained = layer.forward(x, batch: 2, training: true, rng: &rng).array
        #expect(layer.forward(x, batch: 2, training: false, rng: &rng).array == trained, "\(text): inference differs")
    }

    @Test(arguments: [
        "input(1,1,7) flatten dense(5)",
        "input(1,1,37) flatten dense(45)",          // edges of the 32-wide kernel
        "input(1,1,29) flatten dense(70)",          // two whole panels at once, then a partial one
        "input(1,1,12) flatten dense(3,bias=false)",
    ])
    func dense(_ text: String) throws {
        let (_, layer) = try makeLayer(text, index: 1)
        checkLayer(layer, batch: 7)
    }

    /// conv → relu → maxpool runs fused (bias and ReLU in the product's output write, ReLU's mask
    /// in the pooling's backward): the whole network's gradients against finite differences of
    /// the unfused reference layers chained in Double.
    @Test(arguments: [
        "input(2,6,6) conv(3,3,pad=1) relu maxpool(2) conv(4,3,pad=1) relu maxpool(2) flatten dense(5)",
        "input(1,12,34) conv(3,3,pad=1) relu maxpool(2) conv(4,3,pad=1) relu maxpool(2) flatten dense(5)",
        "input(1,12,12) conv(8,3,pad=1) relu maxpool(2) conv(8,3,pad=1) relu maxpool(2) flatten dense(5)",
        "input(2,7,7) conv(3,3,pad=1) relu maxpool(2,ceil=true) conv(4,3,pad=1) relu maxpool(3,stride=2,ceil=true) flatten dense(5)",
    ])
    func fusedNetwork(_ text: String) throws {
        let model = try Model(architecture: Architecture(parsing: text), seed: 3)
        let conv = try #require(model.layers[0] as? Conv2D), pool = try #require(model.layers[2] as? MaxPool2D)
        #expect(conv.fusedActivation == .relu && pool.masksNonPositive)
        let batch = 3
        var r = TestRandom(11)
        let x = r.values(batch * model.inputShape.count)
        var rng = Random(seed: 1)
        model.zeroGradients()
        let y = model.forward(FloatBuffer(x), batch: batch, training: true, rng: &rng).array
        let g = r.values(batch * 5)
        model.backward(FloatBuffer(g), batch: batch)
        var params = model.layers.map { $0.parameters.map { $0.value.array.map(Double.init) } }
        func objective(_ p: [[[Double]]]) -> (Double, [Double]) {
            var h = x.map(Double.init)
            for (i, layer) in model.layers.enumerated() { h = Reference.forward(layer, h, batch: batch, p[i], training: true) }
            return (zip(h, g).reduce(0) { $0 + $1.0 * Double($1.1) }, h)
        }
        let forwardError = maxRelativeError(Array(y.prefix(batch * 5)).map(Double.init), objective(params).1)
        #expect(forwardError < 1e-4, "fused forward differs from the reference by \(forwardError)")
        for (li, layer) in model.layers.enumerated() {
            for (pi, p) in layer.parameters.enumerated() {
                guard let grad = p.grad?.array else { continue }
                var numeric: [Double] = []
                for i in 0..<p.count {
                    let v = params[li][pi][i]
                    params[li][pi][i] = v + 1e-5
                    let up = objective(params).0
                    params[li][pi][i] = v - 1e-5
                    let down = objective(params).0
                    params[li][pi][i] = v
                    numeric.append((up - down) / 2e-5)
                }
                let e = maxRelativeError(grad.map(Double.init), numeric)
                #expect(e < 2e-3, "layer \(li) \(p.name): gradient differs from finite differences by \(e)")
            }
        }
    }

    @Test(arguments: ["relu", "leakyrelu", "leakyrelu(alpha=0.2)", "sigmoid", "tanh", "relu6", "hardsigmoid", "hardswish", "silu", "gelu"])
    func activations(_ name: String) throws {
        let (_, layer) = try makeLayer("input(2,3,4) \(name) flatten")
        checkLayer(layer, batch: 3)
        // Again over -8...8, through every piece of the piecewise ones (their kinks at -3, 0, 3
        // and 6 kept 0.05 away, where finite differences are meaningful), on a batch long enough
        // to be split between threads.
        let (_, wide) = try makeLayer("input(4,64,64) \(name) flatten")
        var r = TestRandom(7)
        let x: [Float] = (0..<(5 * wide.inputShape.count)).map { _ in
            var v: Float
            repeat { v = r.rng.uniform() * 16 - 8 } while [-3, 0, 3, 6].contains { abs(v - $0) < 0.05 }
            return v
        }
        try threadSettingLock.with {
            ThreadPool.setThreads(2)
            defer { ThreadPool.setThreads(1) }
            let (_, small) = try makeLayer("input(1,1,60) \(name) flatten")
            checkLayer(small, batch: 2, inputs: Array(x.prefix(120)))
            var rng = Random(seed: 1)
            let y = wide.forward(FloatBuffer(x), batch: 5, training: true, rng: &rng).array
            let expected = Reference.forward(wide, x.map(Double.init), batch: 5, [], training: true)
            #expect(maxRelativeError(y.map(Double.init), expected) < 1e-5)
        }
    }

    /// At the kinks the gradient is PyTorch's: ReLU6 (hardtanh) and HardSigmoid pass nothing at
    /// their ends, HardSwish is x/3 + 1/2 on [-3, 3], ends included.
    @Test func activationKinks() throws {
        let cases: [(String, [Float], [Float])] = [
            ("relu6", [0, 6, -1, 3, 7], [0, 0, 0, 1, 0]),
            ("hardsigmoid", [-3, 3, 0, -4, 4], [0, 0, Float(1) / 6, 0, 0]),
            ("hardswish", [-3, 3, 0, -4, 4], [-0.5, 1.5, 0.5, 0, 1]),
        ]
        for (name, x, expected) in cases {
            let (_, layer) = try makeLayer("input(1,1,5) \(name) flatten")
            var rng = Random(seed: 1)
            _ = layer.forward(FloatBuffer(x), batch: 1, training: true, rng: &rng)
            let dx = layer.backward(FloatBuffer([Float](repeating: 1, count: 5)), batch: 1, needInputGradient: true)!.array
            #expect(Array(dx.prefix(5)) == expected, "\(name)")
        }
    }

    @Test func flatten() throws {
        let (_, layer) = try makeLayer("input(2,3,4) flatten")
        checkLayer(layer, batch: 2)
    }

    /// Zeros on any side (ZeroPad2d; TensorFlow's "same" at stride 2 pads one more at the end),
    /// over an output buffer that held other values (the borders are written every call).
    @Test(arguments: ["input(2,3,4) zeropad(1) flatten", "input(3,5,2) zeropad(0,1,0,1) flatten",
                      "input(1,4,3) zeropad(2,0,3,1) flatten", "input(2,1,1) zeropad(0,0,2,0) flatten"])
    func zeroPad(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        var rng = Random(seed: 2)
        let y = layer.forward(FloatBuffer([Float](repeating: 9, count: 3 * layer.inputShape.count)), batch: 3, training: true, rng: &rng)
        y.fill(7)  // as a buffer shared with other layers may hold: the zeros must be written again
        checkLayer(layer, batch: 3)
    }

    @Test func dropout() throws {
        let (_, layer) = try makeLayer("input(2,3,4) dropout(0.4) flatten")
        checkLayer(layer, batch: 3, training: true)
        checkLayer(layer, batch: 3, training: false)
        guard let d = layer as? Dropout else { Issue.record("not a dropout layer"); return }
        var rng = Random(seed: 5)
        _ = layer.forward(FloatBuffer(count: 3 * 24), batch: 3, training: true, rng: &rng)
        let mask = d.mask.array.prefix(72)
        let kept = mask.filter { $0 != 0 }
        #expect(kept.allSatisfy { abs($0 - 1 / 0.6) < 1e-6 })
        #expect(kept.count > 20 && kept.count < 65)
    }

    // Planes of 4, 2 and 1 values in groups of channels (BatchNormSmallPlanes.swift), with a
    // remainder of channels a plane at a time.
    @Test(arguments: ["input(3,4,5) batchnorm flatten", "input(1,1,6) flatten batchnorm(eps=0.001,momentum=0.2)",
                      "input(37,2,2) batchnorm flatten", "input(35,2,1) batchnorm flatten", "input(1,1,40) flatten batchnorm"])
    func batchNorm(_ text: String) throws {
        let index = text.contains("flatten batchnorm") ? 1 : 0
        let (_, layer) = try makeLayer(text, index: index)
        guard let bn = layer as? BatchNorm else { Issue.record("not batch norm"); return }
        var r = TestRandom(11)
        bn.weight.value.copy(from: FloatBuffer(r.values(bn.weight.count, 0.5, 1.5)))
        bn.bias.value.copy(from: FloatBuffer(r.values(bn.bias.count)))
        checkLayer(layer, batch: 4, training: true)
        // Running statistics moved towards the batch's; inference uses them.
        #expect(bn.batchesTracked == 1)
        #expect(bn.runningMean.value.array.contains { $0 != 0 })
        checkLayer(layer, batch: 4, training: false)
    }

    /// Inference with the running statistics (a norm not folded into a convolution: after a
    /// concatenation, DenseNet's): x·a + b, then the fused ReLU or ReLU6, the same bits as the
    /// formula one value at a time, on one thread and two (the first case spans three chunks).
    @Test(arguments: ["input(40,24,24) batchnorm flatten", "input(6,5,7) batchnorm relu flatten",
                      "input(5,3,3) batchnorm relu6 flatten"])
    func batchNormInference(_ text: String) throws {
        let (_, layer) = try makeLayer(text)
        let bn = try #require(layer as? BatchNorm)
        #expect(bn.activation == (text.contains("relu6") ? .relu6 : text.contains("relu") ? .relu : nil))
        var r = TestRandom(3)
        let c = bn.inputShape.c, batch = 2
        bn.weight.value.copy(from: FloatBuffer(r.values(c, -2, 2)))
        bn.bias.value.copy(from: FloatBuffer(r.values(c, -2, 2)))
        bn.runningMean.value.copy(from: FloatBuffer(r.values(c)))
        bn.runningVar.value.copy(from: FloatBuffer(r.values(c, 0.1, 3)))
        let x = r.values(batch * bn.inputShape.count, -8, 8)
        let (g, beta, m, v) = (bn.weight.value.array, bn.bias.value.array, bn.runningMean.value.array, bn.runningVar.value.array)
        let s = bn.inputShape.h * bn.inputShape.w
        let expected: [Float] = x.indices.map { i in
            let ch = i / s % c, a = g[ch] / (v[ch] + bn.eps).squareRoot(), b = beta[ch] - m[ch] * a
            let y = x[i] * a + b
            return bn.activation == nil ? y : y < 0 ? 0 : bn.activation == .relu6 && y > 6 ? 6 : y
        }
        threadSettingLock.with {
            for threads in [1, 2] {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                var rng = Random(seed: 1)
                let y = bn.forward(FloatBuffer(x), batch: batch, training: false, rng: &rng).array.prefix(x.count)
                #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "\(threads) threads")
            }
        }
    }
}

@Suite("Losses", .enabled(if: levelRuns, levelSkipReason))
struct LossTests {
    @Test(arguments: [(LossKind.crossEntropy, 0.0), (.crossEntropy, 0.1), (.mse, 0.0)])
    func gradient(_ kind: LossKind, _ smoothing: Double) {
        var r = TestRandom(5)
        let b = 4, k = 5
        let z = r.values(b * k, -3, 3)
        let labels: [Int32] = [0, 3, 4, 1]
        var grad = [Float](repeating: 0, count: b * k)
        let result = z.withUnsafeBufferPointer { zp in labels.withUnsafeBufferPointer { lp in grad.withUnsafeMutableBufferPointer { gp in
            computeLoss(kind, logits: zp.baseAddress!, labels: lp.baseAddress!, batch: b, classes: k,
                        labelSmoothing: Float(smoothing), gradient: gp.baseAddress!)
        } } }
        let z64 = z.map(Double.init)
        let reference = Reference.loss(kind, z64, labels: labels, classes: k, smoothing: smoothing)
        #expect(abs(result.sum / Double(b) - reference) < 1e-5)
        let h = 1e-6
        for i in 0..<z64.count {
            var a = z64, c = z64
            a[i] += h; c[i] -= h
            let numeric = (Reference.loss(kind, a, labels: labels, classes: k, smoothing: smoothing)
                - Reference.loss(kind, c, labels: labels, classes: k, smoothing: smoothing)) / (2 * h)
            #expect(abs(Double(grad[i]) - numeric) < 1e-5, "\(kind) logit \(i)")
        }
    }

    @Test func crossEntropyIsStableForHugeLogits() {
        let z: [Float] = [1000, -1000, 0, 80, 1e30, -1e30]
        let labels: [Int32] = [1, 2]
        let r = z.withUnsafeBufferPointer { zp in labels.withUnsafeBufferPointer { lp in
            computeLoss(.crossEntropy, logits: zp.baseAddress!, labels: lp.baseAddress!, batch: 2, classes: 3)
        } }
        #expect(r.sum.isFinite)
        #expect(abs(r.sum - (2000 + 2e30)) / 2e30 < 1e-3)
    }
}
