import CNN
import CNNABI

/// Checks the sizes of an in-memory dataset; returns the pixel count.
private func checkedSize(_ n: Int32, _ c: Int32, _ h: Int32, _ w: Int32, _ classes: Int32) throws -> Int {
    guard n > 0 else { throw invalid("n must be > 0, not \(n)") }
    guard c > 0, h > 0, w > 0 else { throw invalid("channels, height and width must be > 0, not \(c), \(h), \(w)") }
    guard classes >= 1, classes <= 65536 else { throw invalid("num_classes must be from 1 to 65536, not \(classes)") }
    // c·h·w is checked for overflow first; then n·c·h·w < 2^31 · 2^28 fits in 64 bits.
    let (ch, o1) = Int(c).multipliedReportingOverflow(by: Int(h))
    let (sample, o2) = ch.multipliedReportingOverflow(by: Int(w))
    guard !o1, !o2, sample <= 1 << 28, Int(n) * sample <= 1 << 32 else {
        throw CNNError(.outOfMemory, "\(n) images of \(c)x\(h)x\(w) exceed the limit of 2^32 values")
    }
    return Int(n) * sample
}

private func labelArray(_ labels: UnsafePointer<Int32>, _ n: Int32, _ classes: Int32) throws -> [Int32] {
    let array = Array(UnsafeBufferPointer(start: labels, count: Int(n)))
    if let i = array.firstIndex(where: { $0 < 0 || $0 >= classes }) {
        throw invalid("labels[\(i)] = \(array[i]) is outside 0..\(classes - 1)")
    }
    return array
}

private func store(_ dataset: Dataset, _ out: UnsafeMutablePointer<OpaquePointer?>) {
    out.pointee = Registry.add(DatasetHandle(dataset))
}

/// The checks both in-memory constructors share; `make` turns the images into a dataset.
private func datasetFromMemory<T>(_ function: String, _ images: UnsafePointer<T>?, _ labels: UnsafePointer<Int32>?,
                                  _ n: Int32, _ c: Int32, _ h: Int32, _ w: Int32, _ classes: Int32,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                  _ make: (UnsafePointer<T>, Int, [Int32], Shape, [String]) throws -> Dataset) -> cnn_status {
    guarded(function) {
        let images = try required(images, "images"), labels = try required(labels, "labels")
        let out = try required(out, "dataset")
        let total = try checkedSize(n, c, h, w, classes)
        try Memory.ensureAvailable(total * MemoryLayout<T>.stride + Int(n) * 4, for: "a copy of \(n) images of \(c)x\(h)x\(w)")
        store(try make(images, total, labelArray(labels, n, classes), Shape(c: Int(c), h: Int(h), w: Int(w)),
                       (0..<Int(classes)).map { String($0) }), out)
    }
}

// export: cnn_dataset_from_float
public func exportDatasetFromFloat(_ images: UnsafePointer<Float>?, _ labels: UnsafePointer<Int32>?, _ n: Int32,
                                   _ c: Int32, _ h: Int32, _ w: Int32, _ classes: Int32,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    datasetFromMemory("cnn_dataset_from_float", images, labels, n, c, h, w, classes, out) { images, total, labels, shape, names in
        let pixels = Array(UnsafeBufferPointer(start: images, count: total))
        if let i = pixels.firstIndex(where: { !$0.isFinite }) { throw invalid("images[\(i)] is not finite") }
        return try Dataset(floats: pixels, labels: labels, shape: shape, classNames: names)
    }
}

// export: cnn_dataset_from_uint8
public func exportDatasetFromUInt8(_ images: UnsafePointer<UInt8>?, _ labels: UnsafePointer<Int32>?, _ n: Int32,
                                   _ c: Int32, _ h: Int32, _ w: Int32, _ classes: Int32,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    datasetFromMemory("cnn_dataset_from_uint8", images, labels, n, c, h, w, classes, out) { images, total, labels, shape, names in
        try Dataset(bytes: nhwcToNCHW(images, n: labels.count, c: shape.c, h: shape.h, w: shape.w, total: total),
                    labels: labels, shape: shape, classNames: names)
    }
}

