import Testing
@testable import CNN

/// Every convolution and pooling path on planes 1 to 9 wide, the shapes where a kernel's whole-vector loads
/// and stores reach past a row, a plane or a buffer: a vector is 4, 8 or 16 floats, so rows here
/// are narrower than a vector, than half of one, and a vector and a part. The depthwise kernel
/// stored a partial vector past its plane on such rows (found by fuzzing); these sweeps look for
/// the same in every path. Each case runs forward (training and inference) and backward, on
/// batches of 3 and 1, on one and two threads (where a store into a neighbour's plane can land
/// after the neighbour wrote it), against plain loops; under AddressSanitizer (`make sanitize`) a
/// store past a buffer stops the run.
@Suite("Narrow planes: every convolution path on rows of 1 to 9, against plain loops", .enabled(if: levelRuns, levelSkipReason))
struct NarrowPlaneTests {
    /// Dense convolutions: 1×1 (on the input, over the batch's pixels), 3×3 at stride 1 with 8 or
    /// more channels (Winograd), the rest by im2col; weight gradients by dot products or the
    /// product. Heights and channel counts cycle through the widths, kernels, strides and paddings.
    static let convolutions: [String] = {
        let heights = [1, 2, 3, 4, 5, 7], channels = [(1, 3), (3, 5), (8, 9), (9, 16), (16, 40), (4, 8), (12, 4)]
        var cases: [String] = [], i = 0
        for w in 1...9 { for (kh, kw) in [(1, 1), (2, 2), (3, 3), (5, 5), (3, 2), (1, 3)] { for stride in [1, 2] { for pad in 0...2 {
            let h = heights[i % heights.count], (c, o) = channels[(i / 3) % channels.count]
            i += 1
            // Padding up to K - 1 rows (1 for 1×1 kernels) and K columns: past the kernel's reach.
            let ph = min(pad, kh - 1 + (kh == 1 ? 1 : 0)), pw = min(pad, kw)
            guard h + 2 * ph >= kh, w + 2 * pw >= kw else { continue }
            cases.append("input(\(c),\(h),\(w)) conv(\(o),\(kh)x\(kw),stride=\(stride),pad=\(ph)x\(pw),bias=\(i % 4 != 0)) flatten")
        } } } }
        return cases
    }()

    /// Grouped and depthwise convolutions: depthwise by rows (stride 1 and 2), channels last (more
    /// channels than a vector), with a channel multiplier, grouped, strides up to 3, padding up to
    /// past the kernel's reach.
    static let groupedConvolutions: [String] = {
        let heights = [1, 3, 2, 5, 4, 7], groupings = [(3, 3, 3), (8, 8, 8), (18, 18, 18), (17, 17, 17), (3, 6, 3), (4, 6, 2), (6, 9, 3)]
        var cases: [String] = [], i = 0
        for w in 1...9 { for (kh, kw) in [(1, 1), (3, 3), (5, 5), (3, 5), (2, 2)] { for stride in 1...3 { for pad in [0, 1, 2, 4] {
            let h = heights[i % heights.count], (c, o, groups) = groupings[(i / 2) % groupings.count]
            i += 1
            let ph = min(pad, kh), pw = min(pad, kw)
            guard h + 2 * ph >= kh, w + 2 * pw >= kw else { continue }
            cases.append("input(\(c),\(h),\(w)) conv(\(o),\(kh)x\(kw),stride=\(stride),pad=\(ph)x\(pw),groups=\(groups),bias=\(i % 3 != 0)) flatten")
        } } } }
        return cases
    }()

    @Test func convolutionsAgainstPlainLoops() throws {
        #expect(Self.convolutions.count > 250)
        var winograd = 0, batchProducts = 0
        for text in Self.convolutions {
            let (_, layer) = try makeLayer(text)
            let g = try #require((layer as? Conv2D)?.geometry, "\(text)")
            if g.winograd { winograd += 1 }
            if g.multipliesBatch(3) { batchProducts += 1 }
            checkAgainstPlainLoops(layer, text)
        }
        // The sweep reaches the paths it is for.
        #expect(winograd >= 10 && batchProducts >= 5, "Winograd \(winograd), products over the batch \(batchProducts)")
    }

