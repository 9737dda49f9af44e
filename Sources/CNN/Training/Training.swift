#if canImport(Glibc)
import Glibc
#endif

/// Everything that decides a training run. One seed fixes initialization (when the model is
/// created with it), the order of the samples, and dropout.
public struct TrainingSettings: Equatable, Sendable {
    public var epochs = 1
    public var batchSize = 64
    public var learningRate: Float = 0.01
    public var optimizer = OptimizerSettings()
    public var schedule = Schedule()
    public var loss = LossKind.crossEntropy
    public var labelSmoothing: Float = 0
    public var seed: UInt64 = 1
    /// Input normalization (mean, std per channel, pixels in [0, 1]); nil measures it on the
    /// training set.
    public var normalization: (mean: [Float], std: [Float])? = nil
    /// Random changes to training images (none by default).
    public var augmentation = Augmentation()
    /// Threads that prepare batches ahead (decoding, augmentation) while the current one trains.
    public var loaderThreads = 1
    /// The divergence guard's bound on an exploding loss: training stops (`diverged`) when a
    /// batch's mean loss exceeds this multiple of the run's first batch loss (at least 1); 0 turns
    /// that check off. A NaN or infinite loss, gradient or weight always stops it.
    public var divergenceFactor: Float = 1000
    /// A model with more outputs than the data has classes is refused unless this is set (the
    /// extra outputs are then trained towards probability 0).
    public var allowExtraOutputs = false
    /// Early stopping: training ends when the monitored validation metric has not improved for
    /// this many epochs (0: off). Needs validation data.
    public var earlyStopping = 0
    /// The validation metric that early stopping and "best" watch.
    public var monitor = Monitor.valLoss
    /// Fine-tuning: the first this-many layers of the top sequence are frozen (see `Model.frozenLayers`).
    public var freezeUntil = 0
    /// Less memory for more time: the top-level blocks keep nothing of their layers for backward,
    /// which runs each forward again first (`Model.recomputesBlocks`). The same results, bit for bit.
    public var recomputeBlocks = false
    public init() {}

    public static func == (a: TrainingSettings, b: TrainingSettings) -> Bool {
        a.epochs == b.epochs && a.batchSize == b.batchSize && a.learningRate == b.learningRate
            && a.optimizer == b.optimizer && a.schedule == b.schedule && a.loss == b.loss
            && a.labelSmoothing == b.labelSmoothing && a.seed == b.seed
            && a.augmentation == b.augmentation && a.loaderThreads == b.loaderThreads
            && a.divergenceFactor == b.divergenceFactor && a.allowExtraOutputs == b.allowExtraOutputs
            && a.earlyStopping == b.earlyStopping && a.monitor == b.monitor && a.freezeUntil == b.freezeUntil
            && a.recomputeBlocks == b.recomputeBlocks
            && a.normalization?.mean == b.normalization?.mean && a.normalization?.std == b.normalization?.std
    }

    public func validate() throws {
        func bad(_ what: String) -> CNNError { CNNError(.invalidArgument, what) }
        guard epochs >= 1, epochs <= 1_000_000 else { throw bad("epochs must be from 1 to 1000000, not \(epochs)") }
        guard batchSize >= 1, batchSize <= 65536 else { throw bad("batch size must be from 1 to 65536, not \(batchSize)") }
        guard learningRate.isFinite, learningRate > 0 else { throw bad("learning rate must be a positive number, not \(learningRate)") }
        let o = optimizer
        guard o.momentum.isFinite, o.momentum >= 0, o.momentum < 1 else { throw bad("momentum must be in [0, 1), not \(o.momentum)") }
        guard !o.nesterov || (o.kind == .sgd && o.momentum > 0) else { throw bad("nesterov needs SGD with momentum > 0") }
        guard o.weightDecay.isFinite, o.weightDecay >= 0 else { throw bad("weight decay must be >= 0, not \(o.weightDecay)") }
        guard o.beta1 >= 0, o.beta1 < 1, o.beta2 >= 0, o.beta2 < 1 else { throw bad("Adam betas must be in [0, 1)") }
        guard o.alpha >= 0, o.alpha < 1 else { throw bad("RMSProp alpha must be in [0, 1)") }
        guard o.eps.isFinite, o.eps > 0 else { throw bad("eps must be > 0") }
        guard schedule.stepEpochs >= 1 else { throw bad("step schedule needs step epochs >= 1") }
        guard schedule.gamma.isFinite, schedule.gamma > 0, schedule.gamma <= 1 else { throw bad("schedule gamma must be in (0, 1]") }
        guard schedule.warmupEpochs.isFinite, schedule.warmupEpochs >= 0 else { throw bad("warm-up epochs must be >= 0") }
        guard labelSmoothing.isFinite, labelSmoothing >= 0, labelSmoothing < 1 else { throw bad("label smoothing must be in [0, 1)") }
        try augmentation.validate()
        guard loaderThreads >= 1, loaderThreads <= 64 else { throw bad("loader threads must be from 1 to 64, not \(loaderThreads)") }
        guard divergenceFactor.isFinite, divergenceFactor == 0 || divergenceFactor >= 1 else {
            throw bad("divergence factor must be 0 (off) or at least 1, not \(divergenceFactor)")
        }
        guard freezeUntil >= 0, freezeUntil <= Architecture.maxLayers else { throw bad("freeze until must be a layer index from 0, not \(freezeUntil)") }
        guard earlyStopping >= 0, earlyStopping <= 1_000_000 else { throw bad("early stopping patience must be from 0 (off) to 1000000 epochs, not \(earlyStopping)") }
        if let n = normalization {
            guard n.mean.allSatisfy(\.isFinite), n.std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw bad("normalization needs finite means and positive standard deviations")
            }
        }
    }
}

