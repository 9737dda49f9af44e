import Testing
@testable import CNN

@Suite("Training", .serialized)
struct TrainingTests {
    static let small = "input(1,28,28) conv(8,3,pad=1) batchnorm relu maxpool(2) conv(16,3) relu maxpool(2) flatten dropout(0.25) dense(32) relu dense(10)"

    func sample(_ n: Int) throws -> (Dataset, Dataset) {
        let train = try IDX.load(images: sampleDir + "/train-images-idx3-ubyte.gz").prefix(n)
        let test = try IDX.load(images: sampleDir + "/t10k-images-idx3-ubyte.gz")
        return (train, test)
    }

    func settings(epochs: Int = 1) -> TrainingSettings {
        var s = TrainingSettings()
        s.epochs = epochs
        s.batchSize = 32
        s.learningRate = 0.02
        s.optimizer.momentum = 0.9
        s.seed = 3
        return s
    }

    func train(_ data: Dataset, _ s: TrainingSettings, threads: Int) throws -> [Float] {
        try threadSettingLock.with {
            ThreadPool.setThreads(threads)
            defer { ThreadPool.setThreads(1) }
            let m = try Model(architecture: Architecture(parsing: Self.small), seed: s.seed)
            try Trainer(model: m, settings: s).fit(data)
            return m.namedParameters.flatMap { $0.parameter.value.array }
        }
    }

    @Test func lowersTheLossOnRealData() throws {
        let (train, test) = try sample(1000)
        let m = try Model(architecture: Architecture(parsing: Self.small), seed: 1)
        let before = try evaluate(model: m, on: test)
        let results = try Trainer(model: m, settings: settings(epochs: 2)).fit(train, validation: test)
        let after = try evaluate(model: m, on: test)
        #expect(after.loss < before.loss * 0.6, "loss \(before.loss) -> \(after.loss)")
        #expect(after.accuracy > 0.6, "accuracy \(after.accuracy)")
        #expect(results.count == 2 && results[1].loss < results[0].loss)
        #expect(results[1].validation?.accuracy == after.accuracy)
        #expect(m.classNames[0] == "T-shirt/top")
        #expect(after.confusion.flatMap { $0 }.reduce(0, +) == test.count)
    }

    /// Test-time flips: each image's logits are the mean of its own and its mirror's, computed
    /// here by mirroring the pixels by hand; loss and accuracy follow from those logits.
    @Test func flipAverageIsTheMeanOfEachImageAndItsMirror() throws {
        let (train, test) = try sample(600)
        let m = try Model(architecture: Architecture(parsing: Self.small), seed: 2)
        try Trainer(model: m, settings: settings()).fit(train)
        let data = try test.prefix(70)
        let e = try evaluate(model: m, on: data, batchSize: 32, flipAverage: true)
        let plain = try evaluate(model: m, on: data, batchSize: 32)
        let n = data.count, d = m.inputShape.count, k = m.numClasses
        let x = FloatBuffer(count: n * d), mirrored = FloatBuffer(count: n * d)
        var labels = [Int32](repeating: 0, count: n)
        try labels.withUnsafeMutableBufferPointer { l in
            try data.fill(Array(0..<Int32(n))[...], mean: m.mean, std: m.std, into: x.pointer, labels: l.baseAddress!)
        }
        for row in 0..<(n * m.inputShape.h) {
            for c in 0..<m.inputShape.w {
                mirrored.pointer[row * m.inputShape.w + c] = x.pointer[row * m.inputShape.w + m.inputShape.w - 1 - c]
            }
        }
        var rng = Random(seed: 0)
        let z1 = Array(UnsafeBufferPointer(start: m.forward(x, batch: n, training: false, rng: &rng).pointer, count: n * k))
        let z2 = Array(UnsafeBufferPointer(start: m.forward(mirrored, batch: n, training: false, rng: &rng).pointer, count: n * k))
        let mean = zip(z1, z2).map { ($0 + $1) * 0.5 }
        var correct = 0
        for i in 0..<n where mean[(i * k)..<(i * k + k)].enumerated().max(by: { $0.element < $1.element })?.offset == Int(labels[i]) {
            correct += 1
        }
        let loss = mean.withUnsafeBufferPointer { z in
            labels.withUnsafeBufferPointer { computeLoss(.crossEntropy, logits: z.baseAddress!, labels: $0.baseAddress!, batch: n, classes: k).sum }
        } / Double(n)
        #expect(e.accuracy == Double(correct) / Double(n))
        #expect(abs(e.loss - loss) < 1e-5 * max(1, loss), "\(e.loss) vs \(loss)")
        #expect(abs(e.loss - plain.loss) > 1e-4, "the mirrors changed nothing: \(e.loss)")
    }

