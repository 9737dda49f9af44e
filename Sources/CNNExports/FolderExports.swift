import CNN
import CNNABI

// export: cnn_folder_options_default
public func exportFolderOptionsDefault(_ options: UnsafeMutablePointer<cnn_folder_options>?) {
    guard let options else { return }
    let jpeg = JPEGOptions()
    options.pointee = cnn_folder_options(
        struct_size: UInt32(MemoryLayout<cnn_folder_options>.size), fit: Int32(CNN_FIT_CROP), strict: 0,
        apply_exif_orientation: 1, max_scans: Int32(jpeg.maxScans), max_pixels: Int64(jpeg.maxPixels),
        cache_bytes: Int64(FolderOptions(channels: 1, height: 1, width: 1).cacheBytes),
        max_bytes: Int64(jpeg.maxBytes))
}

/// The folder options of a C struct (NULL: the defaults), every field checked.
func folderOptions(_ p: UnsafePointer<cnn_folder_options>?, _ name: String = "options") throws -> (fit: ImageFit, strict: Bool, jpeg: JPEGOptions, cache: Int) {
    var o = cnn_folder_options()
    exportFolderOptionsDefault(&o)
    if let p {
        // Version 0.1 ended with cache_bytes.
        o = try versionedStruct(p, defaults: o, oldestSize: MemoryLayout<cnn_folder_options>.offset(of: \.max_bytes)!,
                                name: name, initializer: "cnn_folder_options_default")
    }
    let fits: [ImageFit] = [.crop, .stretch, .pad]
    guard o.fit >= 0, Int(o.fit) < fits.count else { throw invalid("\(name).fit is \(o.fit); expected CNN_FIT_CROP, _STRETCH or _PAD") }
    guard o.strict == 0 || o.strict == 1 else { throw invalid("\(name).strict must be 0 or 1") }
    guard o.apply_exif_orientation == 0 || o.apply_exif_orientation == 1 else { throw invalid("\(name).apply_exif_orientation must be 0 or 1") }
    guard o.max_scans >= 1 else { throw invalid("\(name).max_scans must be at least 1") }
    guard o.max_pixels >= 1, o.max_pixels <= 1 << 40 else { throw invalid("\(name).max_pixels must be from 1 to 2^40") }
    guard o.cache_bytes >= 0 else { throw invalid("\(name).cache_bytes must be >= 0") }
    guard o.max_bytes >= 1 << 16 else { throw invalid("\(name).max_bytes must be at least 65536, not \(o.max_bytes)") }
    var jpeg = JPEGOptions()
    jpeg.maxPixels = Int(o.max_pixels)
    jpeg.maxScans = Int(o.max_scans)
    jpeg.maxBytes = Int(o.max_bytes)
    jpeg.strict = o.strict == 1
    jpeg.applyOrientation = o.apply_exif_orientation == 1
    return (fits[Int(o.fit)], o.strict == 1, jpeg, Int(o.cache_bytes))
}

// export: cnn_dataset_from_folder
public func exportDatasetFromFolder(_ root: UnsafePointer<CChar>?, _ c: Int32, _ h: Int32, _ w: Int32,
                                    _ options: UnsafePointer<cnn_folder_options>?,
                                    _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_dataset_from_folder") {
        let root = try string(root, "root")
        let out = try required(out, "dataset")
        guard c == 1 || c == 3 else { throw invalid("channels must be 1 or 3, not \(c)") }
        guard h >= 1, w >= 1, Int(h) * Int(w) <= 1 << 24 else { throw invalid("height and width must be >= 1 and their product at most 2^24, not \(h), \(w)") }
        let o = try folderOptions(options)
        var folder = FolderOptions(channels: Int(c), height: Int(h), width: Int(w))
        folder.fit = o.fit
        folder.strict = o.strict
        folder.jpeg = o.jpeg
        folder.cacheBytes = o.cache
        out.pointee = Registry.add(DatasetHandle(try Dataset.fromFolder(root, options: folder)))
    }
}

// export: cnn_dataset_skipped_count
public func exportDatasetSkippedCount(_ dataset: OpaquePointer?, _ count: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_dataset_skipped_count") {
        let d = try Registry.dataset(dataset).dataset
        try required(count, "count").pointee = Int32(d.skipped.count)
    }
}

