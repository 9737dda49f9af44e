import ArgumentParser
import CNN
import Foundation

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a model: loss, accuracy, per-class accuracy, confusion matrix.")

    @Option(help: "Model file (.safetensors, or an ONNX file to import: .onnx).") var model: String
    @Option(help: "Data: a folder of class sub-folders of JPEGs, or an IDX images file.") var data: String
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Use only the first N samples.") var limit: Int?
    @Flag(name: .customLong("map-classes"), help: "Match the data's classes to the model's by name (a test set that lacks some classes or orders them otherwise); default: they must be the model's, in its order.")
    var mapClasses = false
    @Option(help: "Test-time augmentation: 'flip' averages each image's logits with its mirror's (for a model trained with --flip).")
    var tta: String?
    @OptionGroup var images: ImageOptions
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            guard tta == nil || tta == "flip" else { throw CNNError(.invalidArgument, "--tta must be 'flip', not '\(tta!)'") }
            let m = try Model.load(from: model)
            var options = try images.options()
            options.fit = m.imageFit
            var dataset = try loadDataset(data, input: m.inputShape, options: options, quiet: json)
            if mapClasses { dataset = try dataset.mappingClasses(to: m.classNames) }
            try dataset.checkClasses(of: m, what: data)
            if let limit {
                guard limit >= 1 else { throw CNNError(.invalidArgument, "--limit must be at least 1") }
                dataset = try dataset.prefix(limit)
            }
            let start = Date()
            let e = try evaluate(model: m, on: dataset, flipAverage: tta == "flip")
            let seconds = Date().timeIntervalSince(start)
            let names = m.classNames
            if json {
                let perClass = zip(names, e.perClassAccuracy).map { "\(jsonString($0)):\(format($1, 6))" }.joined(separator: ",")
                let confusion = e.confusion.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }.joined(separator: ",")
                print("{\"count\":\(e.count),\"loss\":\(format(e.loss, 6)),\"accuracy\":\(format(e.accuracy, 6)),\"per_class_accuracy\":{\(perClass)},\"confusion\":[\(confusion)],\"classes\":[\(names.map(jsonString).joined(separator: ","))],\"seconds\":\(format(seconds, 3))}")
                return
            }
            print("images:   \(e.count)")
            print("loss:     \(format(e.loss))")
            print("accuracy: \(format(e.accuracy))")
            print("\nper-class accuracy:")
            let width = names.map(\.count).max() ?? 1
            for (name, acc) in zip(names, e.perClassAccuracy) {
                print("  " + name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + format(acc))
            }
            print("\nconfusion matrix (rows: true class, columns: predicted):")
            let cell = max(5, String(e.confusion.flatMap { $0 }.max() ?? 0).count + 1)
            for (i, row) in e.confusion.enumerated() {
                let cells = row.map { String($0).leftPadded(cell) }.joined()
                print("  " + names[i].padding(toLength: width, withPad: " ", startingAt: 0) + cells)
            }
        }
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
