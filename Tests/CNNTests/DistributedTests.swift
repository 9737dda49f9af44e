import Testing
@testable import CNN

/// The pieces of data-parallel training that make a rank compute its part of what one process
/// computes (the runs under mpirun are in Tests/mpi/run.sh).
@Suite("Distributed training")
struct DistributedTests {
    /// The shares of a batch cover it in order, without overlap, as equal as can be.
    @Test func sharesCoverTheBatch() {
        for ranks in 1...5 {
            for n in 0...13 {
                var next = 0
                for rank in 0..<ranks {
                    let s = Trainer.share(of: n, rank: rank, ranks: ranks)
                    #expect(s.first == next)
                    #expect(s.count == n / ranks || s.count == n / ranks + 1)
                    next += s.count
                }
                #expect(next == n)
            }
        }
    }

    /// Dropout on each rank's part of a batch draws the masks one process draws for the whole
    /// batch, and leaves the generator where one process leaves it.
    @Test func dropoutPartsDrawTheWholeBatchMask() throws {
        let features = 7, batch = 6
        let whole = Dropout(spec: LayerSpec(kind: .dropout(p: 0.4)), input: Shape(features: features), p: 0.4)
        var r = TestRandom(3)
        let x = FloatBuffer(r.values(batch * features, -1, 1))
        var rng = Random(seed: 9)
        let all = whole.forward(x, batch: batch, training: true, rng: &rng).array
        for ranks in [2, 3] {
            for rank in 0..<ranks {
                let share = Trainer.share(of: batch, rank: rank, ranks: ranks)
                let part = Dropout(spec: LayerSpec(kind: .dropout(p: 0.4)), input: Shape(features: features), p: 0.4)
                part.batchSlice = (share.first, batch)
                let xs = FloatBuffer(Array(x.array[(share.first * features)..<((share.first + share.count) * features)]))
                var partRNG = Random(seed: 9)
                let y = part.forward(xs, batch: share.count, training: true, rng: &partRNG).array
                #expect(y == Array(all[(share.first * features)..<((share.first + share.count) * features)]))
                #expect(partRNG.stateWords == rng.stateWords)
            }
        }
    }

    /// A rank's loss gradient divided by the global batch: the ranks' gradients summed are the
    /// whole batch's.
    @Test(arguments: [LossKind.crossEntropy, .mse])
    func lossGradientsOfPartsSumToTheWhole(kind: LossKind) {
        let k = 4, batch = 6
        var r = TestRandom(5)
        let logits = r.values(batch * k, -2, 2)
        let labels: [Int32] = [0, 3, 1, 2, 2, 0]
        var whole = [Float](repeating: 0, count: batch * k), parts = whole
        _ = computeLoss(kind, logits: logits, labels: labels, batch: batch, classes: k, labelSmoothing: 0.1, gradient: &whole)
        for rank in 0..<2 {
            let s = Trainer.share(of: batch, rank: rank, ranks: 2)
            let o = s.first * k
            parts.withUnsafeMutableBufferPointer { g in
                _ = computeLoss(kind, logits: Array(logits[o...]), labels: Array(labels[s.first...]), batch: s.count, classes: k,
                                labelSmoothing: 0.1, gradient: g.baseAddress! + o, meanOver: batch)
            }
        }
        #expect(parts == whole)
    }

    /// The gradients lie in one block in the order backward completes them, so the exchange's
    /// buckets are ranges of it that cover every trained gradient once, in backward's order, each
    /// of at least the bucket size but the last; frozen layers' gradients are in none.
    @Test func bucketsAreConsecutiveRangesOfTheGradients() throws {
        let text = """
            input(3,8,8) conv(8,3,pad=1,bias=false) batchnorm relu
            residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm | conv(8,1) batchnorm] relu
            conv(16,3,stride=2,pad=1) relu globalavgpool flatten dense(12) relu dense(5)
            """
        for (frozen, bucketFloats) in [(0, 1), (0, 600), (0, 1 << 18), (3, 700)] {
            let m = try Model(architecture: Architecture(parsing: text), seed: 1)
            try m.freeze(until: frozen)
            let buckets = Distributed.Buckets.ranges(m, bucketFloats: bucketFloats)
            let block = m.gradientBlock.pointer
            var next = block, lastLayer = Int.max
            for (i, b) in buckets.enumerated() {
                #expect(b.start == next)
                #expect(b.layer <= lastLayer && b.layer >= frozen)
                if i + 1 < buckets.count { #expect(b.count >= bucketFloats) }
                next = b.start + b.count
                lastLayer = b.layer
            }
            // Each trained gradient inside exactly one bucket, which backward completes with or
            // after the gradient's layer; the frozen ones after all of them.
            for (i, layer) in m.layers.enumerated() {
                for p in layer.parameters where p.trainable {
                    let g = try #require(p.grad)
                    let holders = buckets.filter { g.pointer >= $0.start && g.pointer + g.count <= $0.start + $0.count }
                    if i < frozen {
                        #expect(holders.isEmpty && g.pointer >= next)
                    } else {
                        #expect(holders.count == 1 && holders[0].layer <= i)
                    }
                }
            }
        }
    }

    /// On one machine each rank sums its slice of every rank's gradient block (the sum itself is
    /// tested at every kernel level in `KernelTests.sharedGradientSumIsThePlainLoops`): the
    /// slices cover the trained gradients in order, on 64-byte boundaries.
    @Test func sharedMemorySlicesCoverTheGradients() {
        for ranks in 1...5 {
            for trained in [0, 16, 48, 160, 4112] {
                var next = 0
                for rank in 0..<ranks {
                    let s = SharedGradients.slice(rank: rank, ranks: ranks, trained: trained)
                    #expect(s.lowerBound == next && s.lowerBound % 16 == 0 && s.count >= 0)
                    next = s.upperBound
                }
                #expect(next == trained)
            }
        }
    }

    /// Moving the gradients to another block (the shared segment) keeps their values and puts
    /// every trained gradient at its offset in the new block.
    @Test func movingTheGradientsKeepsThem() throws {
        let m = try Model(architecture: Architecture(parsing: "input(2,6,6) conv(4,3,pad=1) batchnorm relu flatten dense(3)"), seed: 2)
        let old = m.gradientBlock
        var r = TestRandom(4)
        for (j, v) in r.values(old.count).enumerated() { old[j] = v }
        let offsets = m.trainedParameters.map { $0.parameter.grad!.pointer - old.pointer }
        let moved = FloatBuffer(count: old.count)
        m.useGradientBlock(moved)
        #expect(m.gradientBlock === moved && moved.array == old.array)
        #expect(m.trainedParameters.map { $0.parameter.grad!.pointer - moved.pointer } == offsets)
    }
}
