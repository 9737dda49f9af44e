import CNN
import CNNABI
#if canImport(Glibc)
import Glibc
#endif

/// One training run as the C API sees it: the model's handle, the datasets, the checked settings
/// and what the params add (callback, save-best path). cnn_model_train runs it to the end at once;
/// a cnn_trainer keeps it with its Trainer and runs it in steps.
final class TrainingRun {
    let handle: ModelHandle
    let data: DatasetHandle
    let validation: DatasetHandle?
    let settings: TrainingSettings
    let progress: cnn_progress_fn?
    let userData: UnsafeMutableRawPointer?
    let saveBest: String?
    /// Whether the caller's cnn_progress has the 0.4 fields (best, stops_early).
    let progressHasBest: Bool
    /// Data-parallel training: this process's place in it.
    let distributed: Distributed?

    init(_ model: OpaquePointer?, _ data: OpaquePointer?, _ params: UnsafePointer<cnn_train_params>?) throws {
        handle = try Registry.model(model)
        self.data = try Registry.dataset(data, "data")
        let params = try required(params, "params")
        var defaults = cnn_train_params()
        exportTrainParamsDefault(&defaults)
        // Version 0.1 ended with loader_threads.
        let oldest = MemoryLayout<cnn_train_params>.offset(of: \.divergence_factor)!
        let size = Int(UnsafeRawPointer(params).load(as: UInt32.self))
        let p = try versionedStruct(params, defaults: defaults, oldestSize: oldest, name: "params", initializer: "cnn_train_params_default")
        settings = try trainingSettings(p)
        validation = try p.validation.map { try Registry.dataset($0, "params.validation") }
        progress = p.progress
        userData = p.user_data
        saveBest = try p.save_best.map { try string($0, "params.save_best") }
        progressHasBest = size > MemoryLayout<cnn_train_params>.offset(of: \.allow_extra_outputs)!
        guard p.distributed == 0 || p.distributed == 1 else { throw invalid("params.distributed must be 0 or 1, not \(p.distributed)") }
        if p.distributed == 1 {
            distributed = try p.mpi_comm.map { try Distributed.communicator($0) } ?? Distributed.world()
        } else {
            guard p.mpi_comm == nil else { throw invalid("params.mpi_comm is set but params.distributed is 0") }
            distributed = nil
        }
        if (saveBest != nil || settings.earlyStopping > 0) && validation == nil {
            throw invalid("params.\(saveBest != nil ? "save_best" : "early_stopping") watches \(settings.monitor.rawValue): it needs params.validation")
        }
        if p.threads > 0 { ThreadPool.setThreads(Int(p.threads)) }
    }

    /// Trains with `trainer` (whose model is the handle's, held exclusively by the caller) until
    /// `until` epochs in all (nil: the run's end).
    func train(_ trainer: Trainer, until: Int?) throws {
        trainer.distributed = distributed
        try data.using { trainData in
            try (validation ?? data).using { _ in
                var progress = cnn_progress()
                try trainer.fit(trainData, validation: validation?.dataset, until: until, onBatch: { b in
                    guard let callback = self.progress else { return true }
                    progress = cnn_progress()
                    progress.epoch = Int32(b.epoch)
                    progress.epochs = Int32(b.epochs)
                    progress.batch = Int32(b.batch)
                    progress.batches = Int32(b.batches)
                    progress.loss = Float(b.loss)
                    progress.accuracy = Float(b.accuracy)
                    progress.images_per_second = Float(b.imagesPerSecond)
                    progress.learning_rate = b.learningRate
                    return callback(&progress, self.userData) == 0
                }, onEpoch: { r, _ in
                    if r.improved, let path = self.saveBest { try trainer.model.save(to: path) }
                    guard let callback = self.progress else { return }
                    progress.epoch = Int32(r.epoch)
                    progress.epochs = Int32(trainer.settings.epochs)
                    progress.epoch_end = 1
                    progress.loss = Float(r.loss)
                    progress.accuracy = Float(r.accuracy)
                    progress.images_per_second = Float(r.imagesPerSecond)
                    if let v = r.validation {
                        progress.has_validation = 1
                        progress.val_loss = Float(v.loss)
                        progress.val_accuracy = Float(v.accuracy)
                    }
                    // The 0.4 fields exist only in a caller's struct as large as this one.
                    if self.progressHasBest {
                        progress.best = r.improved ? 1 : 0
                        progress.stops_early = r.stopsEarly ? 1 : 0
                    }
                    let answer = self.handle.epochEnd { callback(&progress, self.userData) }
                    if answer != 0 {
                        throw CNNError(.cancelled, "training cancelled after epoch \(r.epoch + 1); the model keeps its last completed update")
                    }
                })
            }
        }
    }
}