    @Test func sameSeedSameWeightsWhateverTheThreads() throws {
        let (data, _) = try sample(300)
        let a = try train(data, settings(), threads: 1)
        let b = try train(data, settings(), threads: 1)
        let c = try train(data, settings(), threads: 2)
        #expect(a == b)
        #expect(a == c)
        var other = settings()
        other.seed = 4
        #expect(try train(data, other, threads: 1) != a)
    }

    @Test func lastPartialBatch() throws {
        let (train, _) = try sample(70)   // 32 + 32 + 6
        var s = settings()
        var batches: [Int] = []
        s.batchSize = 32
        let m = try Model(architecture: Architecture(parsing: Self.small), seed: 1)
        try Trainer(model: m, settings: s).fit(train, onBatch: { p in batches.append(p.batch); return true })
        #expect(batches == [0, 1, 2])
    }

    @Test func resumedRunEqualsUninterruptedRun() throws {
        let (train, _) = try sample(200)
        var s = settings(epochs: 2)
        s.optimizer.kind = .adam
        s.learningRate = 0.001
        let straight = try Model(architecture: Architecture(parsing: Self.small), seed: 5)
        try Trainer(model: straight, settings: s).fit(train)

        let checkpoint = temporaryPath("resume.ckpt.safetensors")
        defer { unlink(checkpoint) }
        var first = s
        first.epochs = 1
        let m1 = try Model(architecture: Architecture(parsing: Self.small), seed: 5)
        try Trainer(model: m1, settings: first).fit(train, onEpoch: { _, state in try m1.save(to: checkpoint, training: state) })
        let m2 = try Model.load(from: checkpoint)
        let trainer = try Trainer(model: m2, settings: s)
        try trainer.resume(from: checkpoint)
        #expect(trainer.state.epoch == 1)
        let results = try trainer.fit(train)
        #expect(results.count == 1)
        #expect(m2.namedParameters.flatMap { $0.parameter.value.array } == straight.namedParameters.flatMap { $0.parameter.value.array })
        #expect((m2.layers[1] as? BatchNorm)?.runningMean.value.array == (straight.layers[1] as? BatchNorm)?.runningMean.value.array)
    }

    /// The divergence guard: whatever the learning rate, training either ends with finite weights
    /// or throws `diverged` and leaves weights that a completed update produced (or the initial
    /// ones) and whose loss on the data is finite: the update that broke them was undone.
    @Test(arguments: [(Float(1e38), Float(0)), (1e30, 0), (1e6, 0), (100, 0.9), (5, 0.9)])
    func divergenceGuardKeepsWeightsWithAFiniteLoss(_ lr: Float, _ momentum: Float) throws {
        let (train, _) = try sample(256)
        for text in ["input(1,28,28) flatten dense(10)", "input(1,28,28) conv(4,3) batchnorm relu maxpool(2) flatten dense(10)"] {
            var s = settings(epochs: 3)
            s.batchSize = 64
            s.learningRate = lr
            s.optimizer.momentum = momentum
            let m = try Model(architecture: Architecture(parsing: text), seed: 1)
            func weights() -> [Float] { m.namedParameters.flatMap { $0.parameter.value.array } }
            var states = [weights()]
            do {
                try Trainer(model: m, settings: s).fit(train, onBatch: { _ in states.append(weights()); return true })
            } catch let e as CNNError {
                #expect(e.kind == .diverged, "\(e.message)")
                #expect(states.contains(weights()), "lr \(lr): the weights left are not those of a completed update")
            }
            #expect(m.namedParameters.allSatisfy { $0.parameter.value.allFinite }, "lr \(lr) \(text)")
            let loss = try evaluate(model: m, on: train).loss
            #expect(loss.isFinite && loss < 1000 * 2.31, "lr \(lr) \(text): loss \(loss) after training")
        }
    }

    @Test func explodingLossStopsUnlessTheFactorIsOff() throws {
        let (train, _) = try sample(256)
        var s = settings(epochs: 2)
        s.learningRate = 100
        s.optimizer.momentum = 0.9
        let m = try Model(architecture: Architecture(parsing: "input(1,28,28) flatten dense(10)"), seed: 1)
        #expect(throws: CNNError.self) { try Trainer(model: m, settings: s).fit(train) }
        // With a gentle rate the bound never triggers, and turning it off changes nothing.
        s.learningRate = 0.01
        var off = s
        off.divergenceFactor = 0
        let a = try Model(architecture: Architecture(parsing: "input(1,28,28) flatten dense(10)"), seed: 1)
        let b = try Model(architecture: Architecture(parsing: "input(1,28,28) flatten dense(10)"), seed: 1)
        try Trainer(model: a, settings: s).fit(train)
        try Trainer(model: b, settings: off).fit(train)
        #expect(a.namedParameters.flatMap { $0.parameter.value.array } == b.namedParameters.flatMap { $0.parameter.value.array })
    }

