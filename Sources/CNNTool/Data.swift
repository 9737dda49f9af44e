import CNN
import Foundation

/// Options shared by the commands that read images.
struct DataOptions {
    var classes: String?
    var strict = false
    var cacheMB = 2048
    var fit = ImageFit.crop
    var maxPixels = JPEGOptions().maxPixels
    var maxScans = JPEGOptions().maxScans
    var exif = true

    var jpeg: JPEGOptions {
        var o = JPEGOptions()
        o.maxPixels = maxPixels
        o.maxScans = maxScans
        o.strict = strict
        o.applyOrientation = exif
        return o
    }
}

func isDirectory(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
}

/// Loads a dataset: a folder of class sub-folders of JPEGs (brought to `input`), or an IDX images
/// file with its labels beside it. Skipped files are named on stderr with a summary.
func loadDataset(_ path: String, input: Shape, options: DataOptions, quiet: Bool = false) throws -> Dataset {
    if isDirectory(path) {
        var o = FolderOptions(channels: input.c, height: input.h, width: input.w)
        o.fit = options.fit
        o.jpeg = options.jpeg
        o.strict = options.strict
        o.cacheBytes = options.cacheMB << 20
        let start = Date()
        let d = try Dataset.fromFolder(path, options: o)
        if !quiet {
            for (file, reason) in d.skipped { printError("skipped \(file): \(reason)") }
            for (file, message) in d.warnings { printError("warning \(file): \(message)") }
            let cached: Bool = { if case .files = d.pixels { return false }; return true }()
            printError("\(path): \(d.count) images in \(d.numClasses) classes, \(d.skipped.count) skipped, \(d.warnings.count) with warnings, " +
                       "\(cached ? "decoded into memory" : "decoded per batch (over the --cache-mb budget)") in \(format(Date().timeIntervalSince(start), 1)) s")
        }
        return d
    }
    var names: [String]? = nil
    if let classes = options.classes {
        if FileManager.default.fileExists(atPath: classes) {
            names = try IDX.readClassNames(classes)
        } else {
            names = classes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }
    return try IDX.load(images: path, classNames: names)
}
