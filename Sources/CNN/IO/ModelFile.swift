/// Model files: safetensors with PyTorch's `nn.Sequential` state-dict names and layouts, and in
/// `__metadata__` the architecture text, class names, input normalization and a format version.
/// A checkpoint adds the optimizer state and where training stands (`TrainingState`).
extension Model {
    public static let fileFormat = "swiftcnn"
    public static let fileFormatVersion = "1"

    /// Saves the model (and, for a checkpoint, the training state) atomically.
    public func save(to path: String, training state: TrainingState? = nil) throws {
        guard !Model.isONNXPath(path) else {
            throw CNNError(.invalidArgument, "\(path): model files are safetensors; write ONNX with export (cnn export, cnn_model_export_onnx)")
        }
        var metadata: [(String, String)] = [
            ("format", Model.fileFormat),
            ("format_version", Model.fileFormatVersion),
            ("architecture", architecture.text),
            ("classes", JSON.array(classNames.map { .string($0) }).serialized),
            ("normalization_mean", Model.floatList(mean)),
            ("normalization_std", Model.floatList(std)),
            ("image_fit", imageFit.rawValue),
        ]
        // Tensors in state-dict order; batch norm's counter is an I64 scalar, kept in `counters`.
        var entries: [(name: String, dtype: Safetensors.DType, shape: [Int], buffer: FloatBuffer?, counter: Int)] = []
        var counters: [UInt8] = []
        for (prefix, layer) in namedLayers {
            for p in layer.parameters { entries.append((prefix + p.name, .f32, p.shape, p.value, 0)) }
            if let bn = layer as? BatchNorm {
                entries.append((prefix + "num_batches_tracked", .i64, [], nil, counters.count))
                for b in 0..<8 { counters.append(UInt8(truncatingIfNeeded: bn.batchesTracked >> (8 * Int64(b)))) }
            }
        }
        if let state {
            metadata += state.metadata
            for (name, buffer) in state.optimizer.stateTensors {
                entries.append((name, .f32, [buffer.count], buffer, 0))
            }
        }
        try counters.withUnsafeBytes { counterBytes in
            let tensors = entries.map { e in
                Safetensors.TensorOut(name: e.name, dtype: e.dtype, shape: e.shape, bytes: e.buffer.map {
                    UnsafeRawBufferPointer(start: $0.pointer, count: $0.count * 4)
                } ?? UnsafeRawBufferPointer(rebasing: counterBytes[e.counter..<(e.counter + 8)]))
            }
            try Safetensors.write(path, metadata: metadata, tensors: tensors)
        }
    }

    /// Loads a model file, treating it as untrusted: the architecture is parsed and every tensor
    /// checked against it (name, dtype, shape, byte range) before anything is copied. A tensor
    /// holding NaN or infinity is refused by name unless `allowNonFinite` (to inspect a broken file).
    /// A path ending in `.onnx` is imported (`importONNX`).
    public static func load(from path: String, allowNonFinite: Bool = false) throws -> Model {
        if isONNXPath(path) { return try importONNX(from: path, allowNonFinite: allowNonFinite) }
        return try load(file: Safetensors.read(path), path: path, allowNonFinite: allowNonFinite)
    }

    static func load(file: Safetensors.File, path: String, allowNonFinite: Bool = false) throws -> Model {
        func bad(_ what: String) -> CNNError { CNNError(.badFormat, "\(path): \(what)") }
        let meta = file.metadata
        guard meta["format"] == fileFormat else {
            throw bad("not a SwiftCNN model (metadata 'format' is \(meta["format"].map { "'\($0)'" } ?? "missing"))")
        }
        guard meta["format_version"] == fileFormatVersion else {
            throw bad("model format version \(meta["format_version"] ?? "missing") is not supported (this library reads \(fileFormatVersion))")
        }
        guard let text = meta["architecture"] else { throw bad("no architecture in the metadata") }
        let model: Model
        do { model = try Model(architecture: Architecture(parsing: text), fusing: true, allocate: false) } catch let e as CNNError {
            throw bad("invalid architecture in the metadata: \(e.message)")
        }
        // Every tensor the architecture has must be in the file, with its shape, before any of
        // them is allocated (the file's byte ranges were checked when it was read).
        var expected = Set<String>()
        for (prefix, layer) in model.namedLayers {
            for p in layer.parameters {
                let name = prefix + p.name
                expected.insert(name)
                guard let t = file.tensors[name] else { throw bad("tensor '\(name)' is missing") }
                guard t.dtype == .f32, t.shape == p.shape else {
                    throw bad("tensor '\(name)' is \(t.dtype.rawValue) \(t.shape), the architecture needs F32 \(p.shape)")
                }
            }
            if layer is BatchNorm { expected.insert(prefix + "num_batches_tracked") }
        }
        for name in file.tensors.keys where !expected.contains(name) && !name.hasPrefix("optimizer.") {
            throw bad("unexpected tensor '\(name)' for architecture \(model.architecture.text)")
        }
        try model.allocateParameters()
        guard let classesText = meta["classes"], case .array(let names)? = try? JSON.parse(ArraySlice(classesText.utf8)),
              names.count == model.numClasses, names.allSatisfy({ $0.stringValue != nil }) else {
            throw bad("the metadata 'classes' must be a JSON list of \(model.numClasses) names")
        }
        model.classNames = names.compactMap(\.stringValue)
        let c = model.inputShape.c
        guard let mean = meta["normalization_mean"].flatMap(floatList), mean.count == c,
              let std = meta["normalization_std"].flatMap(floatList), std.count == c,
              std.allSatisfy({ $0 > 0 }) else {
            throw bad("the metadata needs normalization_mean and normalization_std with \(c) finite values (std > 0)")
        }
        model.mean = mean
        model.std = std
        if let fit = meta["image_fit"] {
            guard let f = ImageFit(rawValue: fit) else { throw bad("the metadata 'image_fit' is '\(fit)'; expected crop, stretch or pad") }
            model.imageFit = f
        }
        for (prefix, layer) in model.namedLayers {
            for p in layer.parameters {
                let name = prefix + p.name
                file.copyFloats(name, into: p.value)
                guard allowNonFinite || p.value.allFinite else {
                    throw bad("tensor '\(name)' holds NaN or infinite values (a diverged model? loading it anyway needs CNN_LOAD_ALLOW_NON_FINITE)")
                }
                p.version += 1
            }
            if let bn = layer as? BatchNorm {
                let name = prefix + "num_batches_tracked"
                if file.tensors[name] != nil {
                    guard let v = file.int64(name), v >= 0 else { throw bad("tensor '\(name)' must be an I64 scalar >= 0") }
                    bn.batchesTracked = v
                }
                if bn.runningVar.value.array.contains(where: { $0 < 0 }) { throw bad("tensor '\(prefix)running_var' has negative values") }
            }
        }
        return model
    }

    static func floatList(_ values: [Float]) -> String {
        "[" + values.map { "\($0)" }.joined(separator: ",") + "]"
    }

    static func floatList(_ text: String) -> [Float]? {
        guard case .array(let items)? = try? JSON.parse(ArraySlice(text.utf8)) else { return nil }
        var out: [Float] = []
        for item in items {
            guard case .number(let d) = item, let f = Float(exactly: Float(d)), f.isFinite else { return nil }
            out.append(f)
        }
        return out
    }
}
