/// Labelled images held in memory. Pixels stay as stored (uint8, or float32 already in [0, 1]) and
/// are converted and normalized per batch, so a dataset costs one byte per pixel when it can.
public final class Dataset {
    public enum Pixels {
        /// (N, C, H, W) bytes; a value v means v/255.
        case bytes([UInt8])
        /// (N, C, H, W) floats in the [0, 1] scale.
        case floats([Float])
        /// Image files decoded when a batch needs them (a folder too large for the memory budget).
        case files(ImageFiles)

        var isFloats: Bool { if case .floats = self { true } else { false } }
    }

    public let shape: Shape
    public let count: Int
    public let pixels: Pixels
    public let labels: [Int32]
    /// Names of the classes, in label order; their count is the number of classes.
    public var classNames: [String]
    /// Files that could not be loaded (folder datasets): path and reason.
    public internal(set) var skipped: [(path: String, reason: String)] = []
    /// Files decoded with a warning (lenient mode): path and libjpeg's message.
    public internal(set) var warnings: [(path: String, message: String)] = []
    /// How the images were brought to this size (folder datasets); models trained on it keep it.
    public internal(set) var imageFit: ImageFit?
    /// The file each sample was decoded from (folder datasets), in sample order.
    public internal(set) var samplePaths: [String]?
    /// Per-channel statistics measured while loading, when the pixels are not all in memory.
    var knownStatistics: (mean: [Float], std: [Float])?

    /// Takes image files decoded on demand.
    init(files: ImageFiles, labels: [Int32], classNames: [String]) throws {
        try Dataset.validate(pixelCount: labels.count * files.shape.count, labels: labels, shape: files.shape, classes: classNames.count)
        shape = files.shape
        count = labels.count
        pixels = .files(files)
        self.labels = labels
        self.classNames = classNames
    }

    public var numClasses: Int { classNames.count }

    /// Validates and takes (N, C, H, W) uint8 pixels with labels in 0..<classNames.count.
    public init(bytes: [UInt8], labels: [Int32], shape: Shape, classNames: [String]) throws {
        try Dataset.validate(pixelCount: bytes.count, labels: labels, shape: shape, classes: classNames.count)
        self.shape = shape
        count = labels.count
        pixels = .bytes(bytes)
        self.labels = labels
        self.classNames = classNames
    }

    /// Validates and takes (N, C, H, W) float pixels (finite, in the [0, 1] scale).
    public init(floats: [Float], labels: [Int32], shape: Shape, classNames: [String]) throws {
        try Dataset.validate(pixelCount: floats.count, labels: labels, shape: shape, classes: classNames.count)
        if let bad = floats.withUnsafeBufferPointer({ firstOutsideUnitInterval($0.baseAddress!, count: $0.count) }) {
            let v = floats[bad], hint = v.isFinite && v > 1 && v <= 255 ? "; divide 8-bit values by 255 (or pass uint8 images)" : ""
            throw CNNError(.invalidArgument, "dataset: pixel \(bad) (image \(bad / shape.count)) is \(v): float pixels must be in [0, 1]\(hint)")
        }
        self.shape = shape
        count = labels.count
        pixels = .floats(floats)
        self.labels = labels
        self.classNames = classNames
    }

