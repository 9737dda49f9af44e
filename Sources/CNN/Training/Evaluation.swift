/// Loss and accuracy of a model on a dataset, per class too, with the confusion matrix.
public struct Evaluation: Sendable {
    public var count: Int
    public var loss: Double
    public var accuracy: Double
    /// confusion[true class][predicted class]
    public var confusion: [[Int]]
    /// Accuracy of each true class (NaN-free: a class with no samples gets 0).
    public var perClassAccuracy: [Double] {
        confusion.enumerated().map { i, row in
            let total = row.reduce(0, +)
            return total == 0 ? 0 : Double(row[i]) / Double(total)
        }
    }
}

/// Evaluates in inference mode (dropout off, batch norm on running statistics). With
/// `flipAverage`, each image's logits are the mean of its own and its left-right mirror's
/// (test-time augmentation, for a model trained with flips; twice the forward work). `samples`:
/// only those (a rank's part of the validation data in a distributed run).
public func evaluate(model: Model, on data: Dataset, loss: LossKind = .crossEntropy, batchSize: Int = 256,
                     flipAverage: Bool = false, samples: Range<Int>? = nil) throws -> Evaluation {
    let samples = samples ?? 0..<data.count
    guard data.shape.c == model.inputShape.c, data.shape.h == model.inputShape.h, data.shape.w == model.inputShape.w else {
        throw CNNError(.shapeMismatch, "the data has images of \(data.shape), the model takes \(model.inputShape)")
    }
    try data.checkClasses(of: model)
    // The confusion matrix is classes² counts (and as many sums again in a distributed run).
    let (cells, overflow) = model.numClasses.multipliedReportingOverflow(by: model.numClasses)
    try Memory.check(overflow ? Int.max : cells &* 16, for: "the confusion matrix of \(model.numClasses) classes")
    let k = model.numClasses, b = max(1, min(batchSize, samples.count, model.maxBatch))
    let x = FloatBuffer(count: b * model.inputShape.count)
    var labels = [Int32](repeating: 0, count: b)
    let plain = try FloatBuffer(count: flipAverage ? b * k : 0, for: "the logits kept while the mirrored images run")
    var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
    var total = 0.0
    var rng = Random(seed: 0)
    let indices = samples.map { Int32($0) }
    var lo = 0
    while lo < indices.count {
        let n = min(b, indices.count - lo)
        try labels.withUnsafeMutableBufferPointer { l in
            try data.fill(indices[lo..<(lo + n)], mean: model.mean, std: model.std, into: x.pointer, labels: l.baseAddress!)
        }
        var logits = model.forward(x, batch: n, training: false, rng: &rng)
        if flipAverage {
            plain.pointer.update(from: logits.pointer, count: n * k)
            mirror(x.pointer, images: n * model.inputShape.c, height: model.inputShape.h, width: model.inputShape.w)
            logits = model.forward(x, batch: n, training: false, rng: &rng)
            for i in 0..<(n * k) { logits.pointer[i] = (plain.pointer[i] + logits.pointer[i]) * 0.5 }
        }
        let r = labels.withUnsafeBufferPointer { l in
            computeLoss(loss, logits: logits.pointer, labels: l.baseAddress!, batch: n, classes: k)
        }
        total += r.sum
        for i in 0..<n {
            let z = logits.pointer + i * k
            var best = 0
            for j in 1..<k where z[j] > z[best] { best = j }
            confusion[Int(labels[i])][best] += 1
        }
        lo += n
    }
    let correct = (0..<k).reduce(0) { $0 + confusion[$1][$1] }
    let count = samples.count
    return Evaluation(count: count, loss: count == 0 ? 0 : total / Double(count),
                      accuracy: count == 0 ? 0 : Double(correct) / Double(count), confusion: confusion)
}

/// Mirrors `images` planes of height × width left-right, in place.
private func mirror(_ x: UnsafeMutablePointer<Float>, images: Int, height: Int, width: Int) {
    for row in 0..<(images * height) {
        let p = x + row * width
        var i = 0, j = width - 1
        while i < j { let t = p[i]; p[i] = p[j]; p[j] = t; i += 1; j -= 1 }
    }
}

