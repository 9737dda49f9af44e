// libFuzzer harnesses of the library's parsers, compiled in one module with the engine's sources
// (`make fuzz`): every input must end in a value or a CNNError, never a trap, a leak or a memory
// error (AddressSanitizer), and never allocate out of proportion (-malloc_limit_mb, -rss_limit_mb).
// One binary; the harness is chosen by the name it runs under (fuzz-architecture, fuzz-model,
// fuzz-idx, fuzz-jpeg, fuzz-png, fuzz-onnx), so each keeps its own corpus and crash files replay with the same name.
#if canImport(Glibc)
import Glibc
#endif

/// What one input exercises.
enum Harness: String, CaseIterable {
    case architecture, model, idx, jpeg, png, onnx
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
