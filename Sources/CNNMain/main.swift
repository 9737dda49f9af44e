// The `cnn` executable: runs the copy of the tool compiled for the kernel level this CPU supports
// (Sources/CNNDispatch), or says why none can run.
import CNNDispatch
import CNNTool
import CNNToolAVX2
import CNNToolAVX512

switch KernelSelection.levelOrExit(program: "cnn") {
case .avx512: CNNToolAVX512.runTool()
case .avx2: CNNToolAVX2.runTool()
case .baseline: CNNTool.runTool()
}