    @Test func groupedConvolutionsAgainstPlainLoops() throws {
        #expect(Self.groupedConvolutions.count > 400)
        var byRows = 0, channelsLast = 0, gradientByRows = 0
        for text in Self.groupedConvolutions {
            let (_, layer) = try makeLayer(text)
            let conv = try #require(layer as? GroupedConv2D, "\(text)")
            if conv.depthwisePlan != nil { byRows += 1 }
            if conv.geometry.depthwiseChannelsLast { channelsLast += 1 }
            if conv.depthwiseGradientPlan != nil { gradientByRows += 1 }
            checkAgainstPlainLoops(layer, text)
        }
        #expect(byRows >= 50 && channelsLast >= 20 && gradientByRows >= 20, "by rows \(byRows), channels last \(channelsLast), gradient by rows \(gradientByRows)")
    }

    /// Pooling on the same rows (2×2 windows by vectors of pairs, stride 2 by vectors of windows,
    /// column maxima at inference): training's forward and backward against the reference and
    /// finite differences, inference's forward equal to training's, one and two threads.
    @Test func poolingAgainstReference() throws {
        var checked = 0
        for w in 1...9 { for h in [1, 2, 3, 5] {
            for pool in ["maxpool(2)", "maxpool(2,ceil=true)", "maxpool(3,stride=2,pad=1)", "maxpool(3,stride=1,pad=1)",
                         "maxpool(2x3,stride=1)", "avgpool(2)", "avgpool(3,stride=2,pad=1)", "avgpool(3,stride=1,pad=1,count_include_pad=false)", "globalavgpool"] {
                let text = "input(3,\(h),\(w)) \(pool) flatten"
                // Windows larger than the padded input are refused by the parser: not a case.
                guard h >= 2 || pool.contains("pad=1") || pool == "globalavgpool", w >= 3 || !pool.contains("2x3"),
                      w >= 2 || pool.contains("pad=1") || pool == "globalavgpool" else { continue }
                let (_, layer) = try makeLayer(text)
                // Distinct values keep max pooling away from ties, where it is not differentiable.
                var r = TestRandom(UInt64(checked))
                let n = 2 * layer.inputShape.count
                let x = (0..<n).map { Float($0) / Float(n) - 0.5 }.sorted { _, _ in r.rng.uniform() < 0.5 }
                threadSettingLock.with {
                    for threads in [1, 2] {
                        ThreadPool.setThreads(threads)
                        defer { ThreadPool.setThreads(1) }
                        checkLayer(layer, batch: 2, inputs: x)
                        var rng = Random(seed: 1)
                        let trained = layer.forward(FloatBuffer(x), batch: 2, training: true, rng: &rng).array
                        let inferred = layer.forward(FloatBuffer(x), batch: 2, training: false, rng: &rng).array
                        #expect(inferred == trained, "\(text), \(threads) threads: inference differs")
                    }
                }
                checked += 1
            }
        } }
        #expect(checked > 200)
    }

