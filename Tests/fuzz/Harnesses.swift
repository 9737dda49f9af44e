// libFuzzer harnesses of the library's parsers, compiled in one module with the engine's sources
// (`make fuzz`): every input must end in a value or a CNNError, never a trap, a leak or a memory
// error (AddressSanitizer), and never allocate out of proportion (-malloc_limit_mb, -rss_limit_mb).
// One binary; the harness is chosen by the name it runs under (fuzz-architecture, fuzz-model,
// fuzz-idx, fuzz-jpeg, fuzz-png, fuzz-onnx, fuzz-training), so each keeps its own corpus and crash
// files replay with the same name.
#if canImport(Glibc)
import Glibc
#endif

/// What one input exercises.
enum Harness: String, CaseIterable {
    case architecture, model, idx, jpeg, png, onnx, training
}

nonisolated(unsafe) var harness = Harness.architecture

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let program = String(cString: argv.pointee![0]!)
    let name = program.split(separator: "/").last.map(String.init) ?? program
    guard name.hasPrefix("fuzz-"), let h = Harness(rawValue: String(name.dropFirst(5))) else {
        fputs("run this binary as fuzz-\(Harness.allCases.map(\.rawValue).joined(separator: "|")) (a link to it)\n", stderr)
        exit(2)
    }
    harness = h
    // Requests a hostile input may make are checked against this before anything is allocated;
    // the fuzzer's -malloc_limit_mb sits above it, so an allocation past it is a finding.
    Memory.limit = 256 << 20
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch harness {
    case .architecture: fuzzArchitecture(bytes)
    case .model: fuzzModel(bytes)
    case .idx: fuzzIDX(bytes)
    case .jpeg: fuzzJPEG(bytes)
    case .png: fuzzPNG(bytes)
    case .onnx: fuzzONNX(bytes)
    case .training: fuzzTraining(bytes)
    }
    return 0
}

/// Architecture text: parse, build (sizes checked against the limit before allocating), describe,
/// and run one image through it when it is small.
func fuzzArchitecture(_ bytes: [UInt8]) {
    guard let text = String(validating: bytes, as: UTF8.self) else { return }
    guard let architecture = try? Architecture(parsing: text) else { return }
    guard (try? Architecture(parsing: architecture.text)) == architecture else {
        fatalError("the canonical text does not parse back: \(architecture.text)")
    }
    guard let model = try? Model(architecture: architecture, seed: 1) else { return }
    _ = model.summary
    guard model.inputShape.count <= 4096, model.flops <= 1 << 22 else { return }
    let x = [Float](repeating: 0.5, count: model.inputShape.count)
    _ = x.withUnsafeBufferPointer { model.predict($0.baseAddress!, batch: 1) }
}

