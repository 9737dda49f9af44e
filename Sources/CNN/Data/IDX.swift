/// IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed.
///
/// Images: magic 0x00000803 (unsigned bytes, 3 dimensions), then N, rows, cols as big-endian
/// 32-bit integers and N·rows·cols pixels. Labels: magic 0x00000801, N, then N bytes.
public enum IDX {
    /// Upper bounds that keep a hostile header from asking for absurd allocations.
    public static let maxImages = 1 << 26
    public static let maxSide = 1 << 14
    public static let maxBytes = 1 << 34

    /// The labels file beside an images file by the standard naming:
    /// `train-images-idx3-ubyte[.gz]` -> `train-labels-idx1-ubyte[.gz]`.
    public static func labelsPath(forImages path: String) throws -> String {
        _ = try FileIO.regularFileSize(path)
        let file = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
        guard file.firstRange(of: "images-idx3") != nil else {
            throw CNNError(.invalidArgument, "\(path): cannot find the labels file: the name does not contain 'images-idx3' (expected e.g. train-images-idx3-ubyte.gz beside train-labels-idx1-ubyte.gz)")
        }
        let dir = path.count > file.count ? String(path.dropLast(file.count)) : ""
        let base = file.replacing("images-idx3", with: "labels-idx1", maxReplacements: 1)
        let candidates = [base, base.hasSuffix(".gz") ? String(base.dropLast(3)) : base + ".gz"]
        for name in candidates where FileIO.exists(dir + name) { return dir + name }
        throw CNNError(.io, "\(path): no labels file \(dir + candidates[0]) (or \(candidates[1])) beside it")
    }

    /// Loads an images file and its labels. Class names come from `classNames`, else from a
    /// `classes.txt` beside the images (one name per line), else "0", "1", ...
    public static func load(images path: String, labels labelsPath: String? = nil,
                            classNames: [String]? = nil) throws -> Dataset {
        let labelsFile = try labelsPath ?? IDX.labelsPath(forImages: path)
        let (pixels, n, rows, cols) = try readImages(path)
        let labels = try readLabels(labelsFile)
        guard labels.count == n else {
            throw CNNError(.shapeMismatch, "\(labelsFile): \(labels.count) labels for the \(n) images of \(path)")
        }
        let maxLabel = Int(labels.max() ?? 0)
        var names = classNames ?? (try? readClassNames(FileIO.directory(of: path) + "/classes.txt")) ?? []
        if names.isEmpty { names = (0...maxLabel).map { String($0) } }
        guard maxLabel < names.count else {
            throw CNNError(.invalidArgument, "\(labelsFile): label \(maxLabel) but only \(names.count) class names")
        }
        return try Dataset(bytes: pixels, labels: labels.map { Int32($0) },
                           shape: Shape(c: 1, h: rows, w: cols), classNames: names)
    }

    static func bigEndian(_ b: [UInt8], _ at: Int) -> Int {
        Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
    }

    public static func readImages(_ path: String) throws -> (pixels: [UInt8], count: Int, rows: Int, cols: Int) {
        let reader = try FileIO.GzipReader(path)
        let header = try reader.readExactly(16, what: "the IDX images header")
        guard header[0] == 0, header[1] == 0, header[2] == 8, header[3] == 3 else {
            throw CNNError(.badFormat, "\(path): not an IDX images file (magic \(hex(header[0..<4])), expected 00000803)")
        }
        let n = bigEndian(header, 4), rows = bigEndian(header, 8), cols = bigEndian(header, 12)
        guard n > 0, n <= maxImages, rows > 0, rows <= maxSide, cols > 0, cols <= maxSide, n * rows * cols <= maxBytes else {
            throw CNNError(.badFormat, "\(path): implausible IDX dimensions \(n)×\(rows)×\(cols)")
        }
        try checkPlainSize(reader, header: 16, data: n * rows * cols, what: "\(n) images of \(rows)×\(cols)")
        let pixels = try reader.readExactly(n * rows * cols, what: "\(n) images of \(rows)×\(cols)")
        guard try reader.atEnd() else {
            throw CNNError(.badFormat, "\(path): unexpected bytes after the \(n) images the header declares")
        }
        return (pixels, n, rows, cols)
    }

    public static func readLabels(_ path: String) throws -> [UInt8] {
        let reader = try FileIO.GzipReader(path)
        let header = try reader.readExactly(8, what: "the IDX labels header")
        guard header[0] == 0, header[1] == 0, header[2] == 8, header[3] == 1 else {
            throw CNNError(.badFormat, "\(path): not an IDX labels file (magic \(hex(header[0..<4])), expected 00000801)")
        }
        let n = bigEndian(header, 4)
        guard n > 0, n <= maxImages else { throw CNNError(.badFormat, "\(path): implausible label count \(n)") }
        try checkPlainSize(reader, header: 8, data: n, what: "\(n) labels")
        let labels = try reader.readExactly(n, what: "\(n) labels")
        guard try reader.atEnd() else {
            throw CNNError(.badFormat, "\(path): unexpected bytes after the \(n) labels the header declares")
        }
        return labels
    }

    /// An uncompressed file must be exactly as long as its header says, checked before reading.
    static func checkPlainSize(_ reader: FileIO.GzipReader, header: Int, data: Int, what: String) throws {
        guard reader.isPlain else { return }
        let size = try FileIO.regularFileSize(reader.path)
        guard size == header + data else {
            throw CNNError(.badFormat, "\(reader.path): the header declares \(what) (\(data) bytes), but the file holds \(size - header) bytes after its \(header)-byte header")
        }
    }

    /// One class name per line; blank lines are ignored.
    public static func readClassNames(_ path: String) throws -> [String] {
        let bytes = try FileIO.read(path, maxBytes: 1 << 20)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CNNError(.badFormat, "\(path): not UTF-8 text")
        }
        return text.split(whereSeparator: \.isNewline).map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
    }

    static func hex(_ bytes: ArraySlice<UInt8>) -> String {
        bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