/// (N, H, W, C) bytes -> (N, C, H, W) bytes.
func nhwcToNCHW(_ src: UnsafePointer<UInt8>, n: Int, c: Int, h: Int, w: Int, total: Int) -> [UInt8] {
    if c == 1 { return Array(UnsafeBufferPointer(start: src, count: total)) }
    var out = [UInt8](repeating: 0, count: total)
    let hw = h * w
    for i in 0..<n {
        for p in 0..<hw {
            for ch in 0..<c { out[(i * c + ch) * hw + p] = src[(i * hw + p) * c + ch] }
        }
    }
    return out
}

// export: cnn_dataset_from_idx
public func exportDatasetFromIDX(_ imagesPath: UnsafePointer<CChar>?, _ labelsPath: UnsafePointer<CChar>?,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_dataset_from_idx") {
        let images = try string(imagesPath, "images_path")
        let out = try required(out, "dataset")
        let labels = labelsPath.map { String(cString: $0) }
        store(try IDX.load(images: images, labels: labels), out)
    }
}

// export: cnn_dataset_free
public func exportDatasetFree(_ dataset: OpaquePointer?) { Registry.remove(dataset) }

// export: cnn_dataset_shape
public func exportDatasetShape(_ dataset: OpaquePointer?, _ n: UnsafeMutablePointer<Int32>?, _ c: UnsafeMutablePointer<Int32>?,
                               _ h: UnsafeMutablePointer<Int32>?, _ w: UnsafeMutablePointer<Int32>?,
                               _ classes: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_dataset_shape") {
        let d = try Registry.dataset(dataset).dataset
        n?.pointee = Int32(d.count)
        c?.pointee = Int32(d.shape.c)
        h?.pointee = Int32(d.shape.h)
        w?.pointee = Int32(d.shape.w)
        classes?.pointee = Int32(d.numClasses)
    }
}

// export: cnn_dataset_get
public func exportDatasetGet(_ dataset: OpaquePointer?, _ first: Int32, _ count: Int32,
                             _ images: UnsafeMutablePointer<Float>?, _ labels: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_dataset_get") {
        let handle = try Registry.dataset(dataset)
        try handle.using { try $0.copy(first: Int(first), count: Int(count), images: images, labels: labels) }
    }
}

// export: cnn_dataset_set_class_names
public func exportDatasetSetClassNames(_ dataset: OpaquePointer?, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
                                       _ count: Int32) -> cnn_status {
    guarded("cnn_dataset_set_class_names") {
        let handle = try Registry.dataset(dataset)
        let names = try required(names, "names")
        guard Int(count) == handle.dataset.numClasses else {
            throw invalid("count is \(count), the dataset has \(handle.dataset.numClasses) classes")
        }
        var list: [String] = []
        for i in 0..<Int(count) { list.append(try string(names[i], "names[\(i)]")) }
        try handle.setClassNames(list)
    }
}

// export: cnn_dataset_sample_path
public func exportDatasetSamplePath(_ dataset: OpaquePointer?, _ index: Int32, _ path: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_dataset_sample_path") {
        let handle = try Registry.dataset(dataset)
        let out = try required(path, "path")
        out.pointee = try handle.samplePath(Int(index))
    }
}

// export: cnn_dataset_map_classes
public func exportDatasetMapClasses(_ data: OpaquePointer?, _ model: OpaquePointer?, _ mapped: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_dataset_map_classes") {
        let handle = try Registry.dataset(data, "data")
        let modelHandle = try Registry.model(model)
        let out = try required(mapped, "mapped")
        let names = try modelHandle.reading { $0.classNames }
        let result = try handle.using { try $0.mappingClasses(to: names) }
        out.pointee = Registry.add(DatasetHandle(result))
    }
}

// export: cnn_dataset_class_name
public func exportDatasetClassName(_ dataset: OpaquePointer?, _ index: Int32, _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_dataset_class_name") {
        let handle = try Registry.dataset(dataset)
        let out = try required(name, "name")
        out.pointee = try handle.className(Int(index))
    }
}