    @Test func guardUndoesOneUpdateExactly() throws {
        // The second network's weights (90,003 values) are updated in two chunks on the pool.
        for (kind, text) in [(OptimizerKind.sgd, "input(1,1,40) flatten dense(3)"), (.sgd, "input(1,1,30001) flatten dense(3)"),
                             (.rmsprop, "input(1,1,40) flatten dense(3)"), (.adam, "input(1,1,40) flatten dense(3)"),
                             (.adamw, "input(1,1,40) flatten dense(3)")] {
            let m = try Model(architecture: Architecture(parsing: text), seed: 1)
            var o = OptimizerSettings()
            o.kind = kind
            o.momentum = 0.9
            let opt = try Optimizer(o, model: m)
            try opt.enableGuard()
            for g in m.gradients { for j in 0..<g.count { g[j] = Float(j % 7) - 3 } }
            opt.update(learningRate: 0.1)
            let before = m.namedParameters.flatMap { $0.parameter.value.array }
            let state = opt.stateTensors.flatMap { $0.buffer.array }
            opt.update(learningRate: 0.1)
            #expect(m.namedParameters.flatMap { $0.parameter.value.array } != before)
            #expect(opt.restorePrevious())
            #expect(m.namedParameters.flatMap { $0.parameter.value.array } == before, "\(kind)")
            #expect(opt.stateTensors.flatMap { $0.buffer.array } == state, "\(kind)")
            #expect(opt.step == 1)
            #expect(!opt.restorePrevious())
        }
    }

    @Test func cancelFromTheCallback() throws {
        let (train, _) = try sample(200)
        let m = try Model(architecture: Architecture(parsing: Self.small), seed: 1)
        var calls = 0
        do {
            try Trainer(model: m, settings: settings()).fit(train, onBatch: { _ in calls += 1; return calls < 3 })
            Issue.record("not cancelled")
        } catch let e as CNNError {
            #expect(e.kind == .cancelled)
        }
        #expect(calls == 3)
    }

    @Test func invalidSettings() throws {
        var s = TrainingSettings()
        s.batchSize = 0
        #expect(throws: CNNError.self) { try s.validate() }
        s = TrainingSettings(); s.learningRate = .nan
        #expect(throws: CNNError.self) { try s.validate() }
        s = TrainingSettings(); s.optimizer.momentum = 1
        #expect(throws: CNNError.self) { try s.validate() }
        let (train, _) = try sample(10)
        let wrong = try Model(architecture: Architecture(parsing: "input(3,28,28) flatten dense(10)"), seed: 1)
        #expect(throws: CNNError.self) { try Trainer(model: wrong, settings: TrainingSettings()).fit(train) }
        let tooFew = try Model(architecture: Architecture(parsing: "input(1,28,28) flatten dense(5)"), seed: 1)
        #expect(throws: CNNError.self) { try Trainer(model: tooFew, settings: TrainingSettings()).fit(train) }
    }

    @Test func denseProductIsIdenticalWithOneOrTwoThreads() throws {
        // Large enough for the product to be split into tiles.
        let text = "input(1,1,300) flatten dense(130)"
        var r = TestRandom(4)
        let x = r.values(70 * 300)
        func run(_ threads: Int) throws -> [Float] {
            try threadSettingLock.with {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                let (_, layer) = try makeLayer(text, index: 1)
                var rng = Random(seed: 1)
                let y = layer.forward(FloatBuffer(x), batch: 70, training: true, rng: &rng).array
                let dx = layer.backward(FloatBuffer(y), batch: 70, needInputGradient: true)?.array ?? []
                return y + dx + layer.parameters[0].grad!.array
            }
        }
        #expect(try run(1) == run(2))
    }
}