/// Reported after every batch.
public struct TrainingProgress: Sendable {
    public var epoch: Int          // 0-based
    public var epochs: Int
    public var batch: Int          // 0-based, within the epoch
    public var batches: Int
    public var loss: Double        // mean over the epoch so far
    public var accuracy: Double    // over the epoch so far
    public var imagesPerSecond: Double
    public var learningRate: Float
}

/// Reported after every epoch.
public struct EpochResult: Sendable {
    public var epoch: Int          // 0-based
    public var loss: Double
    public var accuracy: Double
    public var seconds: Double
    public var imagesPerSecond: Double
    public var validation: Evaluation?
    /// The monitored validation metric is the best so far (this epoch's model is the best one).
    public var improved = false
    /// Early stopping ends the run after this epoch.
    public var stopsEarly = false
}

/// A validation metric to watch: lower loss or higher accuracy is better.
public enum Monitor: String, Sendable, CaseIterable {
    case valLoss = "val_loss"
    case valAccuracy = "val_accuracy"

    /// The metric as a number to minimize.
    func score(_ e: Evaluation) -> Double { self == .valLoss ? e.loss : -e.accuracy }
}

/// Where a run stands between epochs: what a checkpoint saves so that a resumed run continues
/// exactly as an uninterrupted one would.
public final class TrainingState {
    public let optimizer: Optimizer
    /// Epochs completed.
    public internal(set) var epoch: Int
    public internal(set) var rng: Random
    let settings: TrainingSettings
    /// The run's first batch loss: the divergence guard's yardstick.
    var lossReference: Double?
    /// The best monitored score (lower is better) and the epoch (1-based) that reached it.
    public internal(set) var best: (score: Double, epoch: Int)?
    /// Early stopping ended the run.
    public internal(set) var stoppedEarly = false
    /// Batches done in the epoch under way (a run stopped inside an epoch), the generator as that
    /// epoch began (its order and augmentation come from it) and the epoch's sums so far.
    public internal(set) var batch = 0
    /// What the caller wants a checkpoint to remember besides the settings (the tool: its data
    /// options), saved as `checkpoint_data`.
    public var data: [(key: String, value: String)] = []
    var epochRNG = Random(seed: 0)
    var partial: (loss: Double, correct: Int, seen: Int) = (0, 0, 0)

    init(optimizer: Optimizer, epoch: Int, rng: Random, settings: TrainingSettings) {
        self.optimizer = optimizer
        self.epoch = epoch
        self.rng = rng
        self.settings = settings
    }

