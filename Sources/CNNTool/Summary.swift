import ArgumentParser
import CNN
import Foundation

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network's layers, output shapes, parameters and FLOPs.")

    @Argument(help: "An architecture text, a file holding one, or a model file (.safetensors, or .onnx to import).")
    var specOrModel: String

    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            if specOrModel.hasSuffix(".safetensors") || Model.isONNXPath(specOrModel) || isSafetensors(specOrModel) {
                let model = try Model.load(from: specOrModel)
                print(model.architecture.text)
                print(model.summary)
            } else {
                let architecture = try Architecture(parsing: architectureText(specOrModel))
                print(architecture.text)
                print(try Model.summary(of: architecture))
            }
        }
    }

    private func isSafetensors(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 9)) ?? Data()
        return head.count == 9 && head[8] == UInt8(ascii: "{")
    }
}