/// Training on generated networks: the bytes choose an input shape and a stack of layers of every
/// kind (convolutions of any kernel, stride, padding and groups, norms, activations, pools, blocks),
/// which trains a step at a batch of 1-3 with 1 and then 2 threads (the gradients must be the same
/// bits), predicts (fused and folded paths; without norms or dropout, the logits must be training
/// forward's), and trains again with its first layers frozen (without norms or dropout among them,
/// the trained layers' gradients must not change, where rounding does not change them), and goes
/// through ONNX and back (the same network, tensors and logits, bit for bit). Every byte string
/// is a network the parser accepts, so the fuzzer explores the layers' and kernels' paths rather
/// than the grammar; a memory error in any of them shows under AddressSanitizer.
func fuzzTraining(_ bytes: [UInt8]) {
    var r = NetworkBytes(bytes: bytes)
    let text = r.network()
    if getenv("FUZZ_SHOW") != nil { fputs(text + "\n", stderr) }  // the network of an input replayed
    guard let architecture = try? Architecture(parsing: text) else {
        fatalError("a generated network does not parse: \(text)")
    }
    guard let model = try? Model(architecture: architecture, seed: 1),
          model.inputShape.count <= 4096, model.flops <= 1 << 21 else { return }
    let batch = 1 + r.next(3), k = model.numClasses, n = model.inputShape.count
    var rng = Random(seed: UInt64(bytes.count))
    let x = FloatBuffer((0..<(batch * n)).map { _ in rng.uniform() * 4 - 2 })
    let labels = (0..<batch).map { Int32($0 % k) }
    let dLogits = FloatBuffer(count: batch * k)
    /// One step's gradients, per trained tensor (in `namedParameters`' order).
    func step(_ m: Model, _ x: FloatBuffer = x) -> [[Float]] {
        var draws = Random(seed: 7)
        let logits = m.forward(x, batch: batch, training: true, rng: &draws)
        _ = labels.withUnsafeBufferPointer {
            computeLoss(.crossEntropy, logits: logits.pointer, labels: $0.baseAddress!, batch: batch, classes: k, gradient: dLogits.pointer)
        }
        m.zeroGradients()
        m.backward(dLogits, batch: batch)
        return m.namedParameters.compactMap { $0.parameter.grad?.array }
    }
    ThreadPool.setThreads(1)
    let one = step(model)
    ThreadPool.setThreads(2)
    guard let twin = try? Model(architecture: architecture, seed: 1) else { return }
    guard step(twin).map({ $0.map(\.bitPattern) }) == one.map({ $0.map(\.bitPattern) }) else {
        fatalError("training's gradients differ with 1 and 2 threads: \(text)")
    }
    /// Layers whose training differs from their inference by design.
    func drawsOrNorms(_ l: Layer) -> Bool {
        l is BatchNorm || l is Dropout || (l as? Block)?.sequences.contains { $0.layers.contains(where: drawsOrNorms) } == true
    }
    // Inference (its fused and folded paths, pooling as the convolution writes, one image over
    // both threads) computes what training's forward computes, but for norms and dropout.
    if !twin.layers.contains(where: drawsOrNorms) {
        var draws = Random(seed: 7)
        let trained = twin.forward(x, batch: batch, training: true, rng: &draws).array
        let scale = trained.reduce(Float(1e-3)) { max($0, abs($1)) }
        let inferred = twin.predict(x.pointer, batch: batch, logits: true)
        let single = twin.predict(x.pointer, batch: 1, logits: true)
        guard zip(trained, inferred).allSatisfy({ abs($0 - $1) <= 1e-4 * scale }),
              zip(trained, single).allSatisfy({ abs($0 - $1) <= 1e-4 * scale }) else {
            fatalError("inference differs from training's forward: \(text)\n\(trained)\n\(inferred)\n\(single)")
        }
    }
    if model.layers.count > 1 {
        let frozen = 1 + r.next(model.layers.count - 1)
        if getenv("FUZZ_SHOW") != nil { fputs("frozen until layer \(frozen)\n", stderr) }
        /// Whether every value of `a` is within `tolerance` times `b`'s largest magnitude of `b`'s.
        func close(_ a: [Float], _ b: [Float], _ tolerance: Float) -> Bool {
            let scale = b.reduce(Float(1e-6)) { max($0, abs($1)) }
            return zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * scale }
        }
        // Frozen layers run at inference; without batch norm or dropout among them that is the
        // same function, so the trained layers' gradients are the unfrozen step's. Not where a
        // nudge of the input by a millionth moves them past the tolerance: that is rounding noise
        // amplified (batch norm over two or three values, which the forward maps to ±1 whatever
        // they are), and inference rounds differently. (A fuzzing finding: a 1e-6 nudge moved such
        // a gradient from 5.4 to 29.1.)
        let same = !model.layers.prefix(frozen).contains(where: drawsOrNorms)
            && zip(step(model, FloatBuffer(x.array.map { $0 * (1 + 1e-6) })), one).allSatisfy { close($0, $1, 1e-4) }
        if (try? model.freeze(until: frozen)) != nil {
            let partly = step(model)
            let trained = Set(model.layers.dropFirst(frozen).flatMap(\.parameters).map(ObjectIdentifier.init))
            for (i, p) in model.namedParameters.filter({ $0.parameter.grad != nil }).enumerated()
                where same && trained.contains(ObjectIdentifier(p.parameter)) {
                guard close(partly[i], one[i], 1e-3) else {
                    fatalError("\(p.name)'s gradient differs with layers 0..<\(frozen) frozen: \(text)")
                }
            }
        }
    }
    let logits = model.predict(x.pointer, batch: batch, logits: true)
    // ONNX export, then import: the same architecture text, every tensor bit for bit (with the
    // running statistics the steps above moved), the same logits bit for bit.
    if let onnx = try? model.onnxBytes() {
        guard let file = try? ONNXFile.parse(onnx, path: "export"), var importer = try? ONNXImporter(file),
              let back = try? importer.model() else {
            fatalError("our ONNX export does not import back: \(text)")
        }
        guard back.architecture.text == model.architecture.text,
              back.namedParameters.map(\.name) == model.namedParameters.map(\.name),
              zip(back.namedParameters, model.namedParameters).allSatisfy({
                  $0.parameter.value.array.map(\.bitPattern) == $1.parameter.value.array.map(\.bitPattern) }) else {
            fatalError("ONNX export and import changed the network or its tensors: \(text)\nback: \(back.architecture.text)")
        }
        guard back.predict(x.pointer, batch: batch, logits: true).map(\.bitPattern) == logits.map(\.bitPattern) else {
            fatalError("the imported network predicts other logits: \(text)")
        }
    }
    ThreadPool.setThreads(1)
}

