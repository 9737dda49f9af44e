import CNN
import CNNABI

// export: cnn_train_params_default
public func exportTrainParamsDefault(_ params: UnsafeMutablePointer<cnn_train_params>?) {
    guard let params else { return }
    params.pointee = cParams(TrainingSettings())
}

/// The C struct holding `s`: cnn_train_params_default is the engine's TrainingSettings() (the
/// defaults the tool and Python use too), so they are written in one place.
func cParams(_ s: TrainingSettings) -> cnn_train_params {
    var p = cnn_train_params()
    p.struct_size = UInt32(MemoryLayout<cnn_train_params>.size)
    p.epochs = Int32(s.epochs)
    p.batch_size = Int32(s.batchSize)
    p.optimizer = cOptimizer(s.optimizer.kind)
    p.learning_rate = s.learningRate
    p.momentum = s.optimizer.momentum
    p.nesterov = s.optimizer.nesterov ? 1 : 0
    p.weight_decay = s.optimizer.weightDecay
    p.beta1 = s.optimizer.beta1
    p.beta2 = s.optimizer.beta2
    p.alpha = s.optimizer.alpha
    p.eps = s.optimizer.eps
    p.schedule = cSchedule(s.schedule.kind)
    p.step_epochs = Int32(s.schedule.stepEpochs)
    p.gamma = s.schedule.gamma
    p.warmup_epochs = s.schedule.warmupEpochs
    p.loss = cLoss(s.loss)
    p.label_smoothing = s.labelSmoothing
    p.seed = s.seed
    p.threads = 0
    p.validation = nil
    p.progress = nil
    p.user_data = nil
    p.augment_flip = s.augmentation.flip ? 1 : 0
    p.augment_translate = Int32(s.augmentation.translate)
    p.augment_brightness = s.augmentation.brightness
    p.augment_contrast = s.augmentation.contrast
    p.loader_threads = Int32(s.loaderThreads)
    p.divergence_factor = s.divergenceFactor
    p.allow_extra_outputs = s.allowExtraOutputs ? 1 : 0
    p.early_stopping = Int32(s.earlyStopping)
    p.monitor = cMonitor(s.monitor)
    p.save_best = nil
    p.decay_bias_and_norm = s.optimizer.decayBiasAndNorm ? 1 : 0
    p.augment_erase = s.augmentation.erase
    p.freeze_until = Int32(s.freezeUntil)
    p.distributed = 0
    p.mpi_comm = nil
    p.recompute_blocks = s.recomputeBlocks ? 1 : 0
    return p
}

// The C enums and the engine's, matched by name (switches: no positional tables).
func cOptimizer(_ kind: OptimizerKind) -> Int32 {
    switch kind {
    case .sgd: Int32(CNN_OPTIMIZER_SGD)
    case .rmsprop: Int32(CNN_OPTIMIZER_RMSPROP)
    case .adam: Int32(CNN_OPTIMIZER_ADAM)
    case .adamw: Int32(CNN_OPTIMIZER_ADAMW)
    }
}

func cSchedule(_ kind: ScheduleKind) -> Int32 {
    switch kind {
    case .constant: Int32(CNN_SCHEDULE_CONSTANT)
    case .step: Int32(CNN_SCHEDULE_STEP)
    case .cosine: Int32(CNN_SCHEDULE_COSINE)
    }
}

func cMonitor(_ kind: Monitor) -> Int32 {
    switch kind {
    case .valLoss: Int32(CNN_MONITOR_VAL_LOSS)
    case .valAccuracy: Int32(CNN_MONITOR_VAL_ACCURACY)
    }
}

func cLoss(_ kind: LossKind) -> Int32 {
    switch kind {
    case .crossEntropy: Int32(CNN_LOSS_CROSS_ENTROPY)
    case .mse: Int32(CNN_LOSS_MSE)
    }
}

