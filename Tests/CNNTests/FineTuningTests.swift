import Testing
@testable import CNN

@Suite("Fine-tuning")
struct FineTuningTests {
    static let text = "input(1,8,8) conv(4,3,pad=1) batchnorm relu maxpool(2) flatten dense(8) relu dense(3)"

    /// 40 images in [0, 1], three classes.
    static func data() throws -> Dataset {
        var r = TestRandom(11)
        return try Dataset(floats: r.values(40 * 64, 0, 1), labels: (0..<40).map { Int32($0 % 3) },
                           shape: Shape(c: 1, h: 8, w: 8), classNames: ["a", "b", "c"])
    }

    static func settings(freezeUntil: Int, channels: Int, scale: Float = 1) -> TrainingSettings {
        var s = TrainingSettings()
        s.epochs = 2
        s.batchSize = 8
        s.learningRate = 0.05
        s.optimizer.momentum = 0.9
        s.optimizer.weightDecay = 1e-3  // would move frozen weights if they were updated
        s.seed = 5
        s.freezeUntil = freezeUntil
        s.normalization = channels == 1 ? ([0.5], [0.25]) : ([Float](repeating: 0, count: channels), [Float](repeating: 1 / scale, count: channels))
        return s
    }

    /// Training with the first five layers frozen leaves them (and batch norm's statistics) bit for
    /// bit as they were, and trains the head exactly as training the head alone on the frozen
    /// layers' outputs at inference does.
    @Test(arguments: [1, 2])
    func frozenLayersStayAndTheHeadTrainsAsOnTheirFeatures(threads: Int) throws {
        ThreadPool.setThreads(threads)
        defer { ThreadPool.setThreads(1) }
        do {
            let full = try Model(architecture: Architecture(parsing: FineTuningTests.text), seed: 3)
            var rng = Random(seed: 1)
            var r = TestRandom(2)
            _ = full.forward(FloatBuffer(r.values(4 * 64, 0, 1)), batch: 4, training: true, rng: &rng)  // moves BN statistics
            let before = full.namedParameters.map { $0.parameter.value.array }
            // The frozen layers' outputs at inference, as a model of their own computes them.
            let prefix = try Model(architecture: Architecture(parsing: "input(1,8,8) conv(4,3,pad=1) batchnorm relu maxpool(2) flatten"))
            for (a, b) in zip(full.namedParameters, prefix.namedParameters) { b.parameter.value.copy(from: a.parameter.value); b.parameter.version += 1 }
            (prefix.mean, prefix.std) = ([0.5], [0.25])
            let data = try FineTuningTests.data()
            guard case .floats(let pixels) = data.pixels else { Issue.record("not in memory"); return }
            let features = pixels.withUnsafeBufferPointer { prefix.predict($0.baseAddress!, batch: 40, logits: true) }
            let head = try Model(architecture: Architecture(parsing: "input(64,1,1) flatten dense(8) relu dense(3)"))
            let trained = full.namedParameters.suffix(4)
            for (a, b) in zip(trained, head.namedParameters) { b.parameter.value.copy(from: a.parameter.value); b.parameter.version += 1 }

            try Trainer(model: full, settings: FineTuningTests.settings(freezeUntil: 5, channels: 1)).fit(data)
            // Datasets hold pixels in [0, 1]: the features scaled into it, scaled back by the normalization.
            let scale = features.max()! * 1.01
            let featureData = try Dataset(floats: features.map { $0 / scale }, labels: data.labels, shape: Shape(c: 64, h: 1, w: 1), classNames: data.classNames)
            try Trainer(model: head, settings: FineTuningTests.settings(freezeUntil: 0, channels: 64, scale: scale)).fit(featureData)

            for (i, (name, p)) in full.namedParameters.enumerated() where i < full.namedParameters.count - 4 {
                #expect(p.value.array == before[i], "frozen \(name) changed")
            }
            for ((name, p), (_, q)) in zip(trained, head.namedParameters) {
                #expect(p.value.array != before[full.namedParameters.firstIndex { $0.name == name }!], "\(name) did not train")
                let e = maxRelativeError(p.value.array.map(Double.init), q.value.array.map(Double.init))
                #expect(e < 1e-5, "\(name) differs from the head trained alone by \(e)")
            }
        }
    }