/// Reads a fuzzer's bytes as the choices of a network (zeros once they run out).
struct NetworkBytes {
    let bytes: [UInt8]
    var at = 0
    /// A choice among `n`.
    mutating func next(_ n: Int) -> Int {
        defer { at += 1 }
        return at < bytes.count && n > 1 ? Int(bytes[at]) % n : 0
    }
    mutating func pick<T>(_ options: [T]) -> T { options[next(options.count)] }

    /// An input shape and 1-7 layers or blocks, then a classifier. The channels and size are
    /// followed so that groups and blocks fit; a layer that would leave no output is left out.
    mutating func network() -> String {
        var c = pick([1, 2, 3, 4, 8, 9, 16, 17, 32]), h = 1 + next(14), w = 1 + next(14)
        var lines = ["input(\(c),\(h),\(w))"]
        let activations = ["relu", "relu6", "sigmoid", "tanh", "hardsigmoid", "hardswish", "silu", "gelu", "leakyrelu(0.1)"]
        func size(_ n: Int, _ k: Int, _ s: Int, _ p: Int) -> Int { (n + 2 * p - k) / s + 1 }
        for _ in 0..<(1 + next(7)) {
            switch next(10) {
            case 0, 1, 2:  // a convolution: any kernel, stride, padding, groups
                let kh = 1 + next(5), kw = next(3) == 0 ? 1 + next(5) : kh
                let s = 1 + next(3), p = next(3)
                guard size(h, kh, s, p) >= 1, size(w, kw, s, p) >= 1 else { continue }
                var out = pick([1, 2, 4, 8, 9, 16, 24, 32, 33]), groups = 1
                switch next(3) {
                case 1: groups = c; out = c * (1 + next(2))  // depthwise (times 1 or 2)
                case 2: groups = [2, 3, 4].first { c % $0 == 0 && out % $0 == 0 } ?? 1
                default: break
                }
                let kernel = kh == kw ? "\(kh)" : "\(kh)x\(kw)"
                lines.append("conv(\(out),\(kernel),stride=\(s),pad=\(p),groups=\(groups),bias=\(next(2) == 0))")
                (c, h, w) = (out, size(h, kh, s, p), size(w, kw, s, p))
            case 3: lines.append("batchnorm")
            case 4: lines.append(pick(activations))
            case 5:  // a pool: half of them 2×2 at stride 2 (which a convolution before does as it writes)
                if next(2) == 0 {
                    guard h >= 2, w >= 2 else { continue }
                    lines.append("maxpool(2)")
                    (h, w) = (h / 2, w / 2)
                    continue
                }
                let k = 2 + next(2), s = 1 + next(3), p = next(2)
                if next(2) == 0, p <= k / 2, size(h, k, s, p) >= 1, size(w, k, s, p) >= 1 {
                    lines.append("maxpool(\(k),stride=\(s),pad=\(p))")
                    (h, w) = (size(h, k, s, p), size(w, k, s, p))
                } else if p <= k / 2, size(h, k, s, p) >= 1, size(w, k, s, p) >= 1 {
                    lines.append("avgpool(\(k),stride=\(s),pad=\(p)" + (next(2) == 0 ? ",count_include_pad=false" : "") + ")")
                    (h, w) = (size(h, k, s, p), size(w, k, s, p))
                }
            case 6:  // a residual block, with a projection when it changes the shape
                let s = 1 + next(2), out = next(2) == 0 ? c : pick([4, 8, 16])
                guard size(h, 3, s, 1) >= 1, size(w, 3, s, 1) >= 1 else { continue }
                let act = pick(activations)
                let body = "conv(\(out),3,stride=\(s),pad=1,bias=false) batchnorm \(act) conv(\(out),3,pad=1,bias=false) batchnorm"
                let shortcut = s == 1 && out == c ? "" : " | conv(\(out),1,stride=\(s),bias=false) batchnorm"
                lines.append("residual[\(body)\(shortcut)] \(next(2) == 0 ? act : "")")
                (c, h, w) = (out, size(h, 3, s, 1), size(w, 3, s, 1))
            case 7:  // parallel branches
                let a = 1 + next(8), b = 1 + next(8)
                lines.append("concat[conv(\(a),1) | conv(\(b),3,pad=1) \(pick(activations)) | maxpool(3,stride=1,pad=1)]")
                c += a + b
            case 8: lines.append("se(\(1 + next(8)),act=\(pick(["relu", "silu"])),gate=\(pick(["sigmoid", "hardsigmoid"])))")
            case 9 where next(2) == 0:  // zeros on some sides (TensorFlow's "same" at stride 2 pads the end)
                let (l, r, t, b) = (next(3), 1 + next(2), next(3), next(3))
                lines.append("zeropad(\(l),\(r),\(t),\(b))")
                (h, w) = (h + t + b, w + l + r)
            default: lines.append("dropout(0.\(1 + next(8)))")
            }
        }
        if next(2) == 0 { lines.append("globalavgpool") }
        lines.append("flatten")
        if next(2) == 0 { lines.append("dense(\(1 + next(16))) \(pick(activations))") }
        lines.append("dense(\(1 + next(5)))")
        return lines.joined(separator: "\n")
    }
}