/// Engine settings from the C struct, every enum and range checked.
func trainingSettings(_ p: cnn_train_params) throws -> TrainingSettings {
    var s = TrainingSettings()
    s.epochs = Int(p.epochs)
    s.batchSize = Int(p.batch_size)
    guard let optimizer = OptimizerKind.allCases.first(where: { cOptimizer($0) == p.optimizer }) else {
        throw invalid("params.optimizer is \(p.optimizer); expected CNN_OPTIMIZER_SGD, _RMSPROP, _ADAM or _ADAMW")
    }
    s.optimizer.kind = optimizer
    s.learningRate = p.learning_rate
    s.optimizer.momentum = p.momentum
    guard p.nesterov == 0 || p.nesterov == 1 else { throw invalid("params.nesterov must be 0 or 1, not \(p.nesterov)") }
    s.optimizer.nesterov = p.nesterov == 1
    s.optimizer.weightDecay = p.weight_decay
    s.optimizer.beta1 = p.beta1
    s.optimizer.beta2 = p.beta2
    s.optimizer.alpha = p.alpha
    s.optimizer.eps = p.eps
    guard let schedule = ScheduleKind.allCases.first(where: { cSchedule($0) == p.schedule }) else {
        throw invalid("params.schedule is \(p.schedule); expected CNN_SCHEDULE_CONSTANT, _STEP or _COSINE")
    }
    s.schedule.kind = schedule
    s.schedule.stepEpochs = Int(p.step_epochs)
    s.schedule.gamma = p.gamma
    s.schedule.warmupEpochs = p.warmup_epochs
    guard let loss = LossKind.allCases.first(where: { cLoss($0) == p.loss }) else {
        throw invalid("params.loss is \(p.loss); expected CNN_LOSS_CROSS_ENTROPY or CNN_LOSS_MSE")
    }
    s.loss = loss
    s.labelSmoothing = p.label_smoothing
    s.seed = p.seed
    guard p.augment_flip == 0 || p.augment_flip == 1 else { throw invalid("params.augment_flip must be 0 or 1, not \(p.augment_flip)") }
    s.augmentation.flip = p.augment_flip == 1
    s.augmentation.translate = Int(p.augment_translate)
    s.augmentation.brightness = p.augment_brightness
    s.augmentation.contrast = p.augment_contrast
    s.loaderThreads = Int(p.loader_threads)
    s.divergenceFactor = p.divergence_factor
    guard p.allow_extra_outputs == 0 || p.allow_extra_outputs == 1 else { throw invalid("params.allow_extra_outputs must be 0 or 1, not \(p.allow_extra_outputs)") }
    s.allowExtraOutputs = p.allow_extra_outputs == 1
    s.earlyStopping = Int(p.early_stopping)
    guard let monitor = Monitor.allCases.first(where: { cMonitor($0) == p.monitor }) else {
        throw invalid("params.monitor is \(p.monitor); expected CNN_MONITOR_VAL_LOSS or CNN_MONITOR_VAL_ACCURACY")
    }
    s.monitor = monitor
    guard p.decay_bias_and_norm == 0 || p.decay_bias_and_norm == 1 else {
        throw invalid("params.decay_bias_and_norm must be 0 or 1, not \(p.decay_bias_and_norm)")
    }
    s.optimizer.decayBiasAndNorm = p.decay_bias_and_norm == 1
    s.augmentation.erase = p.augment_erase
    s.freezeUntil = Int(p.freeze_until)
    guard p.recompute_blocks == 0 || p.recompute_blocks == 1 else { throw invalid("params.recompute_blocks must be 0 or 1, not \(p.recompute_blocks)") }
    s.recomputeBlocks = p.recompute_blocks == 1
    guard p.threads >= 0, p.threads <= 256 else { throw invalid("params.threads must be from 0 to 256, not \(p.threads)") }
    do { try s.validate() } catch let e as CNNError { throw invalid("params: \(e.message)") }
    return s
}

// export: cnn_model_train
public func exportModelTrain(_ model: OpaquePointer?, _ data: OpaquePointer?,
                             _ params: UnsafePointer<cnn_train_params>?) -> cnn_status {
    guarded("cnn_model_train") {
        let run = try TrainingRun(model, data, params)
        try run.handle.exclusive { m in
            try run.train(Trainer(model: m, settings: run.settings), until: nil)
        }
    }
}
