#if canImport(Glibc)
import Glibc
#endif

/// How a folder of JPEGs becomes a dataset.
public struct FolderOptions: Equatable, Sendable {
    /// The network's input: every image is brought to channels × height × width.
    public var channels: Int
    public var height: Int
    public var width: Int
    public var fit = ImageFit.crop
    public var jpeg = JPEGOptions()
    /// true: the first file that cannot be decoded is an error; false: it is skipped and reported.
    public var strict = false
    /// Decoded images (uint8) are kept in memory when they fit in this many bytes; otherwise they
    /// are decoded again for every batch, on the prefetch threads.
    public var cacheBytes = 2 << 30

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
    }
}

/// Image files decoded on demand into the network's input size.
public final class ImageFiles {
    public let paths: [String]
    public let shape: Shape
    let fit: ImageFit
    let jpeg: JPEGOptions

    init(paths: [String], shape: Shape, fit: ImageFit, jpeg: JPEGOptions) {
        self.paths = paths
        self.shape = shape
        self.fit = fit
        self.jpeg = jpeg
    }

    func subset(_ indices: [Int]) -> ImageFiles {
        ImageFiles(paths: indices.map { paths[$0] }, shape: shape, fit: fit, jpeg: jpeg)
    }

    /// Decodes file `n` as (C, H, W) bytes into `out` (which has shape.count bytes).
    func load(_ n: Int, into out: inout [UInt8]) throws {
        let image = try ImageFiles.decode(paths[n], shape: shape, fit: fit, jpeg: jpeg).image
        out = image.planes
    }

    /// Reads and decodes one file and brings it to `shape`.
    static func decode(_ path: String, shape: Shape, fit: ImageFit, jpeg: JPEGOptions) throws -> (image: Image, warning: String?) {
        let bytes = try FileIO.read(path, maxBytes: 1 << 30)
        let decoded: DecodedJPEG
        do { decoded = try ImageFile.decode(bytes, options: jpeg, minWidth: shape.w, minHeight: shape.h) }
        catch let e as CNNError { throw CNNError(e.kind, "\(path): \(e.message)") }
        return (decoded.image.fitted(channels: shape.c, width: shape.w, height: shape.h, fit: fit), decoded.warning)
    }
}