/// Model files (safetensors with our JSON header and metadata), and checkpoints' training state.
func fuzzModel(_ bytes: [UInt8]) {
    guard let file = try? Safetensors.parse(bytes, path: "input") else { return }
    guard let model = try? Model.load(file: file, path: "input") else { return }
    _ = model.summary
    if model.inputShape.count <= 4096, model.flops <= 1 << 22 {
        let x = [Float](repeating: 0.5, count: model.inputShape.count)
        _ = x.withUnsafeBufferPointer { model.predict($0.baseAddress!, batch: 1) }
    }
}

/// ONNX files: the protobuf reader, the graph walk into an architecture, the weights' checks,
/// and (for a small model) a prediction and the export of what was imported.
func fuzzONNX(_ bytes: [UInt8]) {
    guard let file = try? ONNXFile.parse(bytes, path: "input") else { return }
    guard var importer = try? ONNXImporter(file), let model = try? importer.model() else { return }
    _ = model.summary
    if model.inputShape.count <= 4096, model.flops <= 1 << 22 {
        let x = [Float](repeating: 0.5, count: model.inputShape.count)
        _ = x.withUnsafeBufferPointer { model.predict($0.baseAddress!, batch: 1) }
        _ = try? model.onnxBytes()
    }
}

/// The file each IDX input is written to (in memory, /dev/shm), one per process.
let idxPath: String = {
    let path = "/dev/shm/cnn-fuzz-idx-\(getpid())"
    atexit { unlink("/dev/shm/cnn-fuzz-idx-\(getpid())") }
    return path
}()

