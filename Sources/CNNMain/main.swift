// The `cnn` executable: runs the copy of the tool compiled for the kernel level this CPU supports
// (Sources/CNNDispatch), or says why none can run.
import CNNDispatch
import CNNTool
#if CNN_ALL_LEVELS
import CNNToolAVX2
import CNNToolAVX512
#endif

switch KernelSelection.levelOrExit(program: "cnn") {
#if CNN_ALL_LEVELS
case .avx512: CNNToolAVX512.runTool()
case .avx2: CNNToolAVX2.runTool()
#endif
default: CNNTool.runTool()
}
