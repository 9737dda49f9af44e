import ArgumentParser
import CNN
import Foundation

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network's layers, output shapes, parameters and FLOPs.")

    @Argument(help: "An architecture text, a file holding one, or a model file (.safetensors).")
    var specOrModel: String

    func run() throws {
        try CNNCommandRun {
            let model: Model
            if specOrModel.hasSuffix(".safetensors") || isSafetensors(specOrModel) {
                model = try Model.load(from: specOrModel)
            } else {
                model = try Model(architecture: Architecture(parsing: architectureText(specOrModel)))
            }
            print(model.architecture.text)
            print(model.summary)
        }
    }

    private func isSafetensors(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 9)) ?? Data()
        return head.count == 9 && head[8] == UInt8(ascii: "{")
    }
}