    var metadata: [(String, String)] {
        let rngText: String = rng.stateWords.map { String($0, radix: 16) }.joined(separator: ",")
        let settingsText: String = JSON.object(settings.record.map { ($0.key, JSON.string($0.value)) }).serialized
        var out: [(String, String)] = [
            ("checkpoint_epoch", String(epoch)),
            ("checkpoint_step", String(optimizer.step)),
            ("checkpoint_rng", rngText),
            ("checkpoint_optimizer", optimizer.settings.kind.rawValue),
            ("checkpoint_batch_size", String(settings.batchSize)),
            ("checkpoint_settings", settingsText)]
        if let lossReference { out.append(("checkpoint_loss_reference", "\(lossReference)")) }
        if let best { out.append(("checkpoint_best", "\(best.score),\(best.epoch)")) }
        if stoppedEarly { out.append(("checkpoint_stopped_early", "1")) }
        if !data.isEmpty { out.append(("checkpoint_data", JSON.object(data.map { ($0.key, JSON.string($0.value)) }).serialized)) }
        if batch > 0 {
            let words: String = epochRNG.stateWords.map { String($0, radix: 16) }.joined(separator: ",")
            out.append(("checkpoint_batch", "\(batch),\(partial.loss),\(partial.correct),\(partial.seen)"))
            out.append(("checkpoint_epoch_rng", words))
        }
        return out
    }
}

public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Mini-batch training: a fresh seeded permutation each epoch, a last partial batch of its true
/// size, the loss's gradient backpropagated, one optimizer update per batch.
public final class Trainer {
    public let model: Model
    public let settings: TrainingSettings
    public private(set) var state: TrainingState
    /// Data-parallel training: this process is one rank of it (see `Distributed`). nil: alone.
    public var distributed: Distributed?
    /// Distributed runs: seconds backward waited for the gradient exchange to finish, in all (the
    /// part of the exchange that computing did not hide).
    public private(set) var exchangeWaitSeconds = 0.0
    /// Distributed runs: whether the last one summed the gradients in memory its ranks share (all
    /// on one machine; `SharedGradients`) rather than through MPI's all-reduce.
    public private(set) var gradientsInSharedMemory = false

    /// A rank's part of a global batch of `n` samples: samples [first, first + count). The parts
    /// are as equal as can be, in rank order, so one process would see the same samples in the
    /// same order.
    public static func share(of n: Int, rank: Int, ranks: Int) -> (first: Int, count: Int) {
        let first = n * rank / ranks
        return (first, n * (rank + 1) / ranks - first)
    }

    public init(model: Model, settings: TrainingSettings) throws {
        try settings.validate()
        try model.freeze(until: settings.freezeUntil)
        model.recomputesBlocks = settings.recomputeBlocks
        self.model = model
        self.settings = settings
        state = TrainingState(optimizer: try Optimizer(settings.optimizer, model: model), epoch: 0,
                              rng: Random(seed: settings.seed ^ 0x5EED_0F_5A_F7C0), settings: settings)
    }

    /// Restores the optimizer state, epoch and generator from a checkpoint file whose model
    /// weights were loaded into `model` (with `Model.load`).
    public func resume(from path: String) throws {
        let file = try Safetensors.read(path)
        func bad(_ what: String) -> CNNError { CNNError(.badFormat, "\(path): \(what)") }
        let meta = file.metadata
        guard let epochText = meta["checkpoint_epoch"], let epoch = Int(epochText), epoch >= 0,
              let stepText = meta["checkpoint_step"], let step = Int(stepText), step >= 0,
              let rngWords = meta["checkpoint_rng"]?.split(separator: ",").compactMap({ UInt64($0, radix: 16) }),
              let rng = Random(state: rngWords) else {
            throw bad("not a checkpoint (no valid checkpoint_epoch, checkpoint_step and checkpoint_rng metadata)")
        }
        if let text = meta["checkpoint_settings"] {
            let recorded = try TrainingSettings.record(parsing: text, path: path)
            try settings.checkResume(against: recorded, path: path)
        } else {
            // Written by 0.3 or earlier: only the optimizer was recorded.
            guard meta["checkpoint_optimizer"] == settings.optimizer.kind.rawValue else {
                throw CNNError(.invalidArgument, "\(path): the checkpoint was trained with \(meta["checkpoint_optimizer"] ?? "?"), not \(settings.optimizer.kind.rawValue)")
            }
        }
        let optimizer = try Optimizer(settings.optimizer, model: model)
        for (name, buffer) in optimizer.stateTensors {
            guard let t = file.tensors[name], t.dtype == .f32, t.shape == [buffer.count] else {
                throw bad("optimizer state '\(name)' is missing or has the wrong shape")
            }
            file.copyFloats(name, into: buffer)
        }
        optimizer.step = step
        state = TrainingState(optimizer: optimizer, epoch: epoch, rng: rng, settings: settings)
        if let text = meta["checkpoint_loss_reference"] {
            guard let reference = Double(text), reference.isFinite, reference >= 0 else { throw bad("checkpoint_loss_reference is '\(text)'") }
            state.lossReference = reference
        }
        if let text = meta["checkpoint_best"] {
            let parts = text.split(separator: ",")
            guard parts.count == 2, let score = Double(parts[0]), score.isFinite, let epoch = Int(parts[1]), epoch >= 1, epoch <= state.epoch else {
                throw bad("checkpoint_best is '\(text)'")
            }
            state.best = (score, epoch)
        }
        state.stoppedEarly = meta["checkpoint_stopped_early"] == "1"
        if let text = meta["checkpoint_data"] { state.data = try TrainingSettings.record(parsing: text, path: path, settings: false) }
        if let text = meta["checkpoint_batch"] {
            let parts = text.split(separator: ",")
            guard parts.count == 4, let b = Int(parts[0]), b >= 1, let loss = Double(parts[1]), loss.isFinite,
                  let correct = Int(parts[2]), correct >= 0, let seen = Int(parts[3]), seen >= correct,
                  let words = meta["checkpoint_epoch_rng"]?.split(separator: ",").compactMap({ UInt64($0, radix: 16) }),
                  let epochRNG = Random(state: words) else {
                throw bad("checkpoint_batch '\(text)' or checkpoint_epoch_rng is not valid")
            }
            state.batch = b
            state.partial = (loss, correct, seen)
            state.epochRNG = epochRNG
        }
    }