/// IDX images or labels, plain or gzip: the first byte picks which reader, the rest is the file.
func fuzzIDX(_ bytes: [UInt8]) {
    guard let first = bytes.first else { return }
    let path = idxPath
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return }
    let body = bytes.dropFirst()
    _ = body.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    if first & 1 == 0 { _ = try? IDX.readImages(path) } else { _ = try? IDX.readLabels(path) }
}

/// JPEG with the options a C caller can pass: the first 4 bytes choose strict, EXIF, DCT scaling,
/// the scan limit and the decoding budget; the rest is the file, decoded and brought to a small
/// network input as predict_jpeg does.
func fuzzJPEG(_ bytes: [UInt8]) {
    guard bytes.count >= 4 else { return }
    var options = JPEGOptions()
    options.strict = bytes[0] & 1 != 0
    options.applyOrientation = bytes[0] & 2 != 0
    options.maxScans = Int(bytes[1] % 64) + 1
    // Small limits keep each input fast (a legitimate 64-megapixel decode takes seconds); the
    // limits' own checks are exercised either way.
    options.maxPixels = bytes[0] & 4 != 0 ? 1 << 14 : 1 << 18
    options.maxBytes = bytes[0] & 8 != 0 ? 1 << 18 : 16 << 20
    let side = Int(bytes[2] % 64)
    let file = Array(bytes[4...])
    guard let decoded = try? JPEG.decode(file, options: options, minWidth: side, minHeight: side) else { return }
    let image = decoded.image
    guard image.width > 0, image.height > 0, image.pixels.count == image.width * image.height * image.channels else {
        fatalError("decoded a \(image.width)x\(image.height)x\(image.channels) image of \(image.pixels.count) bytes")
    }
    let fit: [ImageFit] = [.crop, .stretch, .pad]
    let shape = Shape(c: bytes[3] & 1 == 0 ? 1 : 3, h: max(1, side), w: max(1, Int(bytes[3] >> 2) % 64 + 1))
    let fitted = image.fitted(channels: shape.c, width: shape.w, height: shape.h, fit: fit[Int(bytes[3] >> 1) % 3])
    guard fitted.pixels.count == shape.count else { fatalError("fitted to \(shape) with \(fitted.pixels.count) bytes") }
}

/// PNG: the first byte picks strictness and limits, the rest is the file.
func fuzzPNG(_ bytes: [UInt8]) {
    guard bytes.count >= 2 else { return }
    var options = JPEGOptions()
    options.strict = bytes[0] & 1 != 0
    options.maxPixels = bytes[0] & 4 != 0 ? 1 << 14 : 1 << 18
    options.maxBytes = bytes[0] & 8 != 0 ? 1 << 18 : 16 << 20
    let file = Array(bytes[2...])
    guard let decoded = try? ImageFile.decode(file, options: options) else { return }
    let image = decoded.image
    guard image.width > 0, image.height > 0, image.channels == 1 || image.channels == 3,
          image.pixels.count == image.width * image.height * image.channels else {
        fatalError("decoded a \(image.width)x\(image.height)x\(image.channels) image of \(image.pixels.count) bytes")
    }
    let shape = Shape(c: bytes[1] & 1 == 0 ? 1 : 3, h: Int(bytes[1] >> 1) % 32 + 1, w: Int(bytes[1] >> 3) % 32 + 1)
    let fitted = image.fitted(channels: shape.c, width: shape.w, height: shape.h, fit: .crop)
    guard fitted.pixels.count == shape.count else { fatalError("fitted to \(shape) with \(fitted.pixels.count) bytes") }
}
