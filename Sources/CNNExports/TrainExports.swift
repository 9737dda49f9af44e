import CNN
import CNNABI

// export: cnn_train_params_default
public func exportTrainParamsDefault(_ params: UnsafeMutablePointer<cnn_train_params>?) {
    guard let params else { return }
    var p = cnn_train_params()
    p.struct_size = UInt32(MemoryLayout<cnn_train_params>.size)
    p.epochs = 1
    p.batch_size = 64
    p.optimizer = Int32(CNN_OPTIMIZER_SGD)
    p.learning_rate = 0.01
    p.momentum = 0
    p.nesterov = 0
    p.weight_decay = 0
    p.beta1 = 0.9
    p.beta2 = 0.999
    p.alpha = 0.99
    p.eps = 1e-8
    p.schedule = Int32(CNN_SCHEDULE_CONSTANT)
    p.step_epochs = 10
    p.gamma = 0.1
    p.warmup_epochs = 0
    p.loss = Int32(CNN_LOSS_CROSS_ENTROPY)
    p.label_smoothing = 0
    p.seed = 1
    p.threads = 0
    p.validation = nil
    p.progress = nil
    p.user_data = nil
    p.augment_flip = 0
    p.augment_translate = 0
    p.augment_brightness = 0
    p.augment_contrast = 0
    p.loader_threads = 1
    p.divergence_factor = TrainingSettings().divergenceFactor
    params.pointee = p
}

/// Engine settings from the C struct, every enum and range checked.
func trainingSettings(_ p: cnn_train_params) throws -> TrainingSettings {
    var s = TrainingSettings()
    s.epochs = Int(p.epochs)
    s.batchSize = Int(p.batch_size)
    let optimizers: [OptimizerKind] = [.sgd, .rmsprop, .adam, .adamw]
    guard p.optimizer >= 0, Int(p.optimizer) < optimizers.count else {
        throw invalid("params.optimizer is \(p.optimizer); expected CNN_OPTIMIZER_SGD, _RMSPROP, _ADAM or _ADAMW")
    }
    s.optimizer.kind = optimizers[Int(p.optimizer)]
    s.learningRate = p.learning_rate
    s.optimizer.momentum = p.momentum
    guard p.nesterov == 0 || p.nesterov == 1 else { throw invalid("params.nesterov must be 0 or 1, not \(p.nesterov)") }
    s.optimizer.nesterov = p.nesterov == 1
    s.optimizer.weightDecay = p.weight_decay
    s.optimizer.beta1 = p.beta1
    s.optimizer.beta2 = p.beta2
    s.optimizer.alpha = p.alpha
    s.optimizer.eps = p.eps
    let schedules: [ScheduleKind] = [.constant, .step, .cosine]
    guard p.schedule >= 0, Int(p.schedule) < schedules.count else {
        throw invalid("params.schedule is \(p.schedule); expected CNN_SCHEDULE_CONSTANT, _STEP or _COSINE")
    }
    s.schedule.kind = schedules[Int(p.schedule)]
    s.schedule.stepEpochs = Int(p.step_epochs)
    s.schedule.gamma = p.gamma
    s.schedule.warmupEpochs = p.warmup_epochs
    guard p.loss == Int32(CNN_LOSS_CROSS_ENTROPY) || p.loss == Int32(CNN_LOSS_MSE) else {
        throw invalid("params.loss is \(p.loss); expected CNN_LOSS_CROSS_ENTROPY or CNN_LOSS_MSE")
    }
    s.loss = p.loss == Int32(CNN_LOSS_MSE) ? .mse : .crossEntropy
    s.labelSmoothing = p.label_smoothing
    s.seed = p.seed
    guard p.augment_flip == 0 || p.augment_flip == 1 else { throw invalid("params.augment_flip must be 0 or 1, not \(p.augment_flip)") }
    s.augmentation.flip = p.augment_flip == 1
    s.augmentation.translate = Int(p.augment_translate)
    s.augmentation.brightness = p.augment_brightness
    s.augmentation.contrast = p.augment_contrast
    s.loaderThreads = Int(p.loader_threads)
    s.divergenceFactor = p.divergence_factor
    guard p.threads >= 0, p.threads <= 256 else { throw invalid("params.threads must be from 0 to 256, not \(p.threads)") }
    do { try s.validate() } catch let e as CNNError { throw invalid("params: \(e.message)") }
    return s
}

// export: cnn_model_train
public func exportModelTrain(_ model: OpaquePointer?, _ data: OpaquePointer?,
                             _ params: UnsafePointer<cnn_train_params>?) -> cnn_status {
    guarded("cnn_model_train") {
        let handle = try Registry.model(model)
        let train = try Registry.dataset(data, "data")
        let params = try required(params, "params")
        var defaults = cnn_train_params()
        exportTrainParamsDefault(&defaults)
        // Version 0.1 ended with loader_threads.
        let p = try versionedStruct(params, defaults: defaults, oldestSize: MemoryLayout<cnn_train_params>.offset(of: \.divergence_factor)!,
                                    name: "params", initializer: "cnn_train_params_default")
        let settings = try trainingSettings(p)
        let validation = try p.validation.map { try Registry.dataset($0, "params.validation") }
        if p.threads > 0 { ThreadPool.setThreads(Int(p.threads)) }
        try handle.exclusive { m in
            try train.using { trainData in
                try (validation ?? train).using { _ in
                    let trainer = try Trainer(model: m, settings: settings)
                    var progress = cnn_progress()
                    try trainer.fit(trainData, validation: validation?.dataset, onBatch: { b in
                        guard let callback = p.progress else { return true }
                        progress = cnn_progress(epoch: Int32(b.epoch), epochs: Int32(b.epochs), batch: Int32(b.batch),
                                                batches: Int32(b.batches), loss: Float(b.loss), accuracy: Float(b.accuracy),
                                                images_per_second: Float(b.imagesPerSecond), learning_rate: b.learningRate,
                                                epoch_end: 0, has_validation: 0, val_loss: 0, val_accuracy: 0)
                        return callback(&progress, p.user_data) == 0
                    }, onEpoch: { r, _ in
                        guard let callback = p.progress else { return }
                        progress.epoch_end = 1
                        progress.loss = Float(r.loss)
                        progress.accuracy = Float(r.accuracy)
                        progress.images_per_second = Float(r.imagesPerSecond)
                        if let v = r.validation {
                            progress.has_validation = 1
                            progress.val_loss = Float(v.loss)
                            progress.val_accuracy = Float(v.accuracy)
                        }
                        if callback(&progress, p.user_data) != 0 {
                            throw CNNError(.cancelled, "training cancelled after epoch \(r.epoch + 1); the model keeps its last completed update")
                        }
                    })
                }
            }
        }
    }
}