    static func validate(pixelCount: Int, labels: [Int32], shape: Shape, classes: Int) throws {
        guard shape.c > 0, shape.h > 0, shape.w > 0 else {
            throw CNNError(.invalidArgument, "dataset: image shape \(shape) must be positive")
        }
        guard !labels.isEmpty else { throw CNNError(.invalidArgument, "dataset: no samples") }
        guard classes > 0 else { throw CNNError(.invalidArgument, "dataset: no classes") }
        let (expected, overflow) = labels.count.multipliedReportingOverflow(by: shape.count)
        guard !overflow, expected == pixelCount else {
            throw CNNError(.shapeMismatch, "dataset: \(labels.count) labels of \(shape) images need \(labels.count)×\(shape.count) pixels, got \(pixelCount)")
        }
        if let i = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw CNNError(.invalidArgument, "dataset: label \(labels[i]) of sample \(i) is outside 0..<\(classes)")
        }
    }

    /// Per-channel mean and standard deviation of the pixels in the [0, 1] scale.
    public func channelStatistics() -> (mean: [Float], std: [Float]) {
        if let known = knownStatistics { return known }
        let c = shape.c, s = shape.h * shape.w
        var sum = [Double](repeating: 0, count: c), sq = [Double](repeating: 0, count: c)
        for n in 0..<count {
            for ch in 0..<c {
                let base = (n * c + ch) * s
                var a: Double = 0, b: Double = 0
                switch pixels {
                case .bytes(let p): for i in 0..<s { let v = Double(p[base + i]) / 255; a += v; b += v * v }
                case .floats(let p): for i in 0..<s { let v = Double(p[base + i]); a += v; b += v * v }
                case .files: break
                }
                sum[ch] += a; sq[ch] += b
            }
        }
        let m = Double(count * s)
        let mean = sum.map { $0 / m }
        let std = zip(sq, mean).map { max($0 / m - $1 * $1, 0).squareRoot() }
        return (mean.map { Float($0) }, std.map { Float(max($0, 1e-6)) })
    }

    /// Writes samples `indices` into `x` (B, C, H, W) as (v - mean[c]) / std[c], and their labels.
    public func fill(_ indices: ArraySlice<Int32>, mean: [Float], std: [Float],
                     into x: UnsafeMutablePointer<Float>, labels out: UnsafeMutablePointer<Int32>) throws {
        var scratch = SampleScratch(shape: shape)
        try fill(indices, mean: mean, std: std, into: x, labels: out, scratch: &scratch)
    }

    /// As `fill`, with the caller's scratch buffers (a training step allocates nothing).
    func fill(_ indices: ArraySlice<Int32>, mean: [Float], std: [Float], into x: UnsafeMutablePointer<Float>,
              labels out: UnsafeMutablePointer<Int32>, scratch: inout SampleScratch) throws {
        for (b, index) in indices.enumerated() {
            out[b] = labels[Int(index)]
            try fillSample(Int(index), into: x + b * shape.count, mean: mean, std: std, scratch: &scratch)
        }
    }

    /// Writes sample `n` into `dst` (C, H, W): pixels in [0, 1], augmented when `augmentation` is
    /// given (with `rng`), then normalized per channel.
    func fillSample(_ n: Int, into dst: UnsafeMutablePointer<Float>, mean: [Float], std: [Float],
                    augmentation: Augmentation? = nil, rng: inout Random, scratch: inout SampleScratch) throws {
        let sample = shape.count
        switch pixels {
        case .bytes(let p):
            p.withUnsafeBufferPointer { pp in
                let src = pp.baseAddress! + n * sample
                for i in 0..<sample { dst[i] = Float(src[i]) * (1 / 255) }
            }
        case .floats(let p):
            p.withUnsafeBufferPointer { pp in dst.update(from: pp.baseAddress! + n * sample, count: sample) }
        case .files(let files):
            try files.load(n, into: &scratch.bytes)
            for i in 0..<sample { dst[i] = Float(scratch.bytes[i]) * (1 / 255) }
        }
        augmentation?.apply(dst, shape: shape, rng: &rng, scratch: &scratch.floats)
        let s = shape.h * shape.w
        for c in 0..<shape.c {
            let inv = 1 / std[c], o = -mean[c] * inv, plane = dst + c * s
            for i in 0..<s { plane[i] = plane[i] * inv + o }
        }
    }

    func fillSample(_ n: Int, into dst: UnsafeMutablePointer<Float>, mean: [Float], std: [Float],
                    scratch: inout SampleScratch) throws {
        var unused = Random(seed: 0)
        try fillSample(n, into: dst, mean: mean, std: std, rng: &unused, scratch: &scratch)
    }

    /// Copies samples first..<first+n as (n, C, H, W) floats in the [0, 1] scale (not normalized),
    /// and their labels; either output may be nil.
    public func copy(first: Int, count n: Int, images: UnsafeMutablePointer<Float>?, labels out: UnsafeMutablePointer<Int32>?) throws {
        guard first >= 0, n >= 1, first + n <= count else {
            throw CNNError(.invalidArgument, "first \(first), count \(n) is not a range inside the \(count) images")
        }
        let identityMean = [Float](repeating: 0, count: shape.c), identityStd = [Float](repeating: 1, count: shape.c)
        var scratch = SampleScratch(shape: shape)
        for i in 0..<n {
            out?[i] = labels[first + i]
            if let images {
                try fillSample(first + i, into: images + i * shape.count, mean: identityMean, std: identityStd, scratch: &scratch)
            }
        }
    }

    /// The samples at `indices`, in that order (for splits).
    public func subset(_ indices: [Int]) throws -> Dataset {
        guard !indices.isEmpty, indices.allSatisfy({ $0 >= 0 && $0 < count }) else {
            throw CNNError(.invalidArgument, "dataset subset: indices must be inside 0..<\(count) and not empty")
        }
        let sample = shape.count
        if case .files = pixels {} else {
            try Memory.ensureAvailable(indices.count * sample * (pixels.isFloats ? 4 : 1), for: "a subset of \(indices.count) images")
        }
        let newLabels = indices.map { labels[$0] }
        let d: Dataset
        switch pixels {
        case .bytes(let p):
            var out = [UInt8](); out.reserveCapacity(indices.count * sample)
            for i in indices { out.append(contentsOf: p[(i * sample)..<((i + 1) * sample)]) }
            d = try Dataset(bytes: out, labels: newLabels, shape: shape, classNames: classNames)
        case .floats(let p):
            var out = [Float](); out.reserveCapacity(indices.count * sample)
            for i in indices { out.append(contentsOf: p[(i * sample)..<((i + 1) * sample)]) }
            d = try Dataset(floats: out, labels: newLabels, shape: shape, classNames: classNames)
        case .files(let files):
            d = try Dataset(files: files.subset(indices), labels: newLabels, classNames: classNames)
        }
        d.imageFit = imageFit
        d.samplePaths = samplePaths.map { p in indices.map { p[$0] } }
        // Files are not all in memory: the subset keeps the whole set's statistics.
        if case .files = d.pixels { d.knownStatistics = knownStatistics }
        d.skipped = skipped
        d.warnings = warnings
        return d
    }

    /// The same images with other labels and class names (sharing the pixels).
    func relabeled(_ newLabels: [Int32], classNames names: [String]) throws -> Dataset {
        let d: Dataset
        switch pixels {
        case .bytes(let p): d = try Dataset(bytes: p, labels: newLabels, shape: shape, classNames: names)
        case .floats(let p): d = try Dataset(floats: p, labels: newLabels, shape: shape, classNames: names)
        case .files(let f): d = try Dataset(files: f, labels: newLabels, classNames: names)
        }
        d.imageFit = imageFit
        d.samplePaths = samplePaths
        d.knownStatistics = knownStatistics
        d.skipped = skipped
        d.warnings = warnings
        return d
    }

    /// A seeded split: a fraction of the samples (at least one) for validation, the rest for training.
    public func split(validationFraction: Double, seed: UInt64) throws -> (train: Dataset, validation: Dataset) {
        guard validationFraction > 0, validationFraction < 1, count >= 2 else {
            throw CNNError(.invalidArgument, "split: the fraction must be between 0 and 1 and the dataset hold 2 samples or more")
        }
        var rng = Random(seed: seed ^ 0x5B11_7000)
        var order: [Int32] = []
        rng.permutation(count, into: &order)
        let v = min(count - 1, max(1, Int((Double(count) * validationFraction).rounded())))
        let validation = order[..<v].map { Int($0) }.sorted(), train = order[v...].map { Int($0) }.sorted()
        return (try subset(train), try subset(validation))
    }

    /// The first `n` samples (for quick runs); the same object when n >= count.
    public func prefix(_ n: Int) throws -> Dataset {
        guard n < count else { return self }
        return try subset(Array(0..<max(n, 1)))
    }
}

/// Per-thread buffers for building one sample.
struct SampleScratch {
    var bytes: [UInt8]
    var floats: [Float]
    init(shape: Shape) {
        bytes = [UInt8](repeating: 0, count: shape.count)
        floats = [Float](repeating: 0, count: shape.count)
    }
}

/// The index of the first of `count` values outside [0, 1] (NaN is), or nil: a vector at a time,
/// then the rest one by one (a batch of 224×224 images is checked in place before every prediction).
public func firstOutsideUnitInterval(_ x: UnsafePointer<Float>, count: Int) -> Int? {
    var i = 0
    while i + V.scalarCount <= count {
        let v = load(x + i)
        if !all((v .>= 0) .& (v .<= 1)) { break }
        i += V.scalarCount
    }
    while i < count {
        if !(x[i] >= 0 && x[i] <= 1) { return i }
        i += 1
    }
    return nil
}