    /// The fused paths a whole network takes at inference on narrow planes: conv → ReLU → 2×2 max
    /// pooling (direct for few channels, Winograd's pooled product for more), batch norm folded
    /// into the convolution with its ReLU or ReLU6, a residual sum into the producing
    /// convolution's write, a depthwise → pointwise pair; against the layers' references chained,
    /// in training (batch statistics) and at inference (running statistics made non-trivial).
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 9])
    func fusedNetworks(_ w: Int) throws {
        let h = 2 + w % 3
        // (A 2×2 window needs two columns.)
        let pooled = w < 2 ? [] : [
            "input(1,\(h),\(w)) conv(4,3,pad=1) relu maxpool(2,ceil=true) flatten",
            "input(3,\(h + 1),\(w)) conv(5,3,pad=1) relu maxpool(2,ceil=true) flatten",
            "input(8,\(h),\(w)) conv(9,3,pad=1) relu maxpool(2,ceil=true) flatten",
        ]
        let texts = pooled + [
            "input(8,\(h),\(w)) conv(8,3,pad=1) batchnorm relu conv(6,1) batchnorm relu6 flatten",
            "input(8,\(h),\(w)) residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm] relu flatten",
            "input(4,\(h),\(w)) residual[conv(6,3,stride=2,pad=1) batchnorm relu conv(6,3,pad=1) batchnorm | conv(6,1,stride=2) batchnorm] relu flatten",
            "input(6,\(h),\(w)) conv(6,3,pad=1,groups=6) batchnorm relu6 conv(4,1) batchnorm flatten",
            "input(18,\(h),\(w)) conv(18,3,stride=2,pad=1,groups=18) batchnorm relu6 conv(8,1) batchnorm flatten",
        ]
        for text in texts {
            let model = try Model(architecture: Architecture(parsing: text), seed: 5)
            // On even planes the pooling runs inside the convolution (odd ones keep it apart).
            if text.contains("maxpool"), model.inputShape.h % 2 == 0, w % 2 == 0 {
                #expect((model.layers[0] as? Conv2D)?.pooling != nil, "\(text): the pooling is not fused")
            }
            var r = TestRandom(UInt64(w))
            // Running statistics and biases away from 0 and 1, so that folding has work to do.
            for (name, p) in model.namedParameters where name.hasSuffix("running_var") {
                p.value.copy(from: FloatBuffer(r.values(p.count, 0.5, 2)))
            }
            for (name, p) in model.namedParameters where name.hasSuffix("running_mean") || name.hasSuffix("bias") {
                p.value.copy(from: FloatBuffer(r.values(p.count, -0.5, 0.5)))
            }
            threadSettingLock.with {
                for threads in [1, 2] {
                    ThreadPool.setThreads(threads)
                    defer { ThreadPool.setThreads(1) }
                    for batch in [3, 1] {
                        let x = r.values(batch * model.inputShape.count)
                        for training in [true, false] {
                            // (Before the forward: training's updates the running statistics.)
                            let params = model.layers.map { $0.parameters.map { $0.value.array.map(Double.init) } }
                            var rng = Random(seed: 1)
                            let y = model.forward(FloatBuffer(x), batch: batch, training: training, rng: &rng).array
                            var expected = x.map(Double.init)
                            for (i, layer) in model.layers.enumerated() {
                                expected = Reference.forward(layer, expected, batch: batch, params[i], training: training)
                            }
                            let e = maxRelativeError(Array(y.prefix(expected.count)).map(Double.init), expected)
                            #expect(e < 1e-4, "\(text): batch \(batch), \(threads) threads, training \(training): differs from the reference by \(e)")
                        }
                    }
                }
            }
        }
    }
}

/// One convolution layer, forward and backward, against `Reference.forward` and
/// `Reference.convBackward`: batches of 3 and 1, one and two threads, then inference's forward.
func checkAgainstPlainLoops(_ layer: Layer, _ text: String) {
    var r = TestRandom(UInt64(text.utf8.count))
    let params = layer.parameters
    let p64 = params.map { $0.value.array.map(Double.init) }
    threadSettingLock.with {
        for threads in [1, 2] {
            ThreadPool.setThreads(threads)
            defer { ThreadPool.setThreads(1) }
            for batch in [3, 1] {
                let x = r.values(batch * layer.inputShape.count), outCount = batch * layer.outputShape.count
                let g = r.values(outCount)
                let run = "\(text): batch \(batch), \(threads) threads"
                for p in params { p.grad?.fill(0) }
                var rng = Random(seed: 1)
                let y = layer.forward(FloatBuffer(x), batch: batch, training: true, rng: &rng).array
                let dx = layer.backward(FloatBuffer(g), batch: batch, needInputGradient: true)?.array ?? []
                let x64 = x.map(Double.init)
                let expected = Reference.forward(layer, x64, batch: batch, p64, training: true)
                let (edx, edw, edb) = Reference.convBackward(layer, x64, g.map(Double.init), batch: batch, p64)
                func error(_ a: [Float], _ b: [Double]) -> Double {
                    a.count < b.count ? .infinity : maxRelativeError(a.prefix(b.count).map(Double.init), b)
                }
                #expect(error(y, expected) < 1e-4, "\(run): forward differs from the reference by \(error(y, expected))")
                #expect(error(dx, edx) < 1e-4, "\(run): input gradient differs by \(error(dx, edx))")
                let dw = params[0].grad?.array ?? []
                #expect(error(dw, edw) < 1e-4, "\(run): weight gradient differs by \(error(dw, edw))")
                if params.count > 1 {
                    let db = params[1].grad?.array ?? []
                    #expect(error(db, edb) < 1e-4, "\(run): bias gradient differs by \(error(db, edb))")
                }
                let inferred = layer.forward(FloatBuffer(x), batch: batch, training: false, rng: &rng).array
                #expect(error(inferred, expected) < 1e-4, "\(run): inference differs from the reference by \(error(inferred, expected))")
            }
        }
    }
}
