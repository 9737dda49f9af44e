import ArgumentParser
import CNN
import CNNABI
import CNNDispatch
import Foundation

/// Runs the tool (CNNMain calls the copy of this module built for the chosen kernel level).
public func runTool() {
    CNNCommand.main()
}

/// `cnn --version`: the library's version (include/cnn.h) and what this process runs on.
let versionText = "SwiftCNN \(CNN_VERSION_MAJOR).\(CNN_VERSION_MINOR).\(CNN_VERSION_PATCH) "
    + "(\(KernelSelection.current.description); threads: \(ThreadPool.shared.threads))"

struct CNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "Train, evaluate and run convolutional networks (SwiftCNN).",
        version: versionText,
        subcommands: [Train.self, Eval.self, Predict.self, Summary.self, Export.self, Import.self, IDXToJPEG.self])

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

/// Progress text on stderr without a newline (a terminal's line redrawn with \r).
func printProgress(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// `--spec` takes the architecture text itself or a file that holds it. A text with no layer in
/// it (no parenthesis) that names no file is taken as a file that is missing.
func architectureText(_ spec: String) throws -> String {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory) {
        guard !isDirectory.boolValue else { throw CNNError(.io, "--spec \(spec): is a directory, not an architecture file") }
        guard let data = FileManager.default.contents(atPath: spec), let text = String(data: data, encoding: .utf8) else {
            throw CNNError(.io, "--spec \(spec): cannot read the architecture file")
        }
        return text
    }
    if !spec.contains("(") {
        throw CNNError(.io, "--spec \(spec): no such file (and not an architecture text: those look like \"input(1,28,28) conv(8,3) relu flatten dense(10)\")")
    }
    return spec
}

/// The options of every command that reads images.
struct ImageOptions: ParsableArguments {
    @Option(help: "Class names for IDX data: a file with one per line, or a comma-separated list.")
    var classes: String?
    @Flag(help: "A JPEG that cannot be decoded, or decodes with a warning, is an error (default: skipped and reported).")
    var strict = false
    @Option(name: .customLong("cache-mb"), help: "Keep decoded images in memory up to this many MB; beyond, decode per batch.")
    var cacheMB: Int = 2048
    @Option(help: "How images are brought to the input size: crop, stretch or pad (training; models remember it).")
    var fit: String = "crop"
    @Option(name: .customLong("max-pixels"), help: "Largest JPEG (width x height) accepted.")
    var maxPixels: Int = JPEGOptions().maxPixels
    @Option(name: .customLong("max-scans"), help: "Most progressive JPEG scans accepted.")
    var maxScans: Int = JPEGOptions().maxScans
    @Flag(name: .customLong("no-exif"), help: "Ignore EXIF orientation.")
    var noExif = false

    func options() throws -> DataOptions {
        guard let f = ImageFit(rawValue: fit) else { throw CNNError(.invalidArgument, "--fit must be crop, stretch or pad, not '\(fit)'") }
        guard cacheMB >= 0, cacheMB <= 1 << 24 else { throw CNNError(.invalidArgument, "--cache-mb must be from 0 to 16777216") }
        guard maxPixels >= 1, maxScans >= 1 else { throw CNNError(.invalidArgument, "--max-pixels and --max-scans must be at least 1") }
        return DataOptions(classes: classes, strict: strict, cacheMB: cacheMB, fit: f, maxPixels: maxPixels, maxScans: maxScans, exif: !noExif)
    }
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Worker threads (results are identical for any number; default: CNN_NUM_THREADS, else every CPU this process may use).")
    var threads: Int?

    @Option(name: .customLong("memory-limit"), help: "The most memory one step (loading, training, predicting) may take: bytes, or with K, M, G (default: CNN_MEMORY_LIMIT, else half the physical memory).")
    var memoryLimit: String?

    func apply() throws {
        if let threads {
            guard threads >= 1, threads <= 256 else { throw CNNError(.invalidArgument, "--threads must be from 1 to 256, not \(threads)") }
            ThreadPool.setThreads(threads)
        }
        if let memoryLimit {
            guard let bytes = Memory.parseSize(memoryLimit), bytes >= 1 << 20 else {
                throw CNNError(.invalidArgument, "--memory-limit takes a size of at least 1M (e.g. 512M, 4G), not '\(memoryLimit)'")
            }
            Memory.limit = bytes
        }
    }
}

func format(_ value: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", value) }

func jsonString(_ s: String) -> String { JSON.quote(s) }
