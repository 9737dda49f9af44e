import ArgumentParser
import CNN
import Foundation

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the most likely classes of images, by name, with their probabilities.",
        discussion: "cnn predict --model fashion.safetensors shirt.jpg boot.jpg --top 3")

    @Option(help: "Model file (.safetensors, or an ONNX file to import: .onnx).") var model: String
    @Argument(help: "JPEG files to classify.") var files: [String] = []
    @Option(help: "Or a dataset: a folder of class sub-folders of JPEGs, or an IDX images file.") var data: String?
    @Option(help: "How many classes to show per image.") var top: Int = 1
    @Option(help: "Use only the first N images of --data.") var limit: Int?
    @Flag(help: "Print JSON (one array).") var json = false
    @Flag(name: .customLong("map-classes"), help: "Match the classes of --data to the model's by name; default: they must be the model's, in its order.")
    var mapClasses = false
    @OptionGroup var images: ImageOptions
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            guard top >= 1 else { throw CNNError(.invalidArgument, "--top must be at least 1") }
            guard !files.isEmpty || data != nil else { throw CNNError(.invalidArgument, "give JPEG files to classify, or --data") }
            let m = try Model.load(from: model)
            var options = try images.options()
            options.fit = m.imageFit
            let k = m.numClasses, shown = min(top, k)
            var entries: [String] = []
            func report(_ name: String, _ row: ArraySlice<Float>, label: String?) {
                let base = row.startIndex
                let best = (0..<k).sorted { row[base + $0] > row[base + $1] || (row[base + $0] == row[base + $1] && $0 < $1) }.prefix(shown)
                if json {
                    let list = best.map { "{\"class\":\(jsonString(m.classNames[$0])),\"index\":\($0),\"probability\":\(format(Double(row[base + $0]), 6))}" }
                    entries.append("{\"image\":\(jsonString(name)),\(label.map { "\"label\":\(jsonString($0))," } ?? "")\"top\":[\(list.joined(separator: ","))]}")
                } else {
                    let list = best.map { "\(m.classNames[$0]) \(format(Double(row[base + $0]), 3))" }.joined(separator: ", ")
                    print("\(name): \(list)" + (label.map { "   (label: \($0))" } ?? ""))
                }
            }
            // A file that cannot be read or decoded is named on stderr; the others are still classified.
            var failures: [CNNError] = []
            for file in files {
                do {
                    let probs = try m.predictJPEG(file: file, options: options.jpeg)
                    report(file, probs[...], label: nil)
                } catch let e as CNNError {
                    failures.append(e)
                    printError("cnn: error: \(e.message)")
                }
            }
            if let data {
                var dataset = try loadDataset(data, input: m.inputShape, options: options, quiet: json)
                if mapClasses { dataset = try dataset.mappingClasses(to: m.classNames) }
                try dataset.checkClasses(of: m, what: data)
                if let limit {
                    guard limit >= 1 else { throw CNNError(.invalidArgument, "--limit must be at least 1") }
                    dataset = try dataset.prefix(limit)
                }
                var pixels = [Float](repeating: 0, count: dataset.count * dataset.shape.count)
                try pixels.withUnsafeMutableBufferPointer { try dataset.copy(first: 0, count: dataset.count, images: $0.baseAddress!, labels: nil) }
                let probs = pixels.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: dataset.count) }
                for n in 0..<dataset.count {
                    let label = Int(dataset.labels[n])
                    report(dataset.samplePaths?[n] ?? "\(data)#\(n)", probs[(n * k)..<((n + 1) * k)], label: label < dataset.classNames.count ? dataset.classNames[label] : String(label))
                }
            }
            if json { print("[" + entries.joined(separator: ",\n") + "]") }
            if !failures.isEmpty { throw ExitCode(1) }
        }
    }
}
