import CNN
import Foundation

let referenceSpec = "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"
let wideSpec = "input(3,32,32) conv(64,3,pad=1) relu conv(64,3,pad=1) relu maxpool(2) conv(128,3,pad=1) relu conv(128,3,pad=1) relu maxpool(2) flatten dense(10)"

/// Random images and labels: the speed does not depend on the values.
func randomDataset(_ shape: Shape, count: Int) throws -> Dataset {
    var rng = Random(seed: 9)
    let bytes = (0..<(count * shape.count)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    let labels = (0..<count).map { _ in Int32(rng.below(10)) }
    return try Dataset(bytes: bytes, labels: labels, shape: shape, classNames: (0..<10).map(String.init))
}

func peakRSSMB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

func networkBenchmarks() throws {
    let env = ProcessInfo.processInfo.environment
    if let profile = env["CNN_BENCH_PROFILE"] { return try profileLoop(profile) }
    let quick = env["CNN_BENCH_QUICK"] != nil
    // While working on one case: CNN_BENCH_NETS=ref (or wide), CNN_BENCH_THREADS=2.
    let nets = env["CNN_BENCH_NETS"].map { $0.split(separator: ",").map(String.init) } ?? ["ref", "wide"]
    let threadCounts = env["CNN_BENCH_THREADS"].map { $0.split(separator: ",").compactMap { Int($0) } } ?? [1, 2]
    print("Networks: training images/s (median of 5 segments after warm-up), inference latency and throughput")
    let widths = [8, 8, 10, 12, 12, 12, 12, 12]
    print(row(["net", "threads", "train b16", "train b64", "train b256", "lat b1 med", "lat b1 p99", "infer b256"], widths))
    for (name, spec, images) in [("ref", referenceSpec, 4096), ("wide", wideSpec, quick ? 256 : 512)] where nets.contains(name) {
        let model = try Model(architecture: Architecture(parsing: spec), seed: 1)
        let data = try randomDataset(model.inputShape, count: images)
        for threads in threadCounts {
            ThreadPool.setThreads(threads)
            var train: [Int: Double] = [:]
            for batch in [16, 64, 256] {
                var s = TrainingSettings()
                s.batchSize = batch
                s.optimizer.momentum = 0.9
                s.normalization = ([Float](repeating: 0.5, count: model.inputShape.c), [Float](repeating: 0.25, count: model.inputShape.c))
                let segment = try data.prefix(max(batch * (name == "wide" ? 2 : 8), batch))
                let trainer = try Trainer(model: model, settings: s)
                try trainer.fit(segment)   // warm-up: plans the buffers
                let t = try median(quick ? 3 : 5) { try Trainer(model: model, settings: s).fit(segment) }
                train[batch] = Double(segment.count) / t
            }
            // Inference: batch 1 latency over many calls, then batch 256 throughput.
            let sample = model.inputShape.count
            var x = [Float](repeating: 0.5, count: 256 * sample)
            var rng = Random(seed: 2)
            for i in 0..<x.count { x[i] = rng.uniform() }
            let calls = name == "wide" ? 200 : 2000
            var times: [Double] = []
            try x.withUnsafeBufferPointer { xp in
                for i in 0..<(calls + calls / 10) {
                    let t0 = now()
                    _ = model.predict(xp.baseAddress!, batch: 1)
                    if i >= calls / 10 { times.append(now() - t0) }
                }
                _ = try median(1) { _ = model.predict(xp.baseAddress!, batch: 256) }
            }
            times.sort()
            let b256 = x.withUnsafeBufferPointer { xp in median(5) { _ = model.predict(xp.baseAddress!, batch: 256) } }
            let med = times[times.count / 2] * 1e6, p99 = times[times.count * 99 / 100] * 1e6
            print(row([name, String(threads), String(format: "%.0f", train[16]!), String(format: "%.0f", train[64]!),
                       String(format: "%.0f", train[256]!), String(format: "%.0f us", med), String(format: "%.0f us", p99),
                       String(format: "%.0f", 256 / b256)], widths))
            results["\(name) threads=\(threads)"] = ["train_b16": train[16]!, "train_b64": train[64]!, "train_b256": train[256]!,
                                                      "latency_b1_median_us": med, "latency_b1_p99_us": p99, "infer_b256": 256 / b256]
        }
        if name == "ref" {
            results["ref peak_rss_mb"] = peakRSSMB()
            print(String(format: "peak RSS after the reference network's runs: %.0f MB", peakRSSMB()))
        }
    }
}

/// CNN_BENCH_PROFILE=train|infer|latency (with CNN_BENCH_NETS, CNN_BENCH_THREADS, CNN_BENCH_BATCH):
/// runs one case for about 10 seconds, for `perf record`; `layers` prints each layer's forward
/// time (CNN_BENCH_LAYER=i: layer i alone), `pool` the cost of a parallel region.
func profileLoop(_ what: String) throws {
    let env = ProcessInfo.processInfo.environment
    let spec = env["CNN_BENCH_NETS"] == "wide" ? wideSpec : referenceSpec
    let threads = Int(env["CNN_BENCH_THREADS"] ?? "2") ?? 2
    let batch = what == "latency" ? 1 : Int(env["CNN_BENCH_BATCH"] ?? "64") ?? 64
    ThreadPool.setThreads(threads)
    let model = try Model(architecture: Architecture(parsing: spec), seed: 1)
    let start = now()
    var images = 0
    if what == "pool" {
        // The cost of one parallel region of 2 tasks: empty, and each task summing 1,000 floats.
        let data = [Float](repeating: 1, count: 2000)
        for work in [0, 1000] {
            var times: [Double] = []
            data.withUnsafeBufferPointer { d in
                for _ in 0..<20000 {
                    let t = now()
                    ThreadPool.shared.parallelFor(2) { i in
                        var s: Float = 0
                        for j in 0..<work { s += d[i * 1000 + j] }
                        if s < 0 { print(s) }
                    }
                    times.append(now() - t)
                }
            }
            times.sort()
            print(String(format: "region of 2 tasks, %d floats each: median %.2f us, p90 %.2f us", work, times[times.count / 2] * 1e6, times[times.count * 9 / 10] * 1e6))
        }
        return
    }
    if what == "layers" {
        // Forward time of each layer at this batch size (median of 2000 calls); with
        // CNN_BENCH_LAYER=i, layer i's forward alone for about 10 seconds (for perf).
        var rng = Random(seed: 1)
        var h = FloatBuffer(count: batch * model.inputShape.count)
        if let only = env["CNN_BENCH_LAYER"].flatMap({ Int($0) }), model.layers.indices.contains(only) {
            for layer in model.layers[..<only] { h = layer.forward(h, batch: batch, training: false, rng: &rng) }
            var calls = 0
            while now() - start < 10 { _ = model.layers[only].forward(h, batch: batch, training: false, rng: &rng); calls += 1 }
            print(String(format: "%@: %.2f us per call", model.layers[only].spec.text, (now() - start) / Double(calls) * 1e6))
            return
        }
        for layer in model.layers {
            var times: [Double] = []
            var out = h
            for _ in 0..<2000 {
                let t = now()
                out = layer.forward(h, batch: batch, training: false, rng: &rng)
                times.append(now() - t)
            }
            times.sort()
            print(String(format: "%-28@ %8.1f us", layer.spec.text, times[times.count / 2] * 1e6))
            h = out
        }
        return
    }
    if what == "train" {
        let data = try randomDataset(model.inputShape, count: batch * 16)
        var s = TrainingSettings()
        s.batchSize = batch
        s.optimizer.momentum = 0.9
        s.normalization = ([Float](repeating: 0.5, count: model.inputShape.c), [Float](repeating: 0.25, count: model.inputShape.c))
        s.epochs = 1_000_000
        // Stops by cancelling from the progress callback after 10 seconds.
        _ = try? Trainer(model: model, settings: s).fit(data, onBatch: { _ in images += batch; return now() - start < 10 })
    } else {
        let x = [Float](repeating: 0.5, count: batch * model.inputShape.count)
        var times: [Double] = []
        times.reserveCapacity(1 << 20)
        x.withUnsafeBufferPointer { xp in
            while now() - start < 10 {
                let t = now()
                _ = model.predict(xp.baseAddress!, batch: batch)
                if times.count < 1 << 20 { times.append(now() - t) }
                images += batch
            }
        }
        if what == "latency" {
            // The median and p99 of the calls, as `net` reports them (over a longer run).
            times.sort()
            print(String(format: "latency median %.1f us, p99 %.1f us", times[times.count / 2] * 1e6, times[times.count * 99 / 100] * 1e6))
        }
    }
    print(String(format: "%@ batch %d, %d threads: %.0f images/s", what, batch, threads, Double(images) / (now() - start)))
}