extension Model {
    /// Images `predict` runs at a time: 32 keep a small network's activations in the caches (256
    /// ran 20 % slower on ResNet-20); on large images fewer, so that the chunk's largest activation
    /// stays within `predictionFloats`, and a power of two, which splits evenly over threads (at
    /// 224×224 per image: MobileNetV2 and EfficientNet-B0 ran 12-17 % faster 8 at a time than 32,
    /// ResNet-18 the same 16 at a time, 13 % slower 7 at a time).
    var predictionChunk: Int {
        let fit = max(1, min(32, maxBatch, Model.predictionFloats / max(1, largestActivation)))
        return 1 << (Int.bitWidth - 1 - fit.leadingZeroBitCount)
    }
    static let predictionFloats = 16 << 20

    /// Class probabilities (B, classes) for `batch` images (B, C, H, W) in the [0, 1] pixel scale;
    /// the model's normalization is applied first.
    public func predict(_ images: UnsafePointer<Float>, batch: Int, logits wantLogits: Bool = false) -> [Float] {
        let sample = inputShape.count, k = numClasses
        var out = [Float](repeating: 0, count: batch * k)
        let chunk = predictionChunk
        let x = predictionInput.reserve(min(batch, chunk) * sample)
        var rng = Random(seed: 0)
        var lo = 0
        let s = inputShape.h * inputShape.w
        while lo < batch {
            let n = min(chunk, batch - lo), channels = inputShape.c, xp = x.pointer
            parallelChunks(n * channels, chunk: max(1, 32768 / s)) { p0, p1 in
                for plane in p0..<p1 {
                    let c = plane % channels, inv = 1 / std[c], m = mean[c]
                    let src = images + lo * sample + plane * s, dst = xp + plane * s
                    for j in 0..<s { dst[j] = (src[j] - m) * inv }
                }
            }
            let logits = forward(x, batch: n, training: false, rng: &rng)
            out.withUnsafeMutableBufferPointer { o in
                let dst = o.baseAddress! + lo * k
                if wantLogits { dst.update(from: logits.pointer, count: n * k) }
                else { softmax(logits.pointer, batch: n, classes: k, into: dst) }
            }
            lo += n
        }
        return out
    }
}

extension Model {
    /// Class probabilities (or logits) of one JPEG or PNG image held in memory: decoded (a JPEG at
    /// a DCT scale when the image is much larger than the input), brought to the input size by `imageFit`, and
    /// normalized like the training data.
    public func predictJPEG(_ bytes: [UInt8], options: JPEGOptions = JPEGOptions(), logits: Bool = false) throws -> [Float] {
        let s = inputShape
        guard s.c == 1 || s.c == 3 else {
            throw CNNError(.shapeMismatch, "the model takes \(s.c)-channel images; JPEG images decode to 1 or 3 channels")
        }
        let decoded = try ImageFile.decode(bytes, options: options, minWidth: s.w, minHeight: s.h)
        return try predictImage(decoded.image, logits: logits)
    }

    /// Class probabilities (or logits) of one decoded image of any size (1 or 3 channels), brought
    /// to the input size by `imageFit` as the training folder's images were, and normalized.
    public func predictImage(_ image: Image, logits: Bool = false) throws -> [Float] {
        let s = inputShape
        guard s.c == 1 || s.c == 3 else {
            throw CNNError(.shapeMismatch, "the model takes \(s.c)-channel images; images are brought to 1 or 3 channels")
        }
        guard image.channels == 1 || image.channels == 3, image.width >= 1, image.height >= 1,
              image.pixels.count == image.width * image.height * image.channels else {
            throw CNNError(.invalidArgument, "an image of \(image.width)x\(image.height)x\(image.channels) with \(image.pixels.count) bytes is not a 1- or 3-channel image")
        }
        let fitted = image.fitted(channels: s.c, width: s.w, height: s.h, fit: imageFit)
        let x = fitted.planes.map { Float($0) / 255 }
        return x.withUnsafeBufferPointer { predict($0.baseAddress!, batch: 1, logits: logits) }
    }

    /// As `predictJPEG(_:)`, for a file.
    public func predictJPEG(file path: String, options: JPEGOptions = JPEGOptions(), logits: Bool = false) throws -> [Float] {
        let bytes = try FileIO.read(path, maxBytes: 1 << 30)
        do { return try predictJPEG(bytes, options: options, logits: logits) }
        catch let e as CNNError { throw CNNError(e.kind, "\(path): \(e.message)") }
    }
}