    @Test func newHeadKeepsEverythingElse() throws {
        let m = try Model(architecture: Architecture(parsing: FineTuningTests.text), seed: 3)
        m.mean = [0.4]
        m.std = [0.2]
        m.classNames = ["a", "b", "c"]
        let n = try m.replacingHead(classes: 5, seed: 9)
        #expect(n.architecture.text == "input(1,8,8) conv(4,3,pad=1) batchnorm relu maxpool(2) flatten dense(8) relu dense(5)")
        #expect(n.mean == [0.4] && n.std == [0.2] && n.classNames == ["0", "1", "2", "3", "4"])
        for (a, b) in zip(m.namedParameters.dropLast(2), n.namedParameters.dropLast(2)) {
            #expect(a.parameter.value.array == b.parameter.value.array, "\(a.name)")
        }
        #expect(n.namedParameters.last!.parameter.shape == [5])
        #expect(n.namedParameters[n.namedParameters.count - 2].parameter.value.array.contains { $0 != 0 })  // initialized
        #expect(throws: CNNError.self) { try Model(architecture: Architecture(parsing: "input(1,4,4) flatten dense(3) relu"), seed: 1).replacingHead(classes: 2, seed: 1) }
        #expect(throws: CNNError.self) { try m.freeze(until: 9) }
        var s = FineTuningTests.settings(freezeUntil: 8, channels: 1)  // every layer: nothing would train
        #expect(throws: CNNError.self) { try Trainer(model: m, settings: s) }
        s.freezeUntil = 7
        #expect(throws: Never.self) { try Trainer(model: m, settings: s) }
    }

    /// Frozen layers run at inference, where a convolution applies the batch norm after it folded
    /// in and pools as it writes: a freeze between them must leave the trained layers the step
    /// they take with nothing frozen (no norm or dropout among the frozen ones: the same function).
    @Test(arguments: [
        ("input(3,8,8) conv(8,3,pad=1) batchnorm relu flatten dense(3)", 1),
        ("input(3,8,8) conv(8,3,pad=1,groups=1) conv(8,3,pad=1,groups=8) batchnorm relu flatten dense(3)", 2),
        ("input(3,8,8) conv(8,3,pad=1) maxpool(2) flatten dense(3)", 1),
        ("input(3,8,8) conv(8,3,pad=1) relu maxpool(2) flatten dense(3)", 2),
        ("input(3,8,8) conv(8,3,pad=1) relu maxpool(2) flatten dense(3)", 1),
        // Fused at inference only: a SiLU in the frozen convolution's write, the frozen
        // squeeze-and-excitation's gates in the trained 1×1 convolution's packing.
        ("input(3,8,8) conv(8,3,pad=1) silu conv(8,3,pad=1) silu flatten dense(3)", 1),
        ("input(3,8,8) conv(8,3,pad=1) se(4) conv(8,1) flatten dense(3)", 2),
        ("input(3,8,8) se(2) conv(8,1) silu flatten dense(3)", 2),
    ])
    func freezingBetweenFusedLayersChangesNothingAfter(text: String, frozen: Int) throws {
        let batch = 3
        var r = TestRandom(4)
        let x = FloatBuffer(r.values(batch * 192, -1, 1))
        let labels: [Int32] = [0, 2, 1]
        func step(_ m: Model) -> [String: [Float]] {
            var rng = Random(seed: 1)
            let logits = m.forward(x, batch: batch, training: true, rng: &rng)
            let d = FloatBuffer(count: batch * 3)
            _ = computeLoss(.crossEntropy, logits: logits.pointer, labels: labels, batch: batch, classes: 3, gradient: d.pointer)
            m.zeroGradients()
            m.backward(d, batch: batch)
            return Dictionary(uniqueKeysWithValues: m.namedParameters.compactMap { n, p in p.grad.map { (n, $0.array) } })
        }
        let whole = try Model(architecture: Architecture(parsing: text), seed: 2)
        let part = try Model(architecture: Architecture(parsing: text), seed: 2)
        try part.freeze(until: frozen)
        let all = step(whole), some = step(part)
        for (i, layer) in part.namedLayers.enumerated() where i >= frozen {
            for p in layer.layer.parameters where p.trainable {
                let name = layer.prefix + p.name
                let e = maxRelativeError(some[name]!.map(Double.init), all[name]!.map(Double.init))
                #expect(e < 1e-5, "\(name) differs by \(e) with layers 0..<\(frozen) frozen")
            }
        }
    }
}
