import CNN
import Foundation

/// The shapes: square ones, and the reference network's convolutions at batch 64 as this engine
/// runs them (per sample, so N is one image's positions; the batch is the count).
struct GemmShape {
    var name: String
    var m: Int, n: Int, k: Int
    var count: Int = 1
    var transposeA = false
}

let gemmShapes = [
    GemmShape(name: "256^3", m: 256, n: 256, k: 256),
    GemmShape(name: "512^3", m: 512, n: 512, k: 512),
    GemmShape(name: "1024^3", m: 1024, n: 1024, k: 1024),
    GemmShape(name: "conv1 fwd (32x784x9) x64", m: 32, n: 784, k: 9, count: 64),
    GemmShape(name: "conv2 fwd (64x196x288) x64", m: 64, n: 196, k: 288, count: 64),
    GemmShape(name: "conv2 dX (288x196x64)' x64", m: 288, n: 196, k: 64, count: 64, transposeA: true),
    GemmShape(name: "dense fwd (64x128x3136)", m: 64, n: 128, k: 3136),
]

func naiveGemm(_ s: GemmShape, _ a: [Float], _ b: [Float], _ c: inout [Float]) {
    for i in 0..<s.m {
        for j in 0..<s.n {
            var acc: Float = 0
            for p in 0..<s.k { acc += (s.transposeA ? a[p * s.m + i] : a[i * s.k + p]) * b[p * s.n + j] }
            c[i * s.n + j] = acc
        }
    }
}

/// numpy (OpenBLAS) on the same shapes, in a subprocess of the same run; GFLOP/s by name.
func numpyGFLOPS(threads: Int) -> [String: Double] {
    var script = "import numpy as np, time, json\nr = {}\n"
    for s in gemmShapes {
        script += """
        a = np.random.rand(\(s.count), \(s.transposeA ? s.k : s.m), \(s.transposeA ? s.m : s.k)).astype(np.float32)
        b = np.random.rand(\(s.count), \(s.k), \(s.n)).astype(np.float32)
        def run():
            for i in range(\(s.count)): (a[i].T if \(s.transposeA ? "True" : "False") else a[i]) @ b[i]
        run()
        t = []
        for _ in range(5):
            s0 = time.perf_counter(); run(); t.append(time.perf_counter() - s0)
        r[\(String(reflecting: s.name))] = 2.0 * \(s.m * s.n * s.k * s.count) / sorted(t)[2] / 1e9

        """
    }
    script += "print(json.dumps(r))\n"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script]
    var env = ProcessInfo.processInfo.environment
    // OPENBLAS_CORETYPE/L2_SIZE are set on some machines to dodge old OpenBLAS bugs; they slow a
    // current numpy, so the benchmark unsets both (REFERENCE.md / env notes).
    env["OPENBLAS_CORETYPE"] = nil
    env["OPENBLAS_L2_SIZE"] = nil
    env["OPENBLAS_NUM_THREADS"] = String(threads)
    env["OMP_NUM_THREADS"] = String(threads)
    p.environment = env
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return [:] }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (try? JSONSerialization.jsonObject(with: data) as? [String: Double]) ?? [:]
}

func gemmBenchmarks() throws {
    print("SGEMM GFLOP/s (median of 5; numpy/OpenBLAS in the same run, same threads)")
    let widths = [30, 8, 10, 10, 10, 8]
    print(row(["shape", "threads", "SwiftCNN", "naive", "numpy", "ratio"], widths))
    var rng = Random(seed: 1)
    for threads in [1, 2] {
        ThreadPool.setThreads(threads)
        let numpy = numpyGFLOPS(threads: threads)
        for s in gemmShapes {
            let aCount = s.m * s.k, bCount = s.k * s.n, cCount = s.m * s.n
            let a = (0..<(aCount * s.count)).map { _ in rng.uniform() }, b = (0..<(bCount * s.count)).map { _ in rng.uniform() }
            var c = [Float](repeating: 0, count: cCount * s.count)
            let flops = 2.0 * Double(s.m * s.n * s.k * s.count)
            let t = median(5) {
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    if s.count == 1 {
                        sgemm(m: s.m, n: s.n, k: s.k, a: ap.baseAddress!, transposeA: s.transposeA, b: bp.baseAddress!, c: cp.baseAddress!)
                    } else {
                        // Per image, spread over the threads the way the convolution layer does.
                        ThreadPool.shared.parallelFor(s.count) { i in
                            sgemm(m: s.m, n: s.n, k: s.k, a: ap.baseAddress! + (i * aCount), transposeA: s.transposeA,
                                  b: bp.baseAddress! + i * bCount, c: cp.baseAddress! + i * cCount, parallel: false)
                        }
                    }
                } } }
            }
            // Check against the naive loop (first image) and time it once on the small shapes.
            var reference = [Float](repeating: 0, count: cCount)
            let first = GemmShape(name: s.name, m: s.m, n: s.n, k: s.k, transposeA: s.transposeA)
            let naiveStart = now()
            naiveGemm(first, Array(a[0..<aCount]), Array(b[0..<bCount]), &reference)
            let naive = 2.0 * Double(s.m * s.n * s.k) / (now() - naiveStart) / 1e9
            let worst = zip(reference, c[0..<cCount]).map { abs($0 - $1) / max(1, abs($0)) }.max() ?? 0
            guard worst < 1e-3 else { print("MISMATCH on \(s.name): \(worst)"); exit(1) }
            let ours = flops / t / 1e9
            let np = numpy[s.name]
            print(row([s.name, String(threads), String(format: "%.1f", ours), String(format: "%.1f", naive),
                       np.map { String(format: "%.1f", $0) } ?? "-", np.map { String(format: "%.2f", ours / $0) } ?? "-"], widths))
            results["sgemm \(s.name) threads=\(threads)"] = ["swiftcnn_gflops": ours, "naive_gflops": naive, "numpy_gflops": np ?? 0]
        }
    }
}