    /// Trains until `settings.epochs` epochs are complete. `onBatch` returning false cancels
    /// (`CNNError.cancelled`, the model keeps its last completed update); `onEpoch` sees each
    /// epoch's result and the state to checkpoint.
    ///
    /// The divergence guard: a loss, gradient or updated weight that is NaN or infinite, or a loss
    /// past `divergenceFactor` times the first, stops training with `CNNError.diverged`, and the
    /// model is left with weights whose loss was finite and within bounds, with their optimizer
    /// state and batch-norm statistics: an update that made bad weights, or weights whose next
    /// loss is bad, is undone (each update keeps a copy of what it changes).
    ///
    /// `until`: stop after that many epochs in all (at most `settings.epochs`; nil: all of them),
    /// so that a run can be trained in steps; the steps give the same bytes as one call.
    /// Early stopping (`settings.earlyStopping`) ends the run when the monitored metric has not
    /// improved for that many epochs; `EpochResult.improved` marks the best epoch so far.
    @discardableResult
    public func fit(_ train: Dataset, validation: Dataset? = nil, until: Int? = nil,
                    onBatch: (TrainingProgress) -> Bool = { _ in true },
                    onEpoch: (EpochResult, TrainingState) throws -> Void = { _, _ in }) throws -> [EpochResult] {
        let batchSize = min(settings.batchSize, train.count)
        let (rank, ranks) = (distributed?.rank ?? 0, distributed?.size ?? 1)
        // Each rank runs its share of a global batch.
        let localBatch = batchSize / ranks
        if ranks > 1 {
            guard settings.batchSize % ranks == 0 else {
                throw CNNError(.invalidArgument, "the batch size \(settings.batchSize) does not split evenly over \(ranks) processes: use a multiple of \(ranks)")
            }
            guard batchSize == settings.batchSize else {
                throw CNNError(.invalidArgument, "the training data has \(train.count) samples, fewer than the batch size \(settings.batchSize), which \(ranks) processes split")
            }
        }
        guard localBatch <= model.maxBatch else {
            throw CNNError(.outOfMemory, "a batch of \(localBatch) needs more working memory than the limit of \(Memory.describe(Memory.limit)) for this network; use a batch size of at most \(model.maxBatch * ranks) (or raise the limit with cnn_set_memory_limit or CNN_MEMORY_LIMIT)")
        }
        // Everything a run takes, from the shapes, before any of it is allocated: parameters and
        // gradients, optimizer state and the guard's copy of it and of the weights, the batch's
        // working memory, its input and the loss gradient.
        let stateFloats = Optimizer.stateFloats(settings.optimizer, model: model)
        let (batchFloats, o1) = localBatch.multipliedReportingOverflow(by: model.workspacePerSample + model.inputShape.count + model.numClasses)
        // A distributed run packs the gradients into buckets for the exchange: once more.
        let runFloats = o1 ? Int.max / 4 : model.parameterFloats + 2 * stateFloats + model.parameterCount * (ranks > 1 ? 2 : 1) + batchFloats
        try Memory.check(runFloats &* 4, for: "training at a batch of \(localBatch)")
        try state.optimizer.enableGuard()
        guard train.shape.c == model.inputShape.c, train.shape.h == model.inputShape.h, train.shape.w == model.inputShape.w else {
            throw CNNError(.shapeMismatch, "training data has images of \(train.shape), the model takes \(model.inputShape)")
        }
        if let v = validation, v.shape.c != train.shape.c || v.shape.h != train.shape.h || v.shape.w != train.shape.w {
            throw CNNError(.shapeMismatch, "validation data has images of \(v.shape), the model takes \(model.inputShape)")
        }
        if settings.earlyStopping > 0 && validation == nil {
            throw CNNError(.invalidArgument, "early stopping watches \(settings.monitor.rawValue): it needs validation data")
        }
        if state.epoch == 0 {
            if let n = settings.normalization {
                guard n.mean.count == model.inputShape.c, n.std.count == model.inputShape.c else {
                    throw CNNError(.invalidArgument, "normalization needs \(model.inputShape.c) means and standard deviations")
                }
            }
        }
        // A fresh model (its classes unnamed) takes the data's names; a named one must match them.
        let adoptNames = state.epoch == 0 && model.classNames == Dataset.numberedNames(model.numClasses)
            && train.numClasses <= model.numClasses
        let names = adoptNames
            ? train.classNames + Dataset.numberedNames(model.numClasses).dropFirst(train.numClasses) : model.classNames
        try train.checkClasses(against: names, what: "the training data")
        try validation?.checkClasses(against: names, what: "the validation data")
        guard train.numClasses == model.numClasses || settings.allowExtraOutputs else {
            throw CNNError(.shapeMismatch, "the model outputs \(model.numClasses) classes, the training data has \(train.numClasses) \(Dataset.list(train.classNames)): make the last layer dense(\(train.numClasses)), or allow the extra outputs (--allow-extra-outputs, allow_extra_outputs) when they are wanted")
        }
        if state.epoch == 0 {
            if let n = settings.normalization {
                (model.mean, model.std) = (n.mean, n.std)
            } else {
                (model.mean, model.std) = train.channelStatistics()
            }
            model.classNames = names
            if let fit = train.imageFit { model.imageFit = fit }
        }
        let k = model.numClasses, sample = model.inputShape.count
        let batches = (train.count + batchSize - 1) / batchSize
        guard state.batch <= batches, state.partial.seen <= train.count else {
            throw CNNError(.shapeMismatch, "the run stopped after batch \(state.batch) of an epoch, but this data makes epochs of \(batches) batches: go on with the same data")
        }
        let totalSteps = batches * settings.epochs
        let x = FloatBuffer(count: localBatch * sample)
        let dLogits = FloatBuffer(count: localBatch * k)
        var labels = [Int32](repeating: 0, count: localBatch)
        var order: [Int32] = []
        var scratch = SampleScratch(shape: train.shape)
        let batchNorms = model.namedLayers.compactMap { $0.layer as? BatchNorm }
        // Batch norm's running statistics before this batch's forward and before the last one's.
        var statistics = BatchNormStatistics(batchNorms), previousStatistics = BatchNormStatistics(batchNorms)
        var results: [EpochResult] = []
        var rng = state.rng
        // In-memory data without augmentation is cheap to assemble here; anything else (decoding,
        // augmentation) is prepared ahead on the loader threads.
        let augment = settings.augmentation.isIdentity ? nil : settings.augmentation
        var streamed = false
        if case .files = train.pixels { streamed = true }
        let prefetcher = augment != nil || streamed
            ? Prefetcher(dataset: train, batchSize: batchSize, mean: model.mean, std: model.std,
                         augmentation: augment, workers: settings.loaderThreads, part: (rank, ranks))
            : nil
        defer { prefetcher?.stop() }
        let dropouts = model.namedLayers.compactMap { $0.layer as? Dropout }
        var buckets: Distributed.Buckets?
        var shared: SharedGradients?
        let ownGradients = model.gradientBlock
        if let distributed {
            try checkAgreement(distributed, train: train)
            // On one machine the gradients are summed in memory the ranks share; else by MPI.
            shared = SharedGradients.make(model: model, distributed: distributed)
            if let shared { model.useGradientBlock(shared.block) }
            gradientsInSharedMemory = shared != nil
            buckets = Distributed.Buckets(model: model, distributed: distributed, gradients: shared == nil)
        }
        defer {
            for d in dropouts { d.batchSlice = nil }
            exchangeWaitSeconds += (buckets?.waitSeconds ?? 0) + (shared?.waitSeconds ?? 0)
            if shared != nil { model.useGradientBlock(ownGradients) }
        }

        let last = min(until ?? settings.epochs, settings.epochs)
        while state.epoch < last && !state.stoppedEarly {
            let epoch = state.epoch
            let start = monotonicSeconds()
            // The epoch's order and augmentation seed come from the generator as it was when the
            // epoch began (kept for a run stopped inside the epoch, which goes on from its batch).
            let first = state.batch
            var epochRNG = first > 0 ? state.epochRNG : rng
            let epochStart = epochRNG
            epochRNG.permutation(train.count, into: &order)
            let augmentSeed = augment == nil ? 0 : epochRNG.next()
            if first == 0 { rng = epochRNG }
            prefetcher?.startEpoch(order, seed: augmentSeed, firstBatch: first)
            var lossSum = state.partial.loss, correct = state.partial.correct, seen = state.partial.seen, seenHere = 0
            /// Distributed: this rank's onBatch asked to stop after the previous batch; the ranks
            /// hear of it in the next exchange (or at the epoch's end) and stop together there.
            var cancelAsked = false
            func cancelled(afterBatches done: Int, rng: Random) -> CNNError {
                // Where the run stands, so that it can go on from the next batch (a checkpoint
                // saved now resumes exactly).
                state.batch = done
                state.epochRNG = epochStart
                state.rng = rng
                state.partial = (lossSum, correct, seen)
                return CNNError(.cancelled, "training cancelled at epoch \(epoch + 1), batch \(done); the model keeps its last completed update")
            }
            for b in first..<batches {
                let rngBefore = rng
                // The global batch's size, and this rank's part of it (all of it alone).
                let global = min(batchSize, train.count - b * batchSize)
                let share = Trainer.share(of: global, rank: rank, ranks: ranks)
                let lo = b * batchSize + share.first
                var n = share.count
                var input = x
                var labelPointer: UnsafePointer<Int32> = labels.withUnsafeBufferPointer { $0.baseAddress! }
                func place() -> String { "at epoch \(epoch + 1), batch \(b + 1)" }  // built only for an error
                var failure: Error? = nil
                do {
                    if let prefetcher {
                        let batch = try prefetcher.next()
                        (input, labelPointer, n) = (batch.x, UnsafePointer(batch.labels), batch.count)
                    } else {
                        try labels.withUnsafeMutableBufferPointer { l in
                            try train.fill(order[lo..<(lo + n)], mean: model.mean, std: model.std, into: x.pointer,
                                           labels: l.baseAddress!, scratch: &scratch)
                        }
                    }
                } catch {
                    // Alone: the error as it is. Distributed: after the other ranks hear of it (below).
                    guard distributed != nil else { throw error }
                    failure = error
                }
                swap(&statistics, &previousStatistics)
                statistics.save(batchNorms)
                for d in dropouts where distributed != nil { d.batchSlice = (share.first, global) }
                var result = LossResult(sum: 0, correct: 0)
                if failure == nil && n > 0 {
                    // The batch stays as it is until backward is done.
                    let logits = model.forward(input, batch: n, training: true, rng: &rng, inputKept: true)
                    result = computeLoss(settings.loss, logits: logits.pointer, labels: labelPointer, batch: n, classes: k,
                                         labelSmoothing: settings.labelSmoothing, gradient: dLogits.pointer,
                                         meanOver: distributed == nil ? nil : global)
                }
                if let distributed, let buckets {
                    // The step's one exchange: the batch's loss and hits over all ranks, whether one
                    // of them failed, the running statistics and the gradients (backward computes
                    // this rank's part meanwhile). Every rank then takes the same decisions below,
                    // which need nothing of backward but its gradients.
                    model.zeroGradients()
                    buckets.startStatus(loss: result.sum, correct: result.correct, failed: failure != nil,
                                        cancel: cancelAsked, weight: Float(n) / Float(global))
                    if failure == nil && n > 0 {
                        model.backward(dLogits, batch: n, afterLayer: Distributed.overlap ? buckets.layerDone : nil)
                    }
                    let status = buckets.finish()
                    if status.failed {
                        prefetcher?.release()
                        statistics.restore(batchNorms)
                        if let failure { throw failure }
                        distributed.othersFailed = true
                        throw CNNError(.internal, "training stopped \(place()): another process of the distributed run failed (its message says why)")
                    }
                    if status.cancelled {
                        // A rank asked to stop after the previous batch: this one is undone.
                        prefetcher?.release()
                        statistics.restore(batchNorms)
                        throw cancelled(afterBatches: b, rng: rngBefore)
                    }
                    shared?.sum()
                    result = LossResult(sum: status.loss, correct: status.correct)
                    n = global
                }
                let meanLoss = result.sum / Double(n)
                if state.lossReference == nil, meanLoss.isFinite { state.lossReference = meanLoss }
                let bound = Double(settings.divergenceFactor) * max(state.lossReference ?? 1, 1)
                if !meanLoss.isFinite || (settings.divergenceFactor > 0 && meanLoss > bound) {
                    // These weights' loss is bad: undo the update that made them (the loss before it
                    // was good), with the statistics from before that update's batch.
                    prefetcher?.release()
                    let undone = state.optimizer.restorePrevious()
                    (undone ? previousStatistics : statistics).restore(batchNorms)
                    let what = meanLoss.isFinite
                        ? "the loss reached \(meanLoss), more than \(settings.divergenceFactor) times the first batch's \(state.lossReference ?? 0) (divergence factor; 0 turns this check off)"
                        : "the loss became NaN or infinite"
                    throw CNNError(.diverged, "training diverged \(place()): \(what); the model keeps \(undone ? "the weights from before the last update" : "its weights"), whose loss was finite (try a lower learning rate)")
                }
                if distributed == nil {
                    model.zeroGradients()
                    model.backward(dLogits, batch: n)
                }
                prefetcher?.release()
                // Every gradient in one pass over their block (its gaps are 0).
                guard model.gradientBlock.allFinite else {
                    statistics.restore(batchNorms)
                    throw CNNError(.diverged, "training diverged \(place()): the gradient became NaN or infinite; the model keeps its weights, whose loss was finite (try a lower learning rate)")
                }
                let lr = settings.schedule.learningRate(base: settings.learningRate, step: state.optimizer.step,
                                                        stepsPerEpoch: batches, totalSteps: totalSteps)
                state.optimizer.update(learningRate: lr)
                guard state.optimizer.parametersFinite else {
                    state.optimizer.restorePrevious()
                    statistics.restore(batchNorms)
                    throw CNNError(.diverged, "training diverged \(place()): the update made weights NaN or infinite; it was undone, and the model keeps the weights from before it, whose loss was finite (try a lower learning rate)")
                }
                lossSum += result.sum
                correct += result.correct
                seen += n
                seenHere += n
                let elapsed = max(monotonicSeconds() - start, 1e-9)
                let progress = TrainingProgress(epoch: epoch, epochs: settings.epochs, batch: b, batches: batches,
                                                loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                                imagesPerSecond: Double(seenHere) / elapsed, learningRate: lr)
                let goOn = onBatch(progress)
                if distributed != nil {
                    cancelAsked = !goOn
                } else if !goOn {
                    throw cancelled(afterBatches: b + 1, rng: rng)
                }
            }
            if let distributed, distributed.any(cancelAsked) { throw cancelled(afterBatches: batches, rng: rng) }
            let seconds = monotonicSeconds() - start
            var result = EpochResult(epoch: epoch, loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)),
                                     seconds: seconds, imagesPerSecond: Double(seenHere) / max(seconds, 1e-9), validation: nil)
            state.batch = 0
            state.partial = (0, 0, 0)
            if let validation {
                let v = try validate(on: validation)
                result.validation = v
                let score = settings.monitor.score(v)
                if state.best.map({ score < $0.score }) ?? true {
                    state.best = (score, epoch + 1)
                    result.improved = true
                }
                if settings.earlyStopping > 0, let best = state.best, epoch + 1 - best.epoch >= settings.earlyStopping {
                    result.stopsEarly = true
                    state.stoppedEarly = true
                }
            }
            state.epoch += 1
            state.rng = rng
            results.append(result)
            if let distributed {
                // A callback that fails on one rank stops every rank at the same point.
                var failure: Error? = nil
                do { try onEpoch(result, state) } catch { failure = error }
                if distributed.any(failure != nil) {
                    if failure == nil { distributed.othersFailed = true }
                    throw failure ?? CNNError(.cancelled, "training stopped after epoch \(epoch + 1): another process of the distributed run stopped there (its message says why)")
                }
            } else {
                try onEpoch(result, state)
            }
        }
        return results
    }

    /// The model's loss and accuracy on the validation data; distributed, each rank evaluates its
    /// share and the ranks sum their figures (an error on one rank stops them all).
    private func validate(on data: Dataset) throws -> Evaluation {
        guard let distributed else { return try evaluate(model: model, on: data, loss: settings.loss) }
        let part = Trainer.share(of: data.count, rank: distributed.rank, ranks: distributed.size)
        var failure: Error? = nil
        var mine = Evaluation(count: 0, loss: 0, accuracy: 0, confusion: [])
        do {
            mine = try evaluate(model: model, on: data, loss: settings.loss, samples: part.first..<(part.first + part.count))
        } catch { failure = error }
        let k = model.numClasses
        // Failed ranks, the loss sum, then the confusion matrix: whole numbers and sums, the same
        // on every rank.
        var sums = [Double](repeating: 0, count: 2 + k * k)
        sums[0] = failure == nil ? 0 : 1
        if failure == nil {
            sums[1] = mine.loss * Double(mine.count)
            for i in 0..<k { for j in 0..<k { sums[2 + i * k + j] = Double(mine.confusion[i][j]) } }
        }
        distributed.reduce(&sums, distributed.mpi.sum)
        if sums[0] > 0 {
            if let failure { throw failure }
            distributed.othersFailed = true
            throw CNNError(.internal, "validation stopped: another process of the distributed run failed (its message says why)")
        }
        let confusion = (0..<k).map { i in (0..<k).map { j in Int(sums[2 + i * k + j]) } }
        let correct = (0..<k).reduce(0) { $0 + confusion[$1][$1] }
        let n = max(data.count, 1)
        return Evaluation(count: data.count, loss: sums[1] / Double(n), accuracy: Double(correct) / Double(n), confusion: confusion)
    }

    /// Distributed runs start only when every rank has the same network, weights, settings, data
    /// size and place in the run; otherwise every rank says what differs.
    private func checkAgreement(_ distributed: Distributed, train: Dataset) throws {
        var weights = Fingerprint()
        for (name, p) in model.namedParameters {
            weights.add(name)
            weights.add(UnsafeRawBufferPointer(start: p.value.pointer, count: p.value.count * 4))
        }
        var settingsPrint = Fingerprint()
        for (key, value) in settings.record { settingsPrint.add(key); settingsPrint.add(value) }
        let items: [(name: String, value: UInt64)] = [
            ("the architecture", Fingerprint(model.architecture.text).value),
            ("the weights", weights.value),
            ("the training settings (seed, batch size, optimizer, ...)", settingsPrint.value),
            ("the training data's size and classes", Fingerprint("\(train.count) \(train.numClasses) \(train.shape)").value),
            ("the place in the run (epoch, step)", Fingerprint("\(state.epoch) \(state.batch) \(state.optimizer.step)").value),
        ]
        let differ = distributed.disagreements(items)
        guard differ.isEmpty else {
            throw CNNError(.invalidArgument, "the \(distributed.size) processes of the distributed run differ in \(differ.joined(separator: ", ")): every rank must start from the same model, settings and data")
        }
    }
}

