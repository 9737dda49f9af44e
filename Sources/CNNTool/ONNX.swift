import ArgumentParser
import CNN

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as ONNX (opset 17): input 'pixels' (batch, C, H, W) in [0, 1], outputs 'logits' and 'probabilities'.")

    @Argument(help: "The model file (.safetensors, or .onnx).") var model: String
    @Argument(help: "The ONNX file to write (replaced atomically).") var output: String
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            guard Model.isONNXPath(output) else { throw CNNError(.invalidArgument, "the output '\(output)' must end in .onnx") }
            let m = try Model.load(from: model)
            try m.exportONNX(to: output)
            print("wrote \(output): \(m.architecture.text)")
        }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read an ONNX model (from torch.onnx.export, or cnn export) and save it as a SwiftCNN model file.")

    @Argument(help: "The ONNX file.") var onnx: String
    @Argument(help: "The model file to write (.safetensors, replaced atomically).") var output: String
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            let m = try Model.importONNX(from: onnx)
            try m.save(to: output)
            print(m.architecture.text)
            print(m.summary)
        }
    }
}
