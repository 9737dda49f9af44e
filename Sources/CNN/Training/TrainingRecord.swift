/// Every setting that decides a run's result, as text under the tool's option names: a checkpoint
/// keeps it, and a resumed run continues with it. The one rule of resuming: the checkpoint's
/// settings hold; a differing request is refused (naming each setting), except `epochs`, which a
/// resumed run may change (the tool prints it).
extension TrainingSettings {
    private typealias Field = (key: String, get: (TrainingSettings) -> String, set: (inout TrainingSettings, String) -> Bool)

    private static func float(_ v: Float) -> String { "\(v)" }
    private static func flag(_ v: Bool) -> String { v ? "true" : "false" }
    private static func parseFlag(_ s: String) -> Bool? { s == "true" ? true : s == "false" ? false : nil }

    // Loader threads and recomputing blocks are left out: they change the speed (and memory), never the result.
    private static let fields: [Field] = [
        ("epochs", { String($0.epochs) }, { s, v in Int(v).map { s.epochs = $0 } != nil }),
        ("batch-size", { String($0.batchSize) }, { s, v in Int(v).map { s.batchSize = $0 } != nil }),
        ("optimizer", { $0.optimizer.kind.rawValue }, { s, v in OptimizerKind(rawValue: v).map { s.optimizer.kind = $0 } != nil }),
        ("lr", { float($0.learningRate) }, { s, v in Float(v).map { s.learningRate = $0 } != nil }),
        ("momentum", { float($0.optimizer.momentum) }, { s, v in Float(v).map { s.optimizer.momentum = $0 } != nil }),
        ("nesterov", { flag($0.optimizer.nesterov) }, { s, v in parseFlag(v).map { s.optimizer.nesterov = $0 } != nil }),
        ("weight-decay", { float($0.optimizer.weightDecay) }, { s, v in Float(v).map { s.optimizer.weightDecay = $0 } != nil }),
        ("decay-bias-norm", { flag($0.optimizer.decayBiasAndNorm) }, { s, v in parseFlag(v).map { s.optimizer.decayBiasAndNorm = $0 } != nil }),
        ("beta1", { float($0.optimizer.beta1) }, { s, v in Float(v).map { s.optimizer.beta1 = $0 } != nil }),
        ("beta2", { float($0.optimizer.beta2) }, { s, v in Float(v).map { s.optimizer.beta2 = $0 } != nil }),
        ("alpha", { float($0.optimizer.alpha) }, { s, v in Float(v).map { s.optimizer.alpha = $0 } != nil }),
        ("eps", { float($0.optimizer.eps) }, { s, v in Float(v).map { s.optimizer.eps = $0 } != nil }),
        ("schedule", { $0.schedule.kind.rawValue }, { s, v in ScheduleKind(rawValue: v).map { s.schedule.kind = $0 } != nil }),
        ("step-epochs", { String($0.schedule.stepEpochs) }, { s, v in Int(v).map { s.schedule.stepEpochs = $0 } != nil }),
        ("gamma", { float($0.schedule.gamma) }, { s, v in Float(v).map { s.schedule.gamma = $0 } != nil }),
        ("warmup", { float($0.schedule.warmupEpochs) }, { s, v in Float(v).map { s.schedule.warmupEpochs = $0 } != nil }),
        ("loss", { $0.loss.rawValue }, { s, v in LossKind(rawValue: v).map { s.loss = $0 } != nil }),
        ("label-smoothing", { float($0.labelSmoothing) }, { s, v in Float(v).map { s.labelSmoothing = $0 } != nil }),
        ("seed", { String($0.seed) }, { s, v in UInt64(v).map { s.seed = $0 } != nil }),
        ("normalize", { s in s.normalization.map { ($0.mean + $0.std).map(float).joined(separator: ",") } ?? "measured" }, { s, v in
            if v == "measured" { s.normalization = nil; return true }
            let values = v.split(separator: ",").compactMap { Float($0) }
            guard !values.isEmpty, values.count % 2 == 0 else { return false }
            s.normalization = (Array(values[..<(values.count / 2)]), Array(values[(values.count / 2)...]))
            return true
        }),
        ("flip", { flag($0.augmentation.flip) }, { s, v in parseFlag(v).map { s.augmentation.flip = $0 } != nil }),
        ("translate", { String($0.augmentation.translate) }, { s, v in Int(v).map { s.augmentation.translate = $0 } != nil }),
        ("brightness", { float($0.augmentation.brightness) }, { s, v in Float(v).map { s.augmentation.brightness = $0 } != nil }),
        ("contrast", { float($0.augmentation.contrast) }, { s, v in Float(v).map { s.augmentation.contrast = $0 } != nil }),
        ("erase", { float($0.augmentation.erase) }, { s, v in Float(v).map { s.augmentation.erase = $0 } != nil }),
        ("divergence-factor", { float($0.divergenceFactor) }, { s, v in Float(v).map { s.divergenceFactor = $0 } != nil }),
        ("allow-extra-outputs", { flag($0.allowExtraOutputs) }, { s, v in parseFlag(v).map { s.allowExtraOutputs = $0 } != nil }),
        ("early-stop", { String($0.earlyStopping) }, { s, v in Int(v).map { s.earlyStopping = $0 } != nil }),
        ("monitor", { $0.monitor.rawValue }, { s, v in Monitor(rawValue: v).map { s.monitor = $0 } != nil }),
        ("freeze-until", { String($0.freezeUntil) }, { s, v in Int(v).map { s.freezeUntil = $0 } != nil }),
    ]

