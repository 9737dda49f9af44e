import ArgumentParser
import CNN
import Foundation

@main
struct CNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "Train, evaluate and run convolutional networks (SwiftCNN).",
        subcommands: [Train.self, Eval.self, Predict.self, Summary.self])

    /// Like ParsableCommand's main, but every error is one line on stderr (help still prints whole).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = self.message(for: error)
            if !message.isEmpty {
                let first = message.split(separator: "\n").first.map(String.init) ?? message
                printError(first.hasPrefix("cnn: ") ? first : "cnn: error: " + first.replacingOccurrences(of: "Error: ", with: ""))
            }
            Foundation.exit(code.rawValue)
        }
    }
}

/// Runs a command body, turning every engine error into one line on stderr and exit status 1.
func run(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as CNNError {
        FileHandle.standardError.write(Data(("cnn: error: " + e.message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
        throw ExitCode(1)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// `--spec` takes the architecture text itself or a file that holds it.
func architectureText(_ spec: String) throws -> String {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory), !isDirectory.boolValue {
        guard let data = FileManager.default.contents(atPath: spec), let text = String(data: data, encoding: .utf8) else {
            throw CNNError(.io, "\(spec): cannot read the architecture file")
        }
        return text
    }
    return spec
}

/// Loads a dataset from a path: an IDX images file (its labels file beside it).
func loadDataset(_ path: String, classes: String?) throws -> Dataset {
    var names: [String]? = nil
    if let classes {
        if FileManager.default.fileExists(atPath: classes) {
            names = try IDX.readClassNames(classes)
        } else {
            names = classes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }
    return try IDX.load(images: path, classNames: names)
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Worker threads (results are identical for any number).")
    var threads: Int = 1

    func apply() throws {
        guard threads >= 1, threads <= 256 else { throw CNNError(.invalidArgument, "--threads must be from 1 to 256, not \(threads)") }
        ThreadPool.setThreads(threads)
    }
}

func format(_ value: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", value) }

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}