@Suite("Optimizers and schedules")
struct OptimizerTests {
    /// One parameter vector through three updates of each rule, against the formulas in Double.
    @Test(arguments: [OptimizerKind.sgd, .rmsprop, .adam, .adamw])
    func updateRules(_ kind: OptimizerKind) throws {
        let m = try Model(architecture: Architecture(parsing: "input(1,1,3) flatten dense(2)"), seed: 1)
        var s = OptimizerSettings()
        s.kind = kind
        s.momentum = 0.9
        s.nesterov = kind == .sgd
        s.weightDecay = 0.01
        let opt = try Optimizer(s, model: m)
        let w = m.namedParameters[0].parameter
        var p = w.value.array.map(Double.init)
        var first = [Double](repeating: 0, count: p.count), second = first
        let lr = 0.1
        for step in 1...3 {
            let g = (0..<p.count).map { Double($0 + step) * 0.1 - 0.2 }
            w.grad?.copy(from: FloatBuffer(g.map(Float.init)))
            m.namedParameters[1].parameter.grad?.fill(0)
            opt.update(learningRate: Float(lr))
            for j in 0..<p.count {
                switch kind {
                case .sgd:
                    let d = g[j] + 0.01 * p[j]
                    first[j] = step == 1 ? d : 0.9 * first[j] + d
                    p[j] -= lr * (d + 0.9 * first[j])
                case .rmsprop:
                    let d = g[j] + 0.01 * p[j]
                    first[j] = 0.99 * first[j] + 0.01 * d * d
                    p[j] -= lr * d / (first[j].squareRoot() + 1e-8)
                case .adam, .adamw:
                    if kind == .adamw { p[j] -= lr * 0.01 * p[j] }
                    let d = kind == .adamw ? g[j] : g[j] + 0.01 * p[j]
                    first[j] = 0.9 * first[j] + 0.1 * d
                    second[j] = 0.999 * second[j] + 0.001 * d * d
                    let mh = first[j] / (1 - pow(0.9, Double(step))), vh = second[j] / (1 - pow(0.999, Double(step)))
                    p[j] -= lr * mh / (vh.squareRoot() + 1e-8)
                }
            }
        }
        #expect(maxRelativeError(w.value.array.map(Double.init), p) < 1e-5)
    }

    /// Without decay on biases and norms, one update with zero gradients shrinks the conv and dense
    /// weights by lr·wd (SGD and AdamW's decoupled decay) and leaves biases, batch norm's scale and
    /// shift, and squeeze-and-excitation's biases exactly as they were; with it, everything shrinks.
    @Test(arguments: [OptimizerKind.sgd, .adamw], [false, true])
    func weightDecaySkipsBiasesAndNorms(_ kind: OptimizerKind, _ decayAll: Bool) throws {
        let m = try Model(architecture: Architecture(parsing: "input(4,3,3) conv(4,1) batchnorm se(2) flatten dense(2)"), seed: 1)
        for (_, p) in m.namedParameters where p.trainable { p.value.fill(0.5); p.grad?.fill(0) }
        var s = OptimizerSettings()
        s.kind = kind
        s.weightDecay = 0.1
        s.decayBiasAndNorm = decayAll
        try Optimizer(s, model: m).update(learningRate: 0.2)
        for (name, p) in m.namedParameters where p.trainable {
            let exempt = !decayAll && (name.hasSuffix("bias") || name.hasPrefix("1."))
            let expected: Float = exempt ? 0.5 : 0.5 - 0.2 * 0.1 * 0.5
            #expect(p.value.array.allSatisfy { abs($0 - expected) < 1e-6 }, "\(name): \(p.value.array.prefix(2)), expected \(expected)")
        }
    }

    @Test func schedules() {
        var s = Schedule()
        #expect(s.learningRate(base: 0.1, step: 50, stepsPerEpoch: 10, totalSteps: 100) == 0.1)
        s.kind = .step
        s.stepEpochs = 2
        s.gamma = 0.5
        #expect(s.learningRate(base: 0.1, step: 19, stepsPerEpoch: 10, totalSteps: 100) == 0.1)
        #expect(abs(s.learningRate(base: 0.1, step: 45, stepsPerEpoch: 10, totalSteps: 100) - 0.025) < 1e-7)
        s.kind = .cosine
        #expect(s.learningRate(base: 0.1, step: 0, stepsPerEpoch: 10, totalSteps: 100) == 0.1)
        #expect(abs(s.learningRate(base: 0.1, step: 50, stepsPerEpoch: 10, totalSteps: 100) - 0.05) < 1e-6)
        #expect(s.learningRate(base: 0.1, step: 100, stepsPerEpoch: 10, totalSteps: 100) < 1e-6)
        s.warmupEpochs = 1
        #expect(abs(s.learningRate(base: 0.1, step: 4, stepsPerEpoch: 10, totalSteps: 100) - 0.05) < 1e-7)
        #expect(abs(s.learningRate(base: 0.1, step: 10, stepsPerEpoch: 10, totalSteps: 100) - 0.1) < 1e-6)
    }
}

#if canImport(Glibc)
import Glibc
#endif