    /// The settings as (option name, value) pairs, in a fixed order.
    public var record: [(key: String, value: String)] {
        TrainingSettings.fields.map { ($0.key, $0.get(self)) }
    }

    /// The option names of `record`.
    public static var recordKeys: [String] { fields.map(\.key) }

    /// Settings from a record; a key it lacks keeps its default (an older checkpoint).
    public init(record: [(key: String, value: String)]) throws {
        self.init()
        for (key, value) in record {
            guard let field = TrainingSettings.fields.first(where: { $0.key == key }) else {
                throw CNNError(.badFormat, "unknown training setting '\(key)'")
            }
            guard field.set(&self, value) else { throw CNNError(.badFormat, "training setting \(key) is '\(value)'") }
        }
        try validate()
    }

    /// A record from a checkpoint's `checkpoint_settings` metadata (a JSON object of strings).
    public static func record(parsing text: String, path: String, settings: Bool = true) throws -> [(key: String, value: String)] {
        guard case .object(let members) = try JSON.parse(ArraySlice(text.utf8)) else {
            throw CNNError(.badFormat, "\(path): checkpoint_settings is not a JSON object")
        }
        var out: [(key: String, value: String)] = []
        for (key, value) in members {
            guard let v = value.stringValue else { throw CNNError(.badFormat, "\(path): checkpoint_settings.\(key) is not a string") }
            out.append((key, v))
        }
        if settings { do { _ = try TrainingSettings(record: out) } catch let e as CNNError { throw CNNError(.badFormat, "\(path): checkpoint_settings: \(e.message)") } }
        return out
    }

    /// The settings and data records a checkpoint file holds (nil settings: written by 0.3 or
    /// earlier, or not a checkpoint).
    public static func checkpointRecords(_ path: String) throws -> (settings: [(key: String, value: String)]?, data: [(key: String, value: String)]) {
        let meta = try Safetensors.read(path).metadata
        guard meta["checkpoint_epoch"] != nil else {
            throw CNNError(.badFormat, "\(path): not a checkpoint (a model file saved without training state; checkpoints are written with --checkpoint)")
        }
        let settings = try meta["checkpoint_settings"].map { try record(parsing: $0, path: path) }
        let data = try meta["checkpoint_data"].map { try record(parsing: $0, path: path, settings: false) } ?? []
        return (settings, data)
    }

    /// The settings of `record` that differ from these, as "name: recorded -> asked" texts;
    /// `epochs` is not compared.
    public func differences(from record: [(key: String, value: String)]) -> [String] {
        let mine = Dictionary(uniqueKeysWithValues: self.record.map { ($0.key, $0.value) })
        let recorded = (try? TrainingSettings(record: record))?.record ?? record
        return recorded.compactMap { key, value in
            key == "epochs" || mine[key] == value ? nil : "\(key) \(value) (asked: \(mine[key] ?? "?"))"
        }
    }

    /// Refuses to resume a checkpoint trained with other settings (epochs may differ).
    func checkResume(against record: [(key: String, value: String)], path: String) throws {
        let changed = differences(from: record)
        guard changed.isEmpty else {
            throw CNNError(.invalidArgument, "\(path): the checkpoint was trained with \(changed.joined(separator: ", ")); a resumed run continues with the checkpoint's settings (only epochs may change)")
        }
    }
}
