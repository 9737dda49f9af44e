/// Forward times per layer, for `cnn summary --time`: where a network's time goes, layer by
/// layer, as the engine runs it (a layer fused into the one before it, a batch norm folded into
/// its convolution, shows the little time it takes on its own).
final class LayerClock {
    private(set) var seconds: [ObjectIdentifier: Double] = [:]

    /// Runs `body` (the layer's forward), adding the wall time it took to the layer's.
    @inline(__always)
    func time(_ layer: Layer, _ body: () -> FloatBuffer) -> FloatBuffer {
        let start = monotonicSeconds()
        let y = body()
        seconds[ObjectIdentifier(layer), default: 0] += monotonicSeconds() - start
        return y
    }
}

extension Model {
    /// Each layer's mean forward time in seconds per prediction of `batch` images (random pixels
    /// in [0, 1)), over `rounds` predictions after one to warm up: top-level layers, blocks (their
    /// sequences and their own work) and the layers inside blocks, by identity. The predictions
    /// are the model's own (same paths, same threads).
    public func layerTimes(batch: Int, rounds: Int) throws -> [ObjectIdentifier: Double] {
        guard batch >= 1, batch <= 4096, rounds >= 1, rounds <= 1_000_000 else {
            throw CNNError(.invalidArgument, "layer times: batch must be 1...4096 and rounds 1...1000000 (got \(batch), \(rounds))")
        }
        let (count, overflow) = batch.multipliedReportingOverflow(by: inputShape.count)
        guard !overflow, count <= Model.predictionFloats * 4 else {
            throw CNNError(.invalidArgument, "layer times: \(batch) images of \(inputShape) are more than \(Model.predictionFloats * 4) values")
        }
        let images = try FloatBuffer(count: count, for: "layer times' images")
        var rng = Random(seed: 1)
        for i in 0..<count { images.pointer[i] = rng.uniform() }
        _ = predict(images.pointer, batch: batch)
        let clock = LayerClock()
        setClock(clock)
        defer { setClock(nil) }
        for _ in 0..<rounds { _ = predict(images.pointer, batch: batch) }
        return clock.seconds.mapValues { $0 / Double(rounds) }
    }

    /// The summary with each layer's time (`layerTimes`), and a last line that says how it was
    /// measured (`cnn summary --time`, `cnn_model_summary_timed`).
    public func timedSummary(batch: Int, rounds: Int) throws -> String {
        let times = try layerTimes(batch: batch, rounds: rounds)
        return summary(times: times) + "\nbatch \(batch), \(rounds) predictions, \(ThreadPool.shared.threads) threads"
    }
}
