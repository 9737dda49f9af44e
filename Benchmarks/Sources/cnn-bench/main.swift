// cnn-bench: runs the benchmarks of the engine copy for this CPU's kernel level (capped by CNN_CPU),
// as libcnn.so and the `cnn` tool do, so the default build is what is measured.
import Bench
import BenchAVX2
import BenchAVX512
import CNNDispatch

let level = KernelSelection.levelOrExit(program: "cnn-bench")
print("cnn-bench: \(KernelSelection.current.description)")
switch level {
case .avx512: try BenchAVX512.runBench()
case .avx2: try BenchAVX2.runBench()
case .baseline: try Bench.runBench()
}
