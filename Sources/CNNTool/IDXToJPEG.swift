import ArgumentParser
import CNN
import Foundation

/// Writes an IDX set out as a JPEG folder tree: OUT/<class name>/<index>.jpg.
struct IDXToJPEG: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idx2jpeg",
        abstract: "Write an IDX images file (and its labels) as a folder of class sub-folders of JPEGs.")

    @Option(help: "An IDX images file (its labels file is found beside it).") var data: String
    @Option(help: "The output folder.") var out: String
    @Option(help: "Class names: a file with one per line, or a comma-separated list (default: classes.txt beside the data).")
    var classes: String?
    @Option(help: "JPEG quality, 1-100.") var quality: Int = 95
    @Option(help: "Write only the first N images.") var limit: Int?
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CNNCommandRun {
            try common.apply()
            guard (1...100).contains(quality) else { throw CNNError(.invalidArgument, "--quality must be from 1 to 100") }
            var d = try loadDataset(data, input: Shape(c: 1, h: 1, w: 1), options: DataOptions(classes: classes))
            if let limit {
                guard limit >= 1 else { throw CNNError(.invalidArgument, "--limit must be at least 1") }
                d = try d.prefix(limit)
            }
            // Folder names cannot hold '/': "T-shirt/top" becomes "T-shirt-top".
            let folders = d.classNames.map { $0.replacingOccurrences(of: "/", with: "-") }
            guard Set(folders).count == folders.count, !folders.contains(where: { $0.isEmpty || $0.hasPrefix(".") }) else {
                throw CNNError(.invalidArgument, "class names must give distinct folder names: \(folders)")
            }
            let fm = FileManager.default
            for f in folders {
                do { try fm.createDirectory(atPath: out + "/" + f, withIntermediateDirectories: true) }
                catch { throw CNNError(.io, "\(out)/\(f): \(error.localizedDescription)") }
            }
            // Chunks of images encoded and written on every thread, with progress on stderr.
            let s = d.shape, total = d.count, chunk = 500
            let digits = String(total - 1).count
            let chunks = (total + chunk - 1) / chunk
            let lock = NSLock()
            var done = 0, firstError: CNNError? = nil, lastShown = -1
            let terminal = isatty(STDERR_FILENO) != 0
            let start = Date()
            ThreadPool.shared.parallelFor(chunks) { k in
                var pixels = [Float](repeating: 0, count: s.count)
                var image = Image(width: s.w, height: s.h, channels: s.c)
                for n in (k * chunk)..<min(total, (k + 1) * chunk) {
                    do {
                        try pixels.withUnsafeMutableBufferPointer { try d.copy(first: n, count: 1, images: $0.baseAddress!, labels: nil) }
                        // (C, H, W) floats in [0, 1] -> (H, W, C) bytes.
                        for c in 0..<s.c { for p in 0..<(s.h * s.w) {
                            image.pixels[p * s.c + c] = UInt8(max(0, min(255, (pixels[c * s.h * s.w + p] * 255).rounded())))
                        } }
                        let bytes = try JPEG.encode(image, quality: quality, subsampling: 444)
                        let name = String(n)
                        let path = "\(out)/\(folders[Int(d.labels[n])])/\(String(repeating: "0", count: digits - name.count) + name).jpg"
                        guard fm.createFile(atPath: path, contents: Data(bytes)) else { throw CNNError(.io, "\(path): cannot write") }
                    } catch let e as CNNError {
                        lock.lock(); if firstError == nil { firstError = e }; lock.unlock()
                        return
                    } catch {
                        lock.lock(); if firstError == nil { firstError = CNNError(.io, "\(error)") }; lock.unlock()
                        return
                    }
                }
                lock.lock()
                done += min(total, (k + 1) * chunk) - k * chunk
                let percent = done * 100 / total
                if terminal {
                    printProgress("\rconverting \(done)/\(total) images (\(percent) %)")
                } else if percent / 10 != lastShown / 10 || done == total {
                    printError("converting: \(done)/\(total) images")
                }
                lastShown = percent
                lock.unlock()
            }
            if terminal { printProgress("\r\u{1B}[K") }
            if let firstError { throw firstError }
            printError("wrote \(d.count) JPEG files in \(folders.count) class folders under \(out) in \(format(Date().timeIntervalSince(start), 1)) s (\(ThreadPool.shared.threads) thread\(ThreadPool.shared.threads == 1 ? "" : "s"))")
        }
    }
}