// export: cnn_dataset_skipped_file
public func exportDatasetSkippedFile(_ dataset: OpaquePointer?, _ index: Int32,
                                     _ path: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                     _ reason: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_dataset_skipped_file") {
        let handle = try Registry.dataset(dataset)
        let path = try required(path, "path"), reason = try required(reason, "reason")
        let (p, r) = try handle.skipped(Int(index))
        path.pointee = p
        reason.pointee = r
    }
}

// export: cnn_dataset_split
public func exportDatasetSplit(_ dataset: OpaquePointer?, _ fraction: Float, _ seed: UInt64,
                               _ first: UnsafeMutablePointer<OpaquePointer?>?,
                               _ second: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_dataset_split") {
        let handle = try Registry.dataset(dataset)
        let first = try required(first, "first"), second = try required(second, "second")
        guard fraction.isFinite, fraction > 0, fraction < 1 else { throw invalid("fraction must be in (0, 1), not \(fraction)") }
        let (a, b) = try handle.using { try $0.split(validationFraction: Double(fraction), seed: seed) }
        first.pointee = Registry.add(DatasetHandle(a))
        second.pointee = Registry.add(DatasetHandle(b))
    }
}

// export: cnn_model_predict_jpeg
public func exportModelPredictJPEG(_ model: OpaquePointer?, _ data: UnsafePointer<UInt8>?, _ size: Int,
                                   _ options: UnsafePointer<cnn_folder_options>?,
                                   _ probabilities: UnsafeMutablePointer<Float>?) -> cnn_status {
    guarded("cnn_model_predict_jpeg") {
        let handle = try Registry.model(model)
        let data = try required(data, "data"), out = try required(probabilities, "probabilities")
        guard size >= 1, size <= 1 << 30 else { throw invalid("size must be from 1 to 2^30, not \(size)") }
        let jpeg = try folderOptions(options).jpeg
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        let probs = try handle.shared { try $0.predictJPEG(bytes, options: jpeg) }
        out.update(from: probs, count: probs.count)
    }
}

// export: cnn_model_predict_jpeg_file
public func exportModelPredictJPEGFile(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                       _ options: UnsafePointer<cnn_folder_options>?,
                                       _ probabilities: UnsafeMutablePointer<Float>?) -> cnn_status {
    guarded("cnn_model_predict_jpeg_file") {
        let handle = try Registry.model(model)
        let path = try string(path, "path"), out = try required(probabilities, "probabilities")
        let jpeg = try folderOptions(options).jpeg
        let probs = try handle.shared { try $0.predictJPEG(file: path, options: jpeg) }
        out.update(from: probs, count: probs.count)
    }
}

// export: cnn_model_predict_image
public func exportModelPredictImage(_ model: OpaquePointer?, _ pixels: UnsafePointer<UInt8>?, _ height: Int32, _ width: Int32,
                                    _ channels: Int32, _ stride: Int32, _ probabilities: UnsafeMutablePointer<Float>?) -> cnn_status {
    guarded("cnn_model_predict_image") {
        let handle = try Registry.model(model)
        let pixels = try required(pixels, "pixels"), out = try required(probabilities, "probabilities")
        guard height >= 1, height <= 1 << 15, width >= 1, width <= 1 << 15 else {
            throw invalid("height and width must be from 1 to 32768, not \(height) x \(width)")
        }
        guard channels == 1 || channels == 3 || channels == 4 else {
            throw invalid("channels must be 1 (gray), 3 (RGB) or 4 (RGBA), not \(channels)")
        }
        let h = Int(height), w = Int(width), c = Int(channels), row = stride == 0 ? w * c : Int(stride)
        guard row >= w * c else { throw invalid("stride \(stride) is less than width * channels = \(w * c)") }
        let kept = c == 4 ? 3 : c
        try Memory.check(h * w * kept * 8, for: "an image of \(w)x\(h)")
        var bytes = [UInt8](repeating: 0, count: h * w * kept)
        for y in 0..<h {
            let src = pixels + y * row
            for x in 0..<w { for k in 0..<kept { bytes[(y * w + x) * kept + k] = src[x * c + k] } }
        }
        let image = Image(width: w, height: h, channels: kept, pixels: bytes)
        let probs = try handle.shared { try $0.predictImage(image) }
        out.update(from: probs, count: probs.count)
    }
}
