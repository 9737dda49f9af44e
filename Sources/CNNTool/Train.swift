import ArgumentParser
import CNN
import Foundation

/// The engine's training defaults: the tool's, the C API's and Python's are all these.
private let defaults = TrainingSettings()

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a network and save it as a safetensors model file.")

    @Option(help: "The architecture text, or a file holding it (not needed with --resume).")
    var spec: String?
    @Option(help: "Training data: a folder of class sub-folders of JPEGs, or an IDX images file (its labels file is found beside it).")
    var data: String
    @Option(help: "Validation data, evaluated after every epoch.")
    var val: String?
    @Option(help: "Hold out this fraction of --data (seeded) for validation, when there is no --val.")
    var split: Double?
    @Option(help: "Number of epochs.") var epochs: Int = defaults.epochs
    @Option(name: .customLong("batch-size"), help: "Mini-batch size.") var batchSize: Int = defaults.batchSize
    @Option(help: "sgd, adam, adamw or rmsprop.") var optimizer: String = defaults.optimizer.kind.rawValue
    @Option(help: "Learning rate.") var lr: Float = defaults.learningRate
    @Option(help: "SGD momentum.") var momentum: Float = defaults.optimizer.momentum
    @Flag(help: "Nesterov momentum (SGD).") var nesterov = false
    @Option(name: .customLong("weight-decay"), help: "Weight decay (L2; decoupled for adamw).") var weightDecay: Float = defaults.optimizer.weightDecay
    @Option(help: "Learning-rate schedule: constant, step or cosine.") var schedule: String = defaults.schedule.kind.rawValue
    @Option(name: .customLong("step-epochs"), help: "Step schedule: epochs between decays.") var stepEpochs: Int = defaults.schedule.stepEpochs
    @Option(help: "Step schedule: decay factor.") var gamma: Float = defaults.schedule.gamma
    @Option(help: "Epochs of linear learning-rate warm-up.") var warmup: Float = defaults.schedule.warmupEpochs
    @Option(help: "Loss: cross-entropy or mse.") var loss: String = defaults.loss.rawValue
    @Option(name: .customLong("label-smoothing"), help: "Label smoothing for cross-entropy.") var labelSmoothing: Float = defaults.labelSmoothing
    @Option(help: "Seed for initialization, shuffling and dropout.") var seed: UInt64 = defaults.seed
    @Option(help: "Input normalization MEAN,STD (per channel: M1,M2,M3,S1,S2,S3); default: measured on the training data.")
    var normalize: String?
    @Option(help: "Output model file (.safetensors).") var out: String
    @Option(help: "Write a checkpoint (model + optimizer state) to this file after every epoch.") var checkpoint: String?
    @Option(help: "Resume training from a checkpoint written with --checkpoint.") var resume: String?
    @Option(help: "Write a CSV log of every epoch to this file.") var log: String?
    @Option(help: "Use only the first N training samples.") var limit: Int?
    @Flag(help: "Augment: random horizontal flips.") var flip = false
    @Option(help: "Augment: random translation by up to N pixels (pad and crop).") var translate: Int = defaults.augmentation.translate
    @Option(help: "Augment: random brightness change up to this much (pixels in [0, 1]).") var brightness: Float = defaults.augmentation.brightness
    @Option(help: "Augment: random contrast change up to this factor.") var contrast: Float = defaults.augmentation.contrast
    @Option(name: .customLong("loader-threads"), help: "Threads preparing batches ahead (decoding, augmentation).") var loaderThreads: Int = defaults.loaderThreads
    @Option(name: .customLong("divergence-factor"), help: "Stop (diverged) when a batch's loss exceeds this multiple of the first batch's; 0: no such bound (NaN or infinity always stops).")
    var divergenceFactor: Float = defaults.divergenceFactor
    @OptionGroup var images: ImageOptions
    @Flag(help: "No progress output.") var quiet = false
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            var settings = TrainingSettings()
            settings.epochs = epochs
            settings.batchSize = batchSize
            settings.learningRate = lr
            guard let kind = OptimizerKind(rawValue: optimizer.lowercased()) else {
                throw CNNError(.invalidArgument, "--optimizer must be sgd, adam, adamw or rmsprop, not '\(optimizer)'")
            }
            settings.optimizer.kind = kind
            settings.optimizer.momentum = momentum
            settings.optimizer.nesterov = nesterov
            settings.optimizer.weightDecay = weightDecay
            guard let scheduleKind = ScheduleKind(rawValue: schedule.lowercased()) else {
                throw CNNError(.invalidArgument, "--schedule must be constant, step or cosine, not '\(schedule)'")
            }
            settings.schedule.kind = scheduleKind
            settings.schedule.stepEpochs = stepEpochs
            settings.schedule.gamma = gamma
            settings.schedule.warmupEpochs = warmup
            guard let lossKind = LossKind(rawValue: loss.lowercased()) else {
                throw CNNError(.invalidArgument, "--loss must be cross-entropy or mse, not '\(loss)'")
            }
            settings.loss = lossKind
            settings.labelSmoothing = labelSmoothing
            settings.seed = seed
            if let normalize {
                let values = normalize.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
                guard !values.isEmpty, values.count % 2 == 0, values.allSatisfy({ $0 != nil }) else {
                    throw CNNError(.invalidArgument, "--normalize takes MEAN,STD (or M1,..,Mc,S1,..,Sc), not '\(normalize)'")
                }
                let v = values.compactMap { $0 }
                settings.normalization = (Array(v[..<(v.count / 2)]), Array(v[(v.count / 2)...]))
            }
            if let limit, limit < 1 { throw CNNError(.invalidArgument, "--limit must be at least 1") }
            settings.augmentation.flip = flip
            settings.augmentation.translate = translate
            settings.augmentation.brightness = brightness
            settings.augmentation.contrast = contrast
            settings.loaderThreads = loaderThreads
            settings.divergenceFactor = divergenceFactor
            try settings.validate()
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
            } else {
                guard let spec else { throw CNNError(.invalidArgument, "--spec is required (or --resume a checkpoint)") }
                model = try Model(architecture: Architecture(parsing: architectureText(spec)), seed: seed)
            }
            var train = try loadDataset(data, input: model.inputShape, options: dataOptions, quiet: quiet)
            if let limit { train = try train.prefix(limit) }
            var validation = try val.map { try loadDataset($0, input: model.inputShape, options: dataOptions, quiet: quiet) }
            if let split {
                guard validation == nil else { throw CNNError(.invalidArgument, "--split and --val exclude each other") }
                (train, validation) = try train.split(validationFraction: split, seed: seed)
            }
            let trainer = try Trainer(model: model, settings: settings)
            if let resume { try trainer.resume(from: resume) }

            var logLines = ["epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_second"]
            let terminal = isatty(STDERR_FILENO) != 0
            var lastDraw = 0.0
            if !quiet {
                printError("training \(model.architecture.text)")
                printError("\(train.count) training images\(validation.map { ", \($0.count) validation images" } ?? ""), \(model.parameterCount) parameters, \(ThreadPool.shared.threads) thread(s)")
            }
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
                return true
            }, onEpoch: { r, state in
                if !quiet {
                    if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                    var line = "epoch \(r.epoch + 1)/\(epochs): loss \(format(r.loss)) accuracy \(format(r.accuracy))"
                    if let v = r.validation { line += " | val loss \(format(v.loss)) val accuracy \(format(v.accuracy))" }
                    line += " | \(format(r.seconds, 1)) s, \(Int(r.imagesPerSecond)) images/s"
                    printError(line)
                }
                logLines.append([String(r.epoch + 1), format(r.loss, 6), format(r.accuracy, 6),
                                 r.validation.map { format($0.loss, 6) } ?? "", r.validation.map { format($0.accuracy, 6) } ?? "",
                                 format(r.seconds, 3), format(r.imagesPerSecond, 1)].joined(separator: ","))
                if let log {
                    do { try (logLines.joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8) }
                    catch { throw CNNError(.io, "\(log): cannot write the log: \(error.localizedDescription)") }
                }
                if let checkpoint { try model.save(to: checkpoint, training: state) }
            })
            try model.save(to: out)
            if !quiet { printError("saved \(out)") }
        }
    }
}

/// `run` of CNNCommand.swift, named apart from ParsableCommand.run.
func CNNCommandRun(_ body: () throws -> Void) throws { try run(body) }
