import CNNDispatch
import Testing
@testable import CNN

/// The kernel level of the engine copy these tests are compiled against: the kernel and layer
/// suites are compiled once per level (Package.swift) and run where the CPU has it.
#if CNN_AVX512
let testedLevel = KernelLevel.avx512
#elseif CNN_FMA
let testedLevel = KernelLevel.avx2
#else
let testedLevel = KernelLevel.baseline
#endif
let levelRuns = KernelSelection.current.supported.map { testedLevel <= $0 } ?? false
let levelSkipReason: Comment = "this CPU lacks the \(testedLevel.name) level"

/// A deterministic stream of test values.
struct TestRandom {
    var rng: Random
    init(_ seed: UInt64) { rng = Random(seed: seed) }
    mutating func values(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<n).map { _ in lo + (hi - lo) * rng.uniform() }
    }
}

/// Builds a model from an architecture text and returns its layer `index`.
func makeLayer(_ text: String, index: Int = 0, seed: UInt64 = 7) throws -> (Model, Layer) {
    let model = try Model(architecture: Architecture(parsing: text), seed: seed)
    return (model, model.layers[index])
}

func maxRelativeError(_ a: [Double], _ b: [Double], floor: Double = 1) -> Double {
    zip(a, b).map { abs($0 - $1) / max(floor, abs($1)) }.max() ?? 0
}

/// The oracle for every layer: its fast forward must match the plain Double reference, and its
/// backward must match central finite differences of that reference (for the input and every
/// trainable parameter). The loss differentiated is L = Σ g · y for a random upstream gradient g.
func checkLayer(_ layer: Layer, batch: Int, training: Bool = true, seed: UInt64 = 1,
                inputs: [Float]? = nil, forwardTolerance: Double = 1e-4, gradientTolerance: Double = 2e-3) {
    var r = TestRandom(seed)
    let x = inputs ?? r.values(batch * layer.inputShape.count)
    let xb = FloatBuffer(x)
    var rng = Random(seed: 99)
    let params = layer.parameters
    for p in params { p.grad?.fill(0) }
    let y = layer.forward(xb, batch: batch, training: training, rng: &rng).array
    let outCount = batch * layer.outputShape.count
    let p64 = params.map { $0.value.array.map(Double.init) }
    let x64 = x.map(Double.init)
    let reference = Reference.forward(layer, x64, batch: batch, p64, training: training)
    #expect(reference.count == outCount)
    let forwardError = maxRelativeError(Array(y.prefix(outCount)).map(Double.init), reference)
    #expect(forwardError < forwardTolerance, "\(layer.spec.text): forward differs from the reference by \(forwardError)")

    let g = r.values(outCount)
    let dx = layer.backward(FloatBuffer(g), batch: batch, needInputGradient: true)?.array ?? []
    let g64 = g.map(Double.init)
    func objective(_ x: [Double], _ p: [[Double]]) -> Double {
        zip(Reference.forward(layer, x, batch: batch, p, training: training), g64).reduce(0) { $0 + $1.0 * $1.1 }
    }
    let h = 1e-5
    var numeric: [Double] = []
    for i in 0..<x64.count {
        var a = x64, b = x64
        a[i] += h; b[i] -= h
        numeric.append((objective(a, p64) - objective(b, p64)) / (2 * h))
    }
    let dxError = maxRelativeError(Array(dx.prefix(x.count)).map(Double.init), numeric)
    #expect(dxError < gradientTolerance, "\(layer.spec.text): input gradient differs from finite differences by \(dxError)")
    for (pi, p) in params.enumerated() {
        guard let grad = p.grad?.array else { continue }
        var num: [Double] = []
        for i in 0..<p.count {
            var a = p64, b = p64
            a[pi][i] += h; b[pi][i] -= h
            num.append((objective(x64, a) - objective(x64, b)) / (2 * h))
        }
        let e = maxRelativeError(grad.map(Double.init), num)
        #expect(e < gradientTolerance, "\(layer.spec.text): gradient of \(p.name) differs from finite differences by \(e)")
    }
}

let repositoryRoot: String = {
    let file = #filePath
    return "/" + file.split(separator: "/").dropLast(3).joined(separator: "/")
}()

let sampleDir = repositoryRoot + "/data/fashion-mnist-sample"

let referenceNetwork = "input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"

func temporaryPath(_ name: String) -> String {
    "/tmp/cnn-tests-\(getpid())-\(name)"
}

#if canImport(Glibc)
import Glibc
#endif

/// Serializes the tests that change the process-wide thread setting.
let threadSettingLock = TestLock()

final class TestLock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func with<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

/// Runs two models with the same weights side by side, at one and two threads, two steps for each
/// batch in training and at inference, and expects the same bits: the outputs, every gradient in
/// training, and the running statistics the steps update. Hold `threadSettingLock`.
func expectSameBits(_ a: Model, _ b: Model, batches: [Int], inputKept: Bool = false, input: (Float, Float) = (-1, 1)) {
    let count = a.inputShape.count, classes = a.numClasses
    for threads in [1, 2] {
        ThreadPool.setThreads(threads)
        defer { ThreadPool.setThreads(1) }
        for batch in batches {
            for step in 0..<2 {
                var r = TestRandom(UInt64(10 * batch + step))
                let x = FloatBuffer(r.values(batch * count, input.0, input.1)), g = r.values(batch * classes)
                for training in [true, false] {
                    var outputs: [[Float]] = [], gradients: [[[Float]]] = [], statistics: [[[Float]]] = []
                    for model in [a, b] {
                        var rng = Random(seed: UInt64(step))
                        outputs.append(model.forward(x, batch: batch, training: training, rng: &rng, inputKept: inputKept).array)
                        if training {
                            model.zeroGradients()
                            model.backward(FloatBuffer(g), batch: batch)
                            gradients.append(model.gradients.map { $0.array })
                        }
                        statistics.append(model.namedParameters.filter { $0.name.contains("running") }.map { $0.parameter.value.array })
                    }
                    let run = "\(threads) threads, batch \(batch), step \(step), training \(training)"
                    let outputsDiffer = zip(outputs[0], outputs[1]).filter { $0 != $1 }.count
                    #expect(outputsDiffer == 0, "outputs: \(outputsDiffer) differ, \(run)")
                    #expect(statistics[0] == statistics[1], "running statistics differ, \(run)")
                    if training {
                        let differ = zip(gradients[0], gradients[1]).map { zip($0, $1).filter { $0 != $1 }.count }
                        #expect(differ.allSatisfy { $0 == 0 }, "gradients: \(differ) values differ per tensor, \(run)")
                    }
                }
            }
        }
    }
}
