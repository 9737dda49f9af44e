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
}
