import ArgumentParser
import CNN
import Foundation
import Synchronization

/// The engine's training defaults: the tool's, the C API's and Python's are all these.
private let defaults = TrainingSettings()

/// Ctrl-C while training: the first stops at the end of the batch (the model and a checkpoint are
/// saved), a second one ends the process at once.
private let interrupts = Atomic<Int>(0)

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a network and save it as a safetensors model file.",
        discussion: """
            Settings left out take the defaults shown. With --resume, the run continues with the \
            checkpoint's settings and data: an option that differs from them is refused, except \
            --epochs (applied and printed). Ctrl-C stops at the end of the batch and saves the model \
            and a checkpoint that resumes exactly (exit status 130).
            """)

    @Option(help: "The architecture text, or a file holding it (not needed with --resume).")
    var spec: String?
    @Option(help: "Training data: a folder of class sub-folders of images (JPEG, PNG), or an IDX images file (its labels file is found beside it). With --resume: the checkpoint's by default.")
    var data: String?
    @Option(help: "Validation data, evaluated after every epoch.")
    var val: String?
    @Option(help: "Hold out this fraction of --data (seeded) for validation, when there is no --val.")
    var split: Double?
    @Option(help: "Number of epochs (default: \(defaults.epochs)).") var epochs: Int?
    @Option(name: .customLong("batch-size"), help: "Mini-batch size (default: \(defaults.batchSize)).") var batchSize: Int?
    @Option(help: "sgd, adam, adamw or rmsprop (default: \(defaults.optimizer.kind.rawValue)).") var optimizer: String?
    @Option(help: "Learning rate (default: \(defaults.learningRate)).") var lr: Float?
    @Option(help: "SGD momentum (default: \(defaults.optimizer.momentum)).") var momentum: Float?
    @Flag(inversion: .prefixedNo, help: "Nesterov momentum (SGD; default: off).") var nesterov: Bool?
    @Option(name: .customLong("weight-decay"), help: "Weight decay (L2; decoupled for adamw; default: \(defaults.optimizer.weightDecay)).") var weightDecay: Float?
    @Flag(name: .customLong("decay-bias-norm"), inversion: .prefixedNo, help: "Weight decay on biases and batch-norm parameters too (default: on, as in PyTorch; --no-decay-bias-norm leaves them out).")
    var decayBiasNorm: Bool?
    @Option(help: "Learning-rate schedule: constant, step or cosine (default: \(defaults.schedule.kind.rawValue)).") var schedule: String?
    @Option(name: .customLong("step-epochs"), help: "Step schedule: epochs between decays (default: \(defaults.schedule.stepEpochs)).") var stepEpochs: Int?
    @Option(help: "Step schedule: decay factor (default: \(defaults.schedule.gamma)).") var gamma: Float?
    @Option(help: "Epochs of linear learning-rate warm-up (default: \(defaults.schedule.warmupEpochs)).") var warmup: Float?
    @Option(help: "Loss: cross-entropy or mse (default: \(defaults.loss.rawValue)).") var loss: String?
    @Option(name: .customLong("label-smoothing"), help: "Label smoothing for cross-entropy (default: \(defaults.labelSmoothing)).") var labelSmoothing: Float?
    @Option(help: "Seed for initialization, shuffling, augmentation and dropout (default: \(defaults.seed)).") var seed: UInt64?
    @Option(help: "Input normalization MEAN,STD (per channel: M1,M2,M3,S1,S2,S3); default: measured on the training data.")
    var normalize: String?
    @Option(help: "Output model file (.safetensors).") var out: String
    @Option(help: "Write a checkpoint (model + optimizer state + settings) to this file after every epoch.") var checkpoint: String?
    @Option(help: "Resume training from a checkpoint written with --checkpoint (or by Ctrl-C).") var resume: String?
    @Option(name: .customLong("init"), help: "Fine-tuning: start from this model's weights and normalization (.safetensors, or .onnx to import); --spec may be left out.")
    var initial: String?
    @Option(name: .customLong("new-head"), help: "Fine-tuning: replace the last layer (a dense layer) of --init's model by a new one for this many classes.")
    var newHead: Int?
    @Option(name: .customLong("freeze-until"), help: "Fine-tuning: train only layers from this index on (cnn summary numbers them); the layers before run as at inference, and get no gradients or updates (default: 0, none frozen).")
    var freezeUntil: Int?
    @Option(help: "Write a CSV log of every epoch to this file.") var log: String?
    @Option(help: "Use only the first N training samples.") var limit: Int?
    @Flag(inversion: .prefixedNo, help: "Augment: random horizontal flips (default: off).") var flip: Bool?
    @Option(help: "Augment: random translation by up to N pixels (pad and crop; default: 0).") var translate: Int?
    @Option(help: "Augment: random brightness change up to this much (pixels in [0, 1]; default: 0).") var brightness: Float?
    @Option(help: "Augment: random contrast change up to this factor (default: 0).") var contrast: Float?
    @Option(help: "Augment: random erasing with this probability (a rectangle of 2-33 % of the image filled with its mean; default: 0).") var erase: Float?
    @Flag(name: .customLong("recompute-blocks"), help: "Less memory for more time: residual and concat blocks keep nothing for backward, which runs each forward again first (the same results).")
    var recomputeBlocks = false
    @Option(name: .customLong("loader-threads"), help: "Threads preparing batches ahead (decoding, augmentation; default: \(defaults.loaderThreads)).") var loaderThreads: Int?
    @Option(name: .customLong("divergence-factor"), help: "Stop (diverged) when a batch's loss exceeds this multiple of the first batch's; 0: no such bound (NaN or infinity always stops; default: \(defaults.divergenceFactor)).")
    var divergenceFactor: Float?
    @Flag(name: .customLong("allow-extra-outputs"), inversion: .prefixedNo, help: "Accept a model with more outputs than the data has classes (default: refused).")
    var allowExtraOutputs: Bool?
    @Option(name: .customLong("early-stop"), help: "Stop when the monitored validation metric has not improved for this many epochs (default: 0, off).")
    var earlyStop: Int?
    @Option(help: "The validation metric --early-stop and --save-best watch: val_loss or val_accuracy (default: \(defaults.monitor.rawValue)).")
    var monitor: String?
    @Option(name: .customLong("save-best"), help: "Save the model to this file whenever the monitored validation metric is the best so far.")
    var saveBest: String?
    @Flag(inversion: .prefixedNo, help: "Data-parallel training over MPI: each process trains on its share of every batch (--batch-size is the global batch) and rank 0 prints, logs and saves. Default: on when an MPI launcher (mpirun -np N, N > 1) started the process.")
    var distributed: Bool?
    @OptionGroup var images: ImageOptions
    @Flag(help: "No progress output.") var quiet = false
    @OptionGroup var common: CommonOptions

    /// The settings these options ask for, and the names of those given.
    func requested() throws -> (settings: TrainingSettings, given: Set<String>) {
        var s = TrainingSettings(), given = Set<String>()
        func set<T>(_ key: String, _ value: T?, _ apply: (inout TrainingSettings, T) throws -> Void) rethrows {
            guard let value else { return }
            try apply(&s, value)
            given.insert(key)
        }
        set("epochs", epochs) { $0.epochs = $1 }
        set("batch-size", batchSize) { $0.batchSize = $1 }
        try set("optimizer", optimizer) {
            guard let kind = OptimizerKind(rawValue: $1.lowercased()) else {
                throw CNNError(.invalidArgument, "--optimizer must be sgd, adam, adamw or rmsprop, not '\($1)'")
            }
            $0.optimizer.kind = kind
        }
        set("lr", lr) { $0.learningRate = $1 }
        set("momentum", momentum) { $0.optimizer.momentum = $1 }
        set("nesterov", nesterov) { $0.optimizer.nesterov = $1 }
        set("weight-decay", weightDecay) { $0.optimizer.weightDecay = $1 }
        set("decay-bias-norm", decayBiasNorm) { $0.optimizer.decayBiasAndNorm = $1 }
        try set("schedule", schedule) {
            guard let kind = ScheduleKind(rawValue: $1.lowercased()) else {
                throw CNNError(.invalidArgument, "--schedule must be constant, step or cosine, not '\($1)'")
            }
            $0.schedule.kind = kind
        }
        set("step-epochs", stepEpochs) { $0.schedule.stepEpochs = $1 }
        set("gamma", gamma) { $0.schedule.gamma = $1 }
        set("warmup", warmup) { $0.schedule.warmupEpochs = $1 }
        try set("loss", loss) {
            guard let kind = LossKind(rawValue: $1.lowercased()) else {
                throw CNNError(.invalidArgument, "--loss must be cross-entropy or mse, not '\($1)'")
            }
            $0.loss = kind
        }
        set("label-smoothing", labelSmoothing) { $0.labelSmoothing = $1 }
        set("seed", seed) { $0.seed = $1 }
        try set("normalize", normalize) {
            let values = $1.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.count % 2 == 0, values.allSatisfy({ $0 != nil }) else {
                throw CNNError(.invalidArgument, "--normalize takes MEAN,STD (or M1,..,Mc,S1,..,Sc), not '\($1)'")
            }
            let v = values.compactMap { $0 }
            $0.normalization = (Array(v[..<(v.count / 2)]), Array(v[(v.count / 2)...]))
        }
        set("flip", flip) { $0.augmentation.flip = $1 }
        set("translate", translate) { $0.augmentation.translate = $1 }
        set("brightness", brightness) { $0.augmentation.brightness = $1 }
        set("contrast", contrast) { $0.augmentation.contrast = $1 }
        set("erase", erase) { $0.augmentation.erase = $1 }
        set("divergence-factor", divergenceFactor) { $0.divergenceFactor = $1 }
        set("allow-extra-outputs", allowExtraOutputs) { $0.allowExtraOutputs = $1 }
        set("early-stop", earlyStop) { $0.earlyStopping = $1 }
        try set("monitor", monitor) {
            guard let m = Monitor(rawValue: $1) else { throw CNNError(.invalidArgument, "--monitor must be val_loss or val_accuracy, not '\($1)'") }
            $0.monitor = m
        }
        set("freeze-until", freezeUntil) { $0.freezeUntil = $1 }
        if let loaderThreads { s.loaderThreads = loaderThreads }
        s.recomputeBlocks = recomputeBlocks
        return (s, given)
    }

    /// The data options a checkpoint remembers, under their option names.
    var dataRecord: [(key: String, value: String)] {
        [("data", data), ("val", val), ("split", split.map { "\($0)" }), ("limit", limit.map(String.init))]
            .compactMap { k, v in v.map { (k, $0) } }
    }

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            var (settings, given) = try requested()
            var options = self
            if let resume {
                // The one rule: the checkpoint's settings and data hold; what differs is refused,
                // except the number of epochs.
                let records = try TrainingSettings.checkpointRecords(resume)
                if let recorded = records.settings {
                    var continued = try TrainingSettings(record: recorded)
                    let asked = Dictionary(uniqueKeysWithValues: settings.record.map { ($0.key, $0.value) })
                    var refused: [String] = []
                    for (key, value) in continued.record where given.contains(key) && asked[key] != value && key != "epochs" {
                        refused.append("--\(key) \(asked[key] ?? "?") (the checkpoint's: \(value))")
                    }
                    let recordedData = Dictionary(uniqueKeysWithValues: records.data.map { ($0.key, $0.value) })
                    for (key, value) in dataRecord where recordedData[key] != nil && recordedData[key] != value {
                        refused.append("--\(key) \(value) (the checkpoint's: \(recordedData[key]!))")
                    }
                    guard refused.isEmpty else {
                        throw CNNError(.invalidArgument, "\(resume): a resumed run continues with the checkpoint's settings and data, and these differ: \(refused.joined(separator: ", ")) (leave them out; only --epochs may change)")
                    }
                    if given.contains("epochs"), settings.epochs != continued.epochs {
                        if !quiet { printError("resuming with --epochs \(settings.epochs) (the checkpoint's run had \(continued.epochs))") }
                        continued.epochs = settings.epochs
                    }
                    continued.loaderThreads = settings.loaderThreads
                    continued.recomputeBlocks = settings.recomputeBlocks
                    settings = continued
                    options.data = options.data ?? recordedData["data"]
                    options.val = options.val ?? recordedData["val"]
                    options.split = options.split ?? recordedData["split"].flatMap(Double.init)
                    options.limit = options.limit ?? recordedData["limit"].flatMap(Int.init)
                }
            }
            try settings.validate()
            try options.train(settings: settings)
        }
    }

    private func train(settings: TrainingSettings) throws {
        guard distributed ?? (Distributed.launcherSize ?? 1 > 1) else { return try train(settings: settings, on: nil) }
        let world = try Distributed.world()
        do {
            try train(settings: settings, on: world)
        } catch let e as ExitCode {
            throw e  // Ctrl-C: every rank stopped at the same batch
        } catch {
            // The other ranks would wait for this one in their next exchange: end the whole job.
            // A failure every rank saw (divergence, another rank's error) is told by rank 0 alone.
            let e = error as? CNNError
            let shared = world.othersFailed || e?.kind == .diverged || e?.kind == .cancelled
            if world.rank == 0 || !shared { printError("cnn: rank \(world.rank) of \(world.size): \(e?.message ?? "\(error)")") }
            world.abort(1)
        }
    }

    private func train(settings: TrainingSettings, on world: Distributed?) throws {
        var settings = settings
        // Distributed: rank 0 alone prints, logs and saves.
        let leader = (world?.rank ?? 0) == 0
        let quiet = quiet || !leader
        let (log, saveBest, checkpoint) = leader ? (log, saveBest, checkpoint) : (nil, nil, nil)
        if newHead != nil && initial == nil { throw CNNError(.invalidArgument, "--new-head replaces the head of the --init model: give --init") }
        if initial != nil && resume != nil { throw CNNError(.invalidArgument, "--init and --resume exclude each other (a checkpoint holds its model)") }
        guard let data else { throw CNNError(.invalidArgument, "--data is required (the training data)") }
        if let limit, limit < 1 { throw CNNError(.invalidArgument, "--limit must be at least 1") }
        if (saveBest != nil || settings.earlyStopping > 0) && val == nil && split == nil {
            throw CNNError(.invalidArgument, "\(saveBest != nil ? "--save-best" : "--early-stop") watches \(settings.monitor.rawValue): give validation data (--val or --split)")
        }
        let dataOptions = try images.options()
        let model: Model
        if let resume {
            model = try Model.load(from: resume)
            if let spec {
                let wanted = try Architecture(parsing: architectureText(spec))
                guard wanted == model.architecture else {
                    throw CNNError(.invalidArgument, "--spec differs from the architecture of the checkpoint \(resume)")
                }
            }
        } else if let initial {
            var start = try Model.load(from: initial)
            if let newHead { start = try start.replacingHead(classes: newHead, seed: settings.seed) }
            if let spec {
                let wanted = try Architecture(parsing: architectureText(spec))
                guard wanted == start.architecture else {
                    throw CNNError(.invalidArgument, "--spec differs from the architecture of --init \(initial)\(newHead == nil ? "" : " with its new head"): \(start.architecture.text)")
                }
            }
            model = start
            // The weights were trained on inputs normalized this way.
            if settings.normalization == nil { settings.normalization = (model.mean, model.std) }
        } else {
            guard let spec else { throw CNNError(.invalidArgument, "--spec is required (or --init a model, or --resume a checkpoint)") }
            model = try Model(architecture: Architecture(parsing: architectureText(spec)), seed: settings.seed)
        }
        var train = try loadDataset(data, input: model.inputShape, options: dataOptions, quiet: quiet)
        if let limit { train = try train.prefix(limit) }
        var validation = try val.map { try loadDataset($0, input: model.inputShape, options: dataOptions, quiet: quiet) }
        if let split {
            guard validation == nil else { throw CNNError(.invalidArgument, "--split and --val exclude each other") }
            (train, validation) = try train.split(validationFraction: split, seed: settings.seed)
        }
        let trainer = try Trainer(model: model, settings: settings)
        trainer.distributed = world
        if let resume { try trainer.resume(from: resume) }
        trainer.state.data = dataRecord

        var logLines = ["epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_second"]
        let terminal = isatty(STDERR_FILENO) != 0
        var lastDraw = 0.0
        if !quiet {
            printError("training \(model.architecture.text)")
            printError("\(train.count) training images in \(train.numClasses) classes\(validation.map { ", \($0.count) validation images" } ?? ""), \(model.parameterCount) parameters, \(ThreadPool.shared.threads) thread(s)\(world.map { " in each of \($0.size) processes (a batch of \(settings.batchSize) is \(settings.batchSize / $0.size) per process)" } ?? "")")
        }
        interrupts.store(0, ordering: .relaxed)
        let previous = signal(SIGINT) { _ in
            if interrupts.add(1, ordering: .relaxed).newValue > 1 { _exit(130) }
        }
        defer { signal(SIGINT, previous) }
        do {
            try trainer.fit(train, validation: validation, onBatch: { p in
                if !quiet && terminal {
                    let now = Date().timeIntervalSince1970
                    if now - lastDraw > 0.1 || p.batch + 1 == p.batches {
                        lastDraw = now
                        let width = 30, done = width * (p.batch + 1) / p.batches
                        let bar = String(repeating: "=", count: done) + String(repeating: " ", count: width - done)
                        FileHandle.standardError.write(Data("\repoch \(p.epoch + 1)/\(p.epochs) [\(bar)] \(p.batch + 1)/\(p.batches) loss \(format(p.loss)) acc \(format(p.accuracy)) \(Int(p.imagesPerSecond)) img/s ".utf8))
                    }
                }
                return interrupts.load(ordering: .relaxed) == 0
            }, onEpoch: { r, state in
                if !quiet {
                    if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                    var line = "epoch \(r.epoch + 1)/\(settings.epochs): loss \(format(r.loss)) accuracy \(format(r.accuracy))"
                    if let v = r.validation { line += " | val loss \(format(v.loss)) val accuracy \(format(v.accuracy))" }
                    line += " | \(format(r.seconds, 1)) s, \(Int(r.imagesPerSecond)) images/s"
                    if r.improved && saveBest != nil { line += " | best, saved" }
                    printError(line)
                }
                logLines.append([String(r.epoch + 1), format(r.loss, 6), format(r.accuracy, 6),
                                 r.validation.map { format($0.loss, 6) } ?? "", r.validation.map { format($0.accuracy, 6) } ?? "",
                                 format(r.seconds, 3), format(r.imagesPerSecond, 1)].joined(separator: ","))
                if let log {
                    do { try (logLines.joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8) }
                    catch { throw CNNError(.io, "\(log): cannot write the log: \(error.localizedDescription)") }
                }
                if r.improved, let saveBest { try model.save(to: saveBest) }
                if let checkpoint { try model.save(to: checkpoint, training: state) }
                if r.stopsEarly && !quiet {
                    printError("early stop: \(settings.monitor.rawValue) has not improved for \(settings.earlyStopping) epoch(s); the best was epoch \(state.best?.epoch ?? 0)")
                }
            })
        } catch let e as CNNError where e.kind == .cancelled && interrupts.load(ordering: .relaxed) > 0 {
            // Ctrl-C: the model as it stands, and a checkpoint that goes on from the next batch.
            let checkpointPath = checkpoint ?? Train.checkpointPath(for: out)
            guard leader else { throw ExitCode(130) }
            try model.save(to: out)
            try model.save(to: checkpointPath, training: trainer.state)
            if terminal && !quiet { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            printError("cnn: interrupted at epoch \(trainer.state.epoch + 1), batch \(trainer.state.batch): saved the model to \(out) and a checkpoint to \(checkpointPath) (go on with: cnn train --resume \(checkpointPath) --out \(out))")
            throw ExitCode(130)
        }
        if let world, world.size > 1, !quiet {
            if trainer.gradientsInSharedMemory {
                printError("summing gradients in shared memory: \(format(trainer.exchangeWaitSeconds, 2)) s waited after backward for the other ranks")
            } else {
                printError("exchanging gradients: \(format(trainer.exchangeWaitSeconds, 2)) s waited after backward (the rest ran behind it)")
            }
        }
        guard leader else { return }
        try model.save(to: out)
        if !quiet { printError("saved \(out)") }
    }

    /// Where Ctrl-C saves a checkpoint when --checkpoint names none: beside the model.
    static func checkpointPath(for out: String) -> String {
        out.hasSuffix(".safetensors") ? String(out.dropLast(".safetensors".count)) + ".checkpoint.safetensors" : out + ".checkpoint"
    }
}

/// `run` of CNNCommand.swift, named apart from ParsableCommand.run.
func CNNCommandRun(_ body: () throws -> Void) throws { try run(body) }
