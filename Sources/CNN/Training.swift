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
    public init() {}

    public static func == (a: TrainingSettings, b: TrainingSettings) -> Bool {
        a.epochs == b.epochs && a.batchSize == b.batchSize && a.learningRate == b.learningRate
            && a.optimizer == b.optimizer && a.schedule == b.schedule && a.loss == b.loss
            && a.labelSmoothing == b.labelSmoothing && a.seed == b.seed
            && a.augmentation == b.augmentation && a.loaderThreads == b.loaderThreads
            && a.divergenceFactor == b.divergenceFactor
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

    init(optimizer: Optimizer, epoch: Int, rng: Random, settings: TrainingSettings) {
        self.optimizer = optimizer
        self.epoch = epoch
        self.rng = rng
        self.settings = settings
    }

    var metadata: [(String, String)] {
        [("checkpoint_epoch", String(epoch)),
         ("checkpoint_step", String(optimizer.step)),
         ("checkpoint_rng", rng.stateWords.map { String($0, radix: 16) }.joined(separator: ",")),
         ("checkpoint_optimizer", optimizer.settings.kind.rawValue),
         ("checkpoint_batch_size", String(settings.batchSize))]
            + (lossReference.map { [("checkpoint_loss_reference", "\($0)")] } ?? [])
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

    public init(model: Model, settings: TrainingSettings) throws {
        try settings.validate()
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
        guard meta["checkpoint_optimizer"] == settings.optimizer.kind.rawValue else {
            throw CNNError(.invalidArgument, "\(path): the checkpoint was trained with \(meta["checkpoint_optimizer"] ?? "?"), not \(settings.optimizer.kind.rawValue)")
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
    @discardableResult
    public func fit(_ train: Dataset, validation: Dataset? = nil,
                    onBatch: (TrainingProgress) -> Bool = { _ in true },
                    onEpoch: (EpochResult, TrainingState) throws -> Void = { _, _ in }) throws -> [EpochResult] {
        let batchSize = min(settings.batchSize, train.count)
        guard batchSize <= model.maxBatch else {
            throw CNNError(.outOfMemory, "a batch of \(batchSize) needs more working memory than the limit of \(Memory.describe(Memory.limit)) for this network; use a batch size of at most \(model.maxBatch) (or raise the limit with cnn_set_memory_limit or CNN_MEMORY_LIMIT)")
        }
        // Everything a run takes, from the shapes, before any of it is allocated: parameters and
        // gradients, optimizer state and the guard's copy of it and of the weights, the batch's
        // working memory, its input and the loss gradient.
        let stateFloats = Optimizer.stateFloats(settings.optimizer, model: model)
        let (batchFloats, o1) = batchSize.multipliedReportingOverflow(by: model.workspacePerSample + model.inputShape.count + model.numClasses)
        let runFloats = o1 ? Int.max / 4 : model.parameterFloats + 2 * stateFloats + model.parameterCount + batchFloats
        try Memory.check(runFloats &* 4, for: "training at a batch of \(batchSize)")
        try state.optimizer.enableGuard()
        guard train.shape.c == model.inputShape.c, train.shape.h == model.inputShape.h, train.shape.w == model.inputShape.w else {
            throw CNNError(.shapeMismatch, "training data has images of \(train.shape), the model takes \(model.inputShape)")
        }
        if let v = validation, v.shape.c != train.shape.c || v.shape.h != train.shape.h || v.shape.w != train.shape.w {
            throw CNNError(.shapeMismatch, "validation data has images of \(v.shape), the model takes \(model.inputShape)")
        }
        guard train.numClasses <= model.numClasses, (validation?.numClasses ?? 0) <= model.numClasses else {
            throw CNNError(.shapeMismatch, "the data has \(max(train.numClasses, validation?.numClasses ?? 0)) classes, the model outputs \(model.numClasses)")
        }
        if state.epoch == 0 {
            if let n = settings.normalization {
                guard n.mean.count == model.inputShape.c, n.std.count == model.inputShape.c else {
                    throw CNNError(.invalidArgument, "normalization needs \(model.inputShape.c) means and standard deviations")
                }
                (model.mean, model.std) = (n.mean, n.std)
            } else {
                (model.mean, model.std) = train.channelStatistics()
            }
            if train.numClasses == model.numClasses { model.classNames = train.classNames }
            if let fit = train.imageFit { model.imageFit = fit }
        }
        let k = model.numClasses, sample = model.inputShape.count
        let batches = (train.count + batchSize - 1) / batchSize
        let totalSteps = batches * settings.epochs
        let x = FloatBuffer(count: batchSize * sample)
        let dLogits = FloatBuffer(count: batchSize * k)
        var labels = [Int32](repeating: 0, count: batchSize)
        var order: [Int32] = []
        var scratch = SampleScratch(shape: train.shape)
        let batchNorms = model.layers.compactMap { $0 as? BatchNorm }
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
                         augmentation: augment, workers: settings.loaderThreads)
            : nil
        defer { prefetcher?.stop() }

        while state.epoch < settings.epochs {
            let epoch = state.epoch
            let start = monotonicSeconds()
            rng.permutation(train.count, into: &order)
            prefetcher?.startEpoch(order, seed: augment == nil ? 0 : rng.next())
            var lossSum = 0.0, correct = 0, seen = 0
            for b in 0..<batches {
                let lo = b * batchSize
                var n = min(batchSize, train.count - lo)
                var input = x
                var labelPointer: UnsafePointer<Int32>
                if let prefetcher {
                    let batch = try prefetcher.next()
                    (input, labelPointer, n) = (batch.x, UnsafePointer(batch.labels), batch.count)
                } else {
                    try labels.withUnsafeMutableBufferPointer { l in
                        try train.fill(order[lo..<(lo + n)], mean: model.mean, std: model.std, into: x.pointer,
                                       labels: l.baseAddress!, scratch: &scratch)
                    }
                    labelPointer = labels.withUnsafeBufferPointer { $0.baseAddress! }
                }
                swap(&statistics, &previousStatistics)
                statistics.save(batchNorms)
                let logits = model.forward(input, batch: n, training: true, rng: &rng)
                let result = computeLoss(settings.loss, logits: logits.pointer, labels: labelPointer, batch: n, classes: k,
                                         labelSmoothing: settings.labelSmoothing, gradient: dLogits.pointer)
                func place() -> String { "at epoch \(epoch + 1), batch \(b + 1)" }  // built only for an error
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
                model.zeroGradients()
                model.backward(dLogits, batch: n)
                prefetcher?.release()
                guard model.gradients.allSatisfy({ $0.allFinite }) else {
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
                let elapsed = max(monotonicSeconds() - start, 1e-9)
                let progress = TrainingProgress(epoch: epoch, epochs: settings.epochs, batch: b, batches: batches,
                                                loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                                imagesPerSecond: Double(seen) / elapsed, learningRate: lr)
                if !onBatch(progress) {
                    throw CNNError(.cancelled, "training cancelled at epoch \(epoch + 1), batch \(b + 1); the model keeps its last completed update")
                }
            }
            let seconds = monotonicSeconds() - start
            var result = EpochResult(epoch: epoch, loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                     seconds: seconds, imagesPerSecond: Double(seen) / max(seconds, 1e-9), validation: nil)
            if let validation {
                result.validation = try evaluate(model: model, on: validation, loss: settings.loss)
            }
            state.epoch += 1
            state.rng = rng
            results.append(result)
            try onEpoch(result, state)
        }
        return results
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
