import Testing
@testable import CNN

/// Training in steps, resuming, early stopping and the class-name rules of the engine.
@Suite("Training in steps", .serialized)
struct TrainingStepsTests {
    static let net = "input(1,28,28) conv(4,3) batchnorm relu maxpool(2) flatten dropout(0.2) dense(10)"

    func data(_ n: Int) throws -> Dataset {
        try IDX.load(images: sampleDir + "/train-images-idx3-ubyte.gz").prefix(n)
    }

    func settings() -> TrainingSettings {
        var s = TrainingSettings()
        s.epochs = 3
        s.batchSize = 25
        s.optimizer.kind = .adam
        s.learningRate = 0.003
        s.schedule.kind = .cosine
        s.augmentation.flip = true
        s.seed = 9
        return s
    }

    func bytes(_ m: Model) -> [Float] { m.namedParameters.flatMap { $0.parameter.value.array } }

    @Test func stepsAndCancelsGiveTheBytesOfOneRun() throws {
        let d = try data(200)
        let one = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        try Trainer(model: one, settings: settings()).fit(d)

        let m = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        let t = try Trainer(model: m, settings: settings())
        try t.fit(d, until: 1)
        #expect(t.state.epoch == 1 && t.state.batch == 0)
        // A cancel inside the second epoch, then a checkpoint there, loaded by a fresh trainer.
        #expect(throws: CNNError.self) { try t.fit(d, onBatch: { $0.batch < 3 }) }
        #expect(t.state.epoch == 1 && t.state.batch == 4)
        let path = temporaryPath("steps.ckpt")
        try m.save(to: path, training: t.state)
        let resumed = try Model.load(from: path)
        let t2 = try Trainer(model: resumed, settings: settings())
        try t2.resume(from: path)
        try t2.fit(d)
        try t.fit(d)
        #expect(bytes(m) == bytes(one))
        #expect(bytes(resumed) == bytes(one))
    }

    @Test func resumeRefusesOtherSettings() throws {
        let d = try data(100)
        let m = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        let t = try Trainer(model: m, settings: settings())
        try t.fit(d, until: 1)
        let path = temporaryPath("settings.ckpt")
        try m.save(to: path, training: t.state)
        var other = settings()
        other.augmentation.flip = false
        other.learningRate = 0.01
        other.epochs = 7   // may change
        do {
            try Trainer(model: Model.load(from: path), settings: other).resume(from: path)
            Issue.record("resumed with other settings")
        } catch let e as CNNError {
            #expect(e.message.contains("lr 0.003 (asked: 0.01)") && e.message.contains("flip true (asked: false)"), "\(e.message)")
            #expect(!e.message.contains("epochs 3"))
        }
        var longer = settings()
        longer.epochs = 5
        try Trainer(model: Model.load(from: path), settings: longer).resume(from: path)
    }

    @Test func recordRoundTrips() throws {
        var s = settings()
        s.normalization = ([0.5], [0.25])
        s.earlyStopping = 3
        s.monitor = .valAccuracy
        s.allowExtraOutputs = true
        s.labelSmoothing = 0.1
        let back = try TrainingSettings(record: s.record)
        #expect(back.record.map { "\($0.key)=\($0.value)" } == s.record.map { "\($0.key)=\($0.value)" })
        #expect(back == s)
        #expect(s.differences(from: s.record).isEmpty)
        #expect(throws: CNNError.self) { try TrainingSettings(record: [("lr", "fast")]) }
        #expect(throws: CNNError.self) { try TrainingSettings(record: [("learning-rate", "0.1")]) }
    }

    @Test func earlyStoppingStopsAndRemembersTheBest() throws {
        let all = try data(300)
        let (train, val) = try all.split(validationFraction: 0.3, seed: 1)
        var s = settings()
        s.epochs = 40
        s.learningRate = 0.02
        s.earlyStopping = 2
        let m = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        let t = try Trainer(model: m, settings: s)
        let results = try t.fit(train, validation: val)
        #expect(results.count < 40 && t.state.stoppedEarly)
        let losses = results.compactMap { $0.validation?.loss }
        let best = losses.indices.min { losses[$0] < losses[$1] }!
        #expect(best == losses.count - 3)
        #expect(results[best].improved && !results[best + 1].improved && results.last!.stopsEarly)
        #expect(t.state.best?.epoch == best + 1)
        s.earlyStopping = 1
        #expect(throws: CNNError.self) { try Trainer(model: m, settings: s).fit(train) }   // needs validation
    }

    @Test func classNamesMustMeanTheModelsClasses() throws {
        let d = try data(100)
        let named = try Dataset(bytes: [UInt8](repeating: 0, count: 4 * 784), labels: [0, 1, 2, 1],
                                shape: Shape(c: 1, h: 28, w: 28), classNames: ["a", "b", "c"])
        let m = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        #expect(throws: CNNError.self) { try Trainer(model: m, settings: settings()).fit(named) }   // 10 outputs, 3 classes
        var extra = settings()
        extra.allowExtraOutputs = true
        extra.epochs = 1
        try Trainer(model: m, settings: extra).fit(named)
        #expect(Array(m.classNames.prefix(4)) == ["a", "b", "c", "3"])
        #expect(throws: CNNError.self) { try evaluate(model: m, on: d) }   // T-shirt/top... vs a, b, c
        let fresh = try Model(architecture: Architecture(parsing: Self.net), seed: 2)
        _ = try evaluate(model: fresh, on: d)   // a model that names no class is checked by count
        let reordered = try named.relabeled([2, 0, 1, 0], classNames: ["b", "c", "a"])
        #expect(throws: CNNError.self) { try evaluate(model: m, on: reordered) }
        let mapped = try reordered.mappingClasses(to: m.classNames)
        #expect(mapped.labels == named.labels && mapped.classNames == m.classNames)
        #expect(try evaluate(model: m, on: mapped).loss == evaluate(model: m, on: named).loss)
        #expect(throws: CNNError.self) { try named.mappingClasses(to: ["a", "b"]) }
        // Unnamed data is checked by count only.
        let unnamed = try Dataset(bytes: [UInt8](repeating: 0, count: 784), labels: [1], shape: Shape(c: 1, h: 28, w: 28),
                                  classNames: Dataset.numberedNames(2))
        #expect(!unnamed.namesItsClasses)
        _ = try evaluate(model: m, on: unnamed)
    }

    @Test func floatPixelsOutsideTheUnitRangeAreRefused() {
        #expect(throws: CNNError.self) {
            try Dataset(floats: [0, 0.5, 255, 1], labels: [0], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"])
        }
        #expect(throws: CNNError.self) {
            try Dataset(floats: [0, -0.01, 1, 1], labels: [0], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"])
        }
    }

    @Test func defaultThreadsComeFromTheEnvironmentOrTheCPUs() {
        #expect(CPUCount.affinity() >= 1)
        #expect(CPUCount.defaultThreads >= 1 && CPUCount.defaultThreads <= 256)
    }
}
