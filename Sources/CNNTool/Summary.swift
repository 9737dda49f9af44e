import ArgumentParser
import CNN
import Foundation

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network's layers, output shapes, parameters and FLOPs.")

    @Argument(help: "An architecture text, a file holding one, or a model file (.safetensors, or .onnx to import).")
    var specOrModel: String

    @Flag(help: "Run the network and show each layer's forward time per prediction (an architecture text runs with random weights).")
    var time = false

    @Option(help: "With --time: images per prediction.")
    var batch = 1

    @Option(help: "With --time: predictions to average over (after one to warm up).")
    var rounds = 20

    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            let isModel = specOrModel.hasSuffix(".safetensors") || Model.isONNXPath(specOrModel) || isSafetensors(specOrModel)
            if time {
                let model = isModel ? try Model.load(from: specOrModel)
                                    : try Model(architecture: Architecture(parsing: architectureText(specOrModel)), seed: 1)
                let table = try model.timedSummary(batch: batch, rounds: rounds)
                print(model.architecture.text)
                print(table)
            } else if isModel {
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