extension Dataset {
    /// Loads `root/<class name>/<image>.jpg` (also .jpeg and .png, any case). Class names are the
    /// folder names, sorted. Every entry that is not used is listed in `skipped` with why: hidden
    /// files and folders, files of other types, files outside the class folders. Every file is decoded once while loading, in parallel: a file that cannot be
    /// decoded is skipped and listed in `skipped` (or, with `strict`, is an error), so that bad
    /// files are found now and never at the end of a training run.
    public static func fromFolder(_ root: String, options: FolderOptions) throws -> Dataset {
        guard options.channels == 1 || options.channels == 3 else {
            throw CNNError(.invalidArgument, "folder dataset: images are decoded to 1 or 3 channels, not \(options.channels)")
        }
        guard options.height > 0, options.width > 0, options.height * options.width <= 1 << 24 else {
            throw CNNError(.invalidArgument, "folder dataset: invalid image size \(options.height)x\(options.width)")
        }
        var unused: [(String, String)] = []
        let top = try listDirectory(root)
        let classDirs = top.directories
        for f in top.files { unused.append((root + "/" + f, "not in a class folder")) }
        for h in top.hidden { unused.append((root + "/" + h, "hidden, not a class")) }
        guard !classDirs.isEmpty else {
            throw CNNError(.invalidArgument, "\(root): no class folders (expected \(root)/<class name>/<image>.jpg or .png)")
        }
        guard classDirs.count <= 65536 else { throw CNNError(.invalidArgument, "\(root): more than 65536 class folders") }
        var paths: [String] = [], labels: [Int32] = []
        for (label, name) in classDirs.enumerated() {
            let dir = root + "/" + name
            let listing = try listDirectory(dir)
            let files = listing.files.filter { ImageFile.hasImageExtension($0) }
            for f in listing.files where !ImageFile.hasImageExtension(f) {
                let dot = f.lastIndex(of: ".").map { String(f[$0...]) } ?? "no extension"
                unused.append((dir + "/" + f, "not an image type this library reads (\(dot); it reads .jpg, .jpeg and .png)"))
            }
            for d in listing.directories { unused.append((dir + "/" + d, "a folder inside a class folder (not searched)")) }
            for h in listing.hidden { unused.append((dir + "/" + h, "hidden")) }
            guard !files.isEmpty else {
                throw CNNError(.invalidArgument, "\(dir): class folder '\(name)' holds no .jpg, .jpeg or .png file")
            }
            for f in files { paths.append(dir + "/" + f); labels.append(Int32(label)) }
        }
        let shape = Shape(c: options.channels, h: options.height, w: options.width)
        let sample = shape.count
        // Kept in memory when the cache may hold it (the per-file images and the whole set, twice
        // the set's size at the peak) and the memory limit allows; else decoded per batch.
        let keep = paths.count * sample <= options.cacheBytes && 2 * paths.count * sample <= Memory.limit
        // Decode everything once, in parallel, into per-file slots (chunks fixed by count only).
        var results = [Result<(planes: [UInt8], warning: String?), CNNError>](repeating: .failure(CNNError(.internal, "")), count: paths.count)
        var sums = [[Double]](repeating: [Double](repeating: 0, count: 2 * shape.c), count: paths.count)
        results.withUnsafeMutableBufferPointer { res in
            sums.withUnsafeMutableBufferPointer { sm in
                let resP = res.baseAddress!, smP = sm.baseAddress!
                parallelChunks(paths.count, chunk: 16) { lo, hi in
                    for i in lo..<hi {
                        do {
                            let (image, warning) = try ImageFiles.decode(paths[i], shape: shape, fit: options.fit, jpeg: options.jpeg)
                            let planes = image.planes
                            let s = shape.h * shape.w
                            for c in 0..<shape.c {
                                var a = 0.0, b = 0.0
                                for j in 0..<s { let v = Double(planes[c * s + j]) / 255; a += v; b += v * v }
                                smP[i][2 * c] = a
                                smP[i][2 * c + 1] = b
                            }
                            resP[i] = .success((keep ? planes : [], warning))
                        } catch let e as CNNError {
                            resP[i] = .failure(e)
                        } catch {
                            resP[i] = .failure(CNNError(.internal, "\(paths[i]): \(error)"))
                        }
                    }
                }
            }
        }
        var goodPaths: [String] = [], goodLabels: [Int32] = [], bytes: [UInt8] = []
        var skipped: [(String, String)] = unused, warnings: [(String, String)] = []
        var firstFailure: String? = nil
        var total = [Double](repeating: 0, count: 2 * shape.c)
        if keep {
            try Memory.ensureAvailable(paths.count * sample, for: "\(root): \(paths.count) decoded images")
            bytes.reserveCapacity(paths.count * sample)
        }
        for (i, r) in results.enumerated() {
            switch r {
            case .success(let ok):
                goodPaths.append(paths[i])
                goodLabels.append(labels[i])
                if keep { bytes.append(contentsOf: ok.planes) }
                if let w = ok.warning { warnings.append((paths[i], w)) }
                for j in 0..<total.count { total[j] += sums[i][j] }
            case .failure(let e):
                if options.strict { throw CNNError(e.kind, "\(e.message) (strict mode)") }
                skipped.append((paths[i], e.message))
                if firstFailure == nil { firstFailure = e.message }
            }
        }
        guard !goodPaths.isEmpty else {
            throw CNNError(.badFormat, "\(root): none of the \(paths.count) files could be decoded (first: \(firstFailure ?? ""))")
        }
        let classNames = classDirs
        let d = keep
            ? try Dataset(bytes: bytes, labels: goodLabels, shape: shape, classNames: classNames)
            : try Dataset(files: ImageFiles(paths: goodPaths, shape: shape, fit: options.fit, jpeg: options.jpeg),
                          labels: goodLabels, classNames: classNames)
        d.skipped = skipped
        d.warnings = warnings
        d.imageFit = options.fit
        d.samplePaths = goodPaths
        let m = Double(goodPaths.count * shape.h * shape.w)
        let mean = (0..<shape.c).map { total[2 * $0] / m }
        let std = (0..<shape.c).map { max(total[2 * $0 + 1] / m - mean[$0] * mean[$0], 0).squareRoot() }
        d.knownStatistics = (mean.map { Float($0) }, std.map { Float(max($0, 1e-6)) })
        return d
    }

    /// A directory's entries, each list sorted by bytes: folders, regular files, and hidden names
    /// (starting with '.'); other kinds (sockets, broken links) are left out.
    static func listDirectory(_ path: String) throws -> (directories: [String], files: [String], hidden: [String]) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw CNNError(.io, "\(path): \(FileIO.errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CNNError(.invalidArgument, "\(path): not a directory") }
        guard let dir = opendir(path) else { throw CNNError(.io, "\(path): \(FileIO.errnoText())") }
        defer { closedir(dir) }
        var directories: [String] = [], files: [String] = [], hidden: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            if name.hasPrefix(".") { hidden.append(name); continue }
            var es = stat()
            guard stat(path + "/" + name, &es) == 0 else { continue }
            if (es.st_mode & S_IFMT) == S_IFDIR { directories.append(name) }
            else if (es.st_mode & S_IFMT) == S_IFREG { files.append(name) }
        }
        let byBytes: (String, String) -> Bool = { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        return (directories.sorted(by: byBytes), files.sorted(by: byBytes), hidden.sorted(by: byBytes))
    }
}
