/// Labelled images held in memory. Pixels stay as stored (uint8, or float32 already in [0, 1]) and
/// are converted and normalized per batch, so a dataset costs one byte per pixel when it can.
public final class Dataset {
    public enum Pixels {
        /// (N, C, H, W) bytes; a value v means v/255.
        case bytes([UInt8])
        /// (N, C, H, W) floats in the [0, 1] scale.
        case floats([Float])
    }

    public let shape: Shape
    public let count: Int
    public let pixels: Pixels
    public let labels: [Int32]
    /// Names of the classes, in label order; their count is the number of classes.
    public var classNames: [String]

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
        if let bad = floats.firstIndex(where: { !$0.isFinite }) {
            throw CNNError(.invalidArgument, "dataset: pixel \(bad) is not finite")
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
        let c = shape.c, s = shape.h * shape.w
        var sum = [Double](repeating: 0, count: c), sq = [Double](repeating: 0, count: c)
        for n in 0..<count {
            for ch in 0..<c {
                let base = (n * c + ch) * s
                var a: Double = 0, b: Double = 0
                switch pixels {
                case .bytes(let p): for i in 0..<s { let v = Double(p[base + i]) / 255; a += v; b += v * v }
                case .floats(let p): for i in 0..<s { let v = Double(p[base + i]); a += v; b += v * v }
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
                     into x: UnsafeMutablePointer<Float>, labels out: UnsafeMutablePointer<Int32>) {
        let c = shape.c, s = shape.h * shape.w, sample = shape.count
        for (b, index) in indices.enumerated() {
            let n = Int(index)
            out[b] = labels[n]
            for ch in 0..<c {
                let dst = x + b * sample + ch * s, src = n * sample + ch * s
                let inv = 1 / std[ch]
                switch pixels {
                case .bytes(let p):
                    let a = inv / 255, o = -mean[ch] * inv
                    p.withUnsafeBufferPointer { pp in for i in 0..<s { dst[i] = Float(pp[src + i]) * a + o } }
                case .floats(let p):
                    let o = -mean[ch] * inv
                    p.withUnsafeBufferPointer { pp in for i in 0..<s { dst[i] = pp[src + i] * inv + o } }
                }
            }
        }
    }

    /// The first `n` samples (for quick runs); the same object when n >= count.
    public func prefix(_ n: Int) throws -> Dataset {
        guard n < count else { return self }
        let k = max(n, 1) * shape.count
        switch pixels {
        case .bytes(let p):
            return try Dataset(bytes: Array(p[..<k]), labels: Array(labels[..<max(n, 1)]), shape: shape, classNames: classNames)
        case .floats(let p):
            return try Dataset(floats: Array(p[..<k]), labels: Array(labels[..<max(n, 1)]), shape: shape, classNames: classNames)
        }
    }
}