/// A cnn_trainer: a run and its Trainer, kept between calls.
final class TrainerHandle {
    let run: TrainingRun
    let trainer: Trainer
    private let lock = Lock()
    private var busy = false

    init(run: TrainingRun, trainer: Trainer) {
        self.run = run
        self.trainer = trainer
    }

    /// Runs `body` with the trainer to itself: a second call while one runs (from another
    /// thread, or from the progress callback) gets CNN_BUSY instead of waiting.
    func with<T>(_ body: () throws -> T) throws -> T {
        try lock.with {
            guard !busy else { throw CNNError(.busy, "the trainer is running (cnn_trainer_run) in another call") }
            busy = true
        }
        defer { lock.with { busy = false } }
        return try body()
    }

    deinit { run.handle.detachTrainer() }
}

extension Registry {
    static func trainer(_ handle: OpaquePointer?) throws -> TrainerHandle {
        guard let t = object(handle, "trainer") as? TrainerHandle else {
            throw invalid("trainer is NULL or not a live cnn_trainer (freed, or not created by cnn_trainer_create)")
        }
        return t
    }
}

// export: cnn_trainer_create
public func exportTrainerCreate(_ model: OpaquePointer?, _ data: OpaquePointer?, _ params: UnsafePointer<cnn_train_params>?,
                                _ trainer: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_trainer_create") {
        let out = try required(trainer, "trainer")
        let run = try TrainingRun(model, data, params)
        try run.handle.attachTrainer()
        do {
            let t = try run.handle.exclusive(trainer: true) { m in try Trainer(model: m, settings: run.settings) }
            out.pointee = Registry.add(TrainerHandle(run: run, trainer: t))
        } catch {
            run.handle.detachTrainer()
            throw error
        }
    }
}

// export: cnn_trainer_run
public func exportTrainerRun(_ trainer: OpaquePointer?, _ epochs: Int32) -> cnn_status {
    guarded("cnn_trainer_run") {
        let t = try Registry.trainer(trainer)
        guard epochs >= 1 else { throw invalid("epochs must be at least 1, not \(epochs)") }
        try t.with {
            try t.run.handle.exclusive(trainer: true) { _ in
                let until = t.trainer.state.epoch + Int(epochs)
                try t.run.train(t.trainer, until: until)
            }
        }
    }
}

// export: cnn_trainer_progress
public func exportTrainerProgress(_ trainer: OpaquePointer?, _ epoch: UnsafeMutablePointer<Int32>?,
                                  _ batch: UnsafeMutablePointer<Int32>?, _ finished: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_trainer_progress") {
        let t = try Registry.trainer(trainer)
        try t.with {
            let state = t.trainer.state
            epoch?.pointee = Int32(state.epoch)
            batch?.pointee = Int32(state.batch)
            finished?.pointee = state.epoch >= t.trainer.settings.epochs || state.stoppedEarly ? 1 : 0
        }
    }
}

// export: cnn_trainer_save_checkpoint
public func exportTrainerSaveCheckpoint(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> cnn_status {
    guarded("cnn_trainer_save_checkpoint") {
        let t = try Registry.trainer(trainer)
        let path = try string(path, "path")
        try t.with {
            try t.run.handle.reading { m in try m.save(to: path, training: t.trainer.state) }
        }
    }
}

// export: cnn_trainer_resume
public func exportTrainerResume(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> cnn_status {
    guarded("cnn_trainer_resume") {
        let t = try Registry.trainer(trainer)
        let path = try string(path, "path")
        let saved = try Model.load(from: path)
        try t.with {
            try t.run.handle.exclusive(trainer: true) { m in
                guard saved.architecture == m.architecture else {
                    throw invalid("\(path): the checkpoint's architecture \(saved.architecture.text) is not the model's \(m.architecture.text)")
                }
                // The state first: a checkpoint with other settings changes nothing.
                try t.trainer.resume(from: path)
                try m.assign(from: saved)
            }
        }
    }
}

// export: cnn_trainer_free
public func exportTrainerFree(_ trainer: OpaquePointer?) {
    Registry.remove(trainer)
}
