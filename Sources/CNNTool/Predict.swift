import ArgumentParser
import CNN
import Foundation

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the most likely classes of images, with their probabilities.")

    @Option(help: "Model file (.safetensors).") var model: String
    @Option(help: "Data: an IDX images file.") var data: String
    @Option(help: "How many classes to show per image.") var top: Int = 1
    @Option(help: "Use only the first N images.") var limit: Int?
    @Flag(help: "Print JSON (one array).") var json = false
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            guard top >= 1 else { throw CNNError(.invalidArgument, "--top must be at least 1") }
            let m = try Model.load(from: model)
            var dataset = try IDX.load(images: data, classNames: nil)
            if let limit {
                guard limit >= 1 else { throw CNNError(.invalidArgument, "--limit must be at least 1") }
                dataset = try dataset.prefix(limit)
            }
            guard dataset.shape.c == m.inputShape.c, dataset.shape.h == m.inputShape.h, dataset.shape.w == m.inputShape.w else {
                throw CNNError(.shapeMismatch, "\(data): images of \(dataset.shape), the model takes \(m.inputShape)")
            }
            guard case .bytes(let pixels) = dataset.pixels else { return }
            let images = pixels.map { Float($0) / 255 }
            let probs = images.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: dataset.count) }
            let k = m.numClasses, shown = min(top, k)
            var entries: [String] = []
            for n in 0..<dataset.count {
                let row = Array(probs[(n * k)..<((n + 1) * k)])
                let best = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(shown)
                if json {
                    let list = best.map { "{\"class\":\(jsonString(m.classNames[$0])),\"index\":\($0),\"probability\":\(format(Double(row[$0]), 6))}" }
                    entries.append("{\"image\":\(n),\"label\":\(dataset.labels[n]),\"top\":[\(list.joined(separator: ","))]}")
                } else {
                    let list = best.map { "\(m.classNames[$0]) \(format(Double(row[$0]), 3))" }.joined(separator: ", ")
                    print("\(n): \(list)   (label: \(m.classNames[Int(dataset.labels[n])]))")
                }
            }
            if json { print("[" + entries.joined(separator: ",\n") + "]") }
        }
    }
}
