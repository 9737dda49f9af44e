import CNN
import CNNABI

// export: cnn_model_evaluate
public func exportModelEvaluate(_ model: OpaquePointer?, _ data: OpaquePointer?,
                                _ result: UnsafeMutablePointer<cnn_evaluation>?,
                                _ confusion: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_model_evaluate") {
        let handle = try Registry.model(model)
        let data = try Registry.dataset(data, "data")
        let result = try required(result, "result")
        let e = try handle.shared { m in try data.using { try evaluate(model: m, on: $0) } }
        result.pointee = cnn_evaluation(count: Int32(e.count), loss: Float(e.loss), accuracy: Float(e.accuracy))
        if let confusion {
            let k = e.confusion.count
            for i in 0..<k { for j in 0..<k { confusion[i * k + j] = Int32(e.confusion[i][j]) } }
        }
    }
}

/// Checks a batch argument; returns the number of values it holds.
private func batchValues(_ m: Model, _ n: Int32) throws -> Int {
    guard n >= 1, n <= 1 << 24 else { throw invalid("n must be from 1 to 2^24, not \(n)") }
    let (total, overflow) = Int(n).multipliedReportingOverflow(by: m.inputShape.count)
    guard !overflow, total <= 1 << 32 else { throw CNNError(.outOfMemory, "\(n) images exceed the limit of 2^32 values") }
    return total
}

/// `images(model, values, predict)` checks or converts the caller's images and calls `predict` on
/// the float pixels.
private func predict(_ function: String, _ model: OpaquePointer?, _ n: Int32, _ out: UnsafeMutablePointer<Float>?,
                     logits: Bool, images: (Model, Int, (UnsafePointer<Float>) -> [Float]) throws -> [Float]) -> cnn_status {
    guarded(function) {
        let handle = try Registry.model(model)
        let out = try required(out, logits ? "logits" : "probabilities")
        let result = try handle.shared { m -> [Float] in
            try images(m, try batchValues(m, n)) { m.predict($0, batch: Int(n), logits: logits) }
        }
        out.update(from: result, count: result.count)
    }
}

/// The caller's float images, used in place once every value is checked to be in [0, 1].
private func floatImages(_ images: UnsafePointer<Float>?) -> (Model, Int, (UnsafePointer<Float>) -> [Float]) throws -> [Float] {
    { m, total, predict in
        let images = try required(images, "images")
        if let i = firstOutsideUnitInterval(images, count: total) {
            throw invalid(pixelRangeMessage(images[i], index: i, shape: m.inputShape))
        }
        return predict(images)
    }
}

// export: cnn_model_predict
public func exportModelPredict(_ model: OpaquePointer?, _ images: UnsafePointer<Float>?, _ n: Int32,
                               _ probabilities: UnsafeMutablePointer<Float>?) -> cnn_status {
    predict("cnn_model_predict", model, n, probabilities, logits: false, images: floatImages(images))
}

// export: cnn_model_predict_logits
public func exportModelPredictLogits(_ model: OpaquePointer?, _ images: UnsafePointer<Float>?, _ n: Int32,
                                     _ logits: UnsafeMutablePointer<Float>?) -> cnn_status {
    predict("cnn_model_predict_logits", model, n, logits, logits: true, images: floatImages(images))
}

// export: cnn_model_predict_uint8
public func exportModelPredictUInt8(_ model: OpaquePointer?, _ images: UnsafePointer<UInt8>?, _ n: Int32,
                                    _ probabilities: UnsafeMutablePointer<Float>?) -> cnn_status {
    predict("cnn_model_predict_uint8", model, n, probabilities, logits: false) { m, total, predict in
        let images = try required(images, "images")
        let s = m.inputShape
        let x = nhwcToNCHW(images, n: Int(n), c: s.c, h: s.h, w: s.w, total: total).map { Float($0) / 255 }
        return x.withUnsafeBufferPointer { predict($0.baseAddress!) }
    }
}

// export: cnn_top_k
public func exportTopK(_ scores: UnsafePointer<Float>?, _ n: Int32, _ classes: Int32, _ k: Int32,
                       _ indices: UnsafeMutablePointer<Int32>?, _ values: UnsafeMutablePointer<Float>?) -> cnn_status {
    guarded("cnn_top_k") {
        let scores = try required(scores, "scores"), indices = try required(indices, "indices")
        guard n >= 1, n <= 1 << 24 else { throw invalid("n must be from 1 to 2^24, not \(n)") }
        guard classes >= 1, classes <= 1 << 20 else { throw invalid("classes must be from 1 to 2^20, not \(classes)") }
        guard k >= 1, k <= classes else { throw invalid("k must be from 1 to classes (\(classes)), not \(k)") }
        let c = Int(classes), kk = Int(k)
        var order = [Int](repeating: 0, count: c)
        for row in 0..<Int(n) {
            let s = scores + row * c
            for j in 0..<c { order[j] = j }
            // NaN ranks lowest; ties keep the lower index first.
            order.sort { a, b in
                let x = s[a], y = s[b]
                if x.isNaN != y.isNaN { return y.isNaN }
                return x > y || (x == y && a < b) || (x.isNaN && y.isNaN && a < b)
            }
            for j in 0..<kk {
                indices[row * kk + j] = Int32(order[j])
                values?[row * kk + j] = s[order[j]]
            }
        }
    }
}

/// Why a float pixel is refused: where it is, and what to do.
func pixelRangeMessage(_ v: Float, index i: Int, shape s: Shape) -> String {
    let n = i / s.count, c = (i % s.count) / (s.h * s.w), y = (i % (s.h * s.w)) / s.w, x = i % s.w
    let hint = v.isFinite && v > 1 && v <= 255 ? "; divide 8-bit values by 255 (or pass uint8 images)" : ""
    return "images[\(i)] (image \(n), channel \(c), row \(y), column \(x)) is \(v): float pixels must be in [0, 1]\(hint)"
}
