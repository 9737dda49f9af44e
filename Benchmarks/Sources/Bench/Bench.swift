// cnn-bench: SwiftCNN's benchmarks. Each prints a table and writes JSON (see README.md, Benchmarks).
//
//   cnn-bench gemm [--out FILE.json]   SGEMM GFLOP/s, 1 and 2 threads, against a naive loop and numpy
//   cnn-bench net  [--out FILE.json]   the reference and wide networks: training and inference speed
//   cnn-bench jpeg [--out FILE.json]   JPEG decode throughput against libjpeg-turbo's own C loop,
//                                      and training from a JPEG folder against training from memory
import CJPEGBaseline
import CNN
import Foundation

let args = CommandLine.arguments
let command = args.count > 1 ? args[1] : "jpeg"
let outPath = args.firstIndex(of: "--out").flatMap { args.indices.contains($0 + 1) ? args[$0 + 1] : nil }
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

func now() -> Double { monotonicSeconds() }

/// Median of `repeats` timings of `body`, in seconds.
func median(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
    var times: [Double] = []
    for _ in 0..<repeats {
        let t = now()
        try body()
        times.append(now() - t)
    }
    return times.sorted()[repeats / 2]
}

func row(_ cells: [String], _ widths: [Int]) -> String {
    zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
}

var results: [String: Any] = [:]

func jpegBenchmarks() throws {
    // Files: the shipped 28×28 grayscale test JPEGs, and 224×224 RGB photos-like images.
    let folder = root + "/data/fashion-mnist-jpeg/test"
    var small: [[UInt8]] = []
    for cls in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() {
        for f in try FileManager.default.contentsOfDirectory(atPath: folder + "/" + cls).sorted() {
            small.append([UInt8](try Data(contentsOf: URL(fileURLWithPath: folder + "/" + cls + "/" + f))))
        }
    }
    var large: [[UInt8]] = []
    var rng = Random(seed: 1)
    for i in 0..<64 {
        var image = Image(width: 224, height: 224, channels: 3)
        for y in 0..<224 { for x in 0..<224 { for c in 0..<3 {
            let v = 128 + 100 * sin(Double(x + i) * 0.05 + Double(c)) * cos(Double(y) * 0.03) + Double(rng.below(24))
            image[x, y, c] = UInt8(max(0, min(255, v)))
        } } }
        large.append(try JPEG.encode(image, quality: 90))
    }
    print("JPEG decode throughput (images/s, median of 5 passes; libjpeg-turbo's own C loop in the same run)")
    let widths = [24, 12, 12, 8]
    print(row(["files", "SwiftCNN", "libjpeg C", "ratio"], widths) + "   (SwiftCNN: decoding into a reused image; a new image per call in brackets)")
    var out = Array(repeating: UInt8(0), count: 224 * 224 * 3)
    for (name, files, passes) in [("28x28 gray (500)", small, 20), ("224x224 RGB (64)", large, 3)] {
        var image = Image(width: 0, height: 0, channels: 1, pixels: [])
        let ours = try median(5) { for _ in 0..<passes { for f in files { try JPEG.decode(f, into: &image) } } }
        let fresh = try median(5) { for _ in 0..<passes { for f in files { _ = try JPEG.decode(f) } } }
        let theirs = median(5) {
            for _ in 0..<passes { for f in files { _ = f.withUnsafeBufferPointer { baseline_decode($0.baseAddress, $0.count, &out, out.count) } } }
        }
        let n = Double(files.count * passes)
        let ratio = theirs / ours
        print(row([name, String(format: "%.0f", n / ours), String(format: "%.0f", n / theirs), String(format: "%.2f", ratio)], widths)
              + String(format: "   (%.0f, %.2f)", n / fresh, theirs / fresh))
        results["decode \(name)"] = ["swiftcnn_images_per_s": n / ours, "libjpeg_images_per_s": n / theirs, "ratio": ratio,
                                     "swiftcnn_new_image_images_per_s": n / fresh, "ratio_new_image": theirs / fresh]
    }

    // Training the reference network from the JPEG folder versus from memory (IDX), same images.
    let spec = "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"
    let memory = try IDX.load(images: root + "/data/fashion-mnist-sample/train-images-idx3-ubyte.gz")
    var options = FolderOptions(channels: 1, height: 28, width: 28)
    let cached = try Dataset.fromFolder(root + "/data/fashion-mnist-jpeg/train", options: options)
    options.cacheBytes = 0
    let streamed = try Dataset.fromFolder(root + "/data/fashion-mnist-jpeg/train", options: options)
    ThreadPool.setThreads(2)
    func trainRate(_ d: Dataset, loaders: Int = 1) throws -> Double {
        var s = TrainingSettings()
        s.epochs = 1
        s.optimizer.momentum = 0.9
        s.loaderThreads = loaders
        let m = try Model(architecture: Architecture(parsing: spec), seed: 1)
        let t = try median(3) { try Trainer(model: m, settings: s).fit(d) }
        return Double(d.count) / t
    }
    print("\nTraining the reference network, 2 threads, batch 64 (images/s, median of 3 epochs of 2,000 images)")
    let base = try trainRate(memory)
    let tw = [40, 12, 8]
    print(row(["data", "images/s", "ratio"], tw))
    print(row(["IDX in memory", String(format: "%.0f", base), "1.00"], tw))
    for (name, d, loaders) in [("JPEG folder, decoded into memory", cached, 1), ("JPEG folder, decoded per batch (1 loader)", streamed, 1),
                               ("JPEG folder, decoded per batch (2 loaders)", streamed, 2)] {
        let r = try trainRate(d, loaders: loaders)
        print(row([name, String(format: "%.0f", r), String(format: "%.2f", r / base)], tw))
        results["train \(name)"] = ["images_per_s": r, "ratio_to_memory": r / base]
    }
    results["train IDX in memory"] = ["images_per_s": base]
}

/// Runs the benchmark the command line names (cnn-bench calls the copy of this module compiled for
/// the kernel level in use, as the `cnn` tool does).
public func runBench() throws {
    switch command {
    case "jpeg": try jpegBenchmarks()
    case "gemm": try gemmBenchmarks()
    case "net": try networkBenchmarks()
    default:
        FileHandle.standardError.write(Data("usage: cnn-bench gemm|net|jpeg [--out FILE.json]\n".utf8))
        exit(2)
    }
    if let outPath {
        let data = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: outPath))
        print("\nwrote \(outPath)")
    }
}