/// FNV-1a, 64 bits: equal inputs give equal values on every rank.
struct Fingerprint {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
    init() {}
    init(_ text: String) { add(text) }
    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01B3 }
    }
    mutating func add(_ text: String) {
        var t = text
        t.withUTF8 { add(UnsafeRawBufferPointer($0)) }
        value = (value ^ 0xFF) &* 0x100_0000_01B3  // a separator: ("ab", "c") differs from ("a", "bc")
    }
}

/// Batch norm's running statistics of every layer, saved and restored by the divergence guard.
struct BatchNormStatistics {
    private var saved: [(mean: FloatBuffer, variance: FloatBuffer, tracked: Int64)]

    init(_ layers: [BatchNorm]) {
        saved = layers.map { (FloatBuffer(count: $0.runningMean.count), FloatBuffer(count: $0.runningVar.count), 0) }
    }

    mutating func save(_ layers: [BatchNorm]) {
        for (i, bn) in layers.enumerated() {
            saved[i].mean.copy(from: bn.runningMean.value)
            saved[i].variance.copy(from: bn.runningVar.value)
            saved[i].tracked = bn.batchesTracked
        }
    }

    func restore(_ layers: [BatchNorm]) {
        for (i, bn) in layers.enumerated() {
            bn.runningMean.value.copy(from: saved[i].mean)
            bn.runningVar.value.copy(from: saved[i].variance)
            bn.batchesTracked = saved[i].tracked
        }
    }
}
