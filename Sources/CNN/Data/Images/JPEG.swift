import CJPEGShim

/// Decoding limits and choices for JPEG files. Every file is untrusted.
public struct JPEGOptions: Equatable, Sendable {
    /// Largest width × height accepted, checked from the header before any allocation.
    /// Default 64 megapixels (a 192 MB RGB buffer); raise it for larger photos.
    public var maxPixels = 64_000_000
    /// Most progressive scans accepted (a file with thousands of tiny scans can take minutes to
    /// decode). Encoders write about 10; default 100, as libjpeg-turbo's own fuzzers use.
    public var maxScans = 100
    /// true: libjpeg's warnings (corrupt data, premature end of file) are errors. false: decode
    /// what is there and report the warning.
    public var strict = false
    /// Apply the EXIF orientation (APP1) so that phone photos come out upright.
    public var applyOrientation = true
    /// Memory one image's decoding may take: libjpeg's working memory (its `max_memory_to_use`;
    /// a progressive file's coefficients, 2 bytes per pixel and component) and the decoded pixels.
    /// Default 256 MiB: a progressive 40-megapixel photo, or the 64-megapixel limit in baseline.
    public var maxBytes = 256 << 20
    public init() {}
}

/// A decoded JPEG, with what the decoder had to say.
public struct DecodedJPEG: Sendable {
    public var image: Image
    /// libjpeg's first warning when it had to patch over bad data (lenient mode), else nil.
    public var warning: String?
    /// The EXIF orientation found (1 = none).
    public var orientation: Int
    /// The size the header declares (before DCT scaling and orientation).
    public var fullWidth: Int
    public var fullHeight: Int
}

public enum JPEG {
    /// Decodes a JPEG held in memory. `minWidth`/`minHeight` (after orientation) let libjpeg
    /// decode at 1/2, 1/4 or 1/8 scale when the result stays at least that large: several times
    /// faster for a small network input.
    public static func decode(_ bytes: [UInt8], options: JPEGOptions = JPEGOptions(),
                              minWidth: Int = 0, minHeight: Int = 0) throws -> DecodedJPEG {
        var image = Image(width: 0, height: 0, channels: 1, pixels: [])
        var result = try decode(bytes, into: &image, options: options, minWidth: minWidth, minHeight: minHeight)
        result.image = image
        return result
    }

    /// As `decode(_:options:minWidth:minHeight:)`, writing the pixels into `image`, whose storage is
    /// reused when it already has the right size (a decoding loop then allocates nothing).
    /// The returned value's `image` is empty: the pixels are in `image`.
    @discardableResult
    public static func decode(_ bytes: [UInt8], into image: inout Image, options: JPEGOptions = JPEGOptions(),
                              minWidth: Int = 0, minHeight: Int = 0) throws -> DecodedJPEG {
        guard !bytes.isEmpty else { throw CNNError(.badFormat, "empty file") }
        guard bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xD8 else {
            throw CNNError(.badFormat, "not a JPEG file (no start-of-image marker)")
        }
        let orientation = options.applyOrientation ? exifOrientation(bytes) : 1
        let swap = orientation >= 5
        var limits = cnnjpeg_limits(max_pixels: Int64(options.maxPixels), max_scans: Int32(clamping: options.maxScans),
                                     strict: options.strict ? 1 : 0,
                                     min_width: Int32(clamping: swap ? minHeight : minWidth),
                                     min_height: Int32(clamping: swap ? minWidth : minHeight),
                                     max_bytes: Int64(min(options.maxBytes, Memory.limit)))
        var info = cnnjpeg_image()
        var message = [CChar](repeating: 0, count: 256)
        func text() -> String { message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
        // Both steps inside one access to `bytes`: libjpeg reads them through a raw pointer.
        let ok: Bool = bytes.withUnsafeBufferPointer { b in
            guard let decoder = cnnjpeg_open(b.baseAddress, b.count, &limits, &info, &message, message.count) else { return false }
            if image.pixels.count != info.buffer_bytes {
                // Within max_bytes (checked by the shim), so an allocation the system allows.
                image.pixels = [UInt8](repeating: 0, count: info.buffer_bytes)
            }
            // libjpeg writes straight into the image's own storage: no copy.
            return image.pixels.withUnsafeMutableBufferPointer { p in
                cnnjpeg_read(decoder, p.baseAddress, &info, &message, message.count) == 0
            }
        }
        guard ok else { throw CNNError(info.over_limit != 0 ? .outOfMemory : .badFormat, "cannot decode JPEG: \(text())") }
        image.width = Int(info.width)
        image.height = Int(info.height)
        image.channels = Int(info.channels)
        let n = image.width * image.height * image.channels
        if image.pixels.count != n { image.pixels.removeLast(image.pixels.count - n) }  // CMYK: 4 -> 3 bytes a pixel
        if orientation != 1 { image = image.oriented(orientation) }
        return DecodedJPEG(image: Image(width: 0, height: 0, channels: 1, pixels: []), warning: info.warnings > 0 ? text() : nil,
                           orientation: orientation, fullWidth: Int(info.full_width), fullHeight: Int(info.full_height))
    }

    /// Encodes an image (1 or 3 channels; 4 = CMYK) as JPEG; used to write datasets and test files.
    public static func encode(_ image: Image, quality: Int = 95, progressive: Bool = false,
                              restartRows: Int = 0, subsampling: Int = 420, ycck: Bool = false) throws -> [UInt8] {
        guard image.width > 0, image.height > 0, [1, 3, 4].contains(image.channels),
              image.pixels.count == image.width * image.height * image.channels else {
            throw CNNError(.invalidArgument, "cannot encode a \(image.width)x\(image.height)x\(image.channels) image")
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var message = [CChar](repeating: 0, count: 512)
        let status = image.pixels.withUnsafeBufferPointer { p in
            cnnjpeg_encode(p.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels),
                            Int32(max(1, min(100, quality))), progressive ? 1 : 0, Int32(restartRows),
                            Int32(subsampling), ycck ? 1 : 0, &out, &size, &message, message.count)
        }
        guard status == 0, let out else {
            throw CNNError(.internal, "cannot encode JPEG: \(message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })")
        }
        defer { cnnjpeg_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    /// The EXIF orientation (1-8) in the APP1 segment before the first scan, or 1. Every offset is
    /// checked against the data: a malformed segment is ignored, never trusted.
    public static func exifOrientation(_ b: [UInt8]) -> Int {
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { return 1 }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }                       // fill byte
            if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { i += 2; continue }
            if marker == 0xDA || marker == 0xD9 { return 1 }               // scan data: no more headers
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2, i + 2 + length <= b.count else { return 1 }
            let start = i + 4, end = i + 2 + length
            if marker == 0xE1, end - start >= 14, Array(b[start..<(start + 6)]) == [0x45, 0x78, 0x69, 0x66, 0, 0] {
                if let o = tiffOrientation(b, from: start + 6, to: end) { return o }
            }
            i = end
        }
        return 1
    }

    private static func tiffOrientation(_ b: [UInt8], from base: Int, to end: Int) -> Int? {
        guard end - base >= 8 else { return nil }
        let little: Bool
        if b[base] == 0x49 && b[base + 1] == 0x49 { little = true }
        else if b[base] == 0x4D && b[base + 1] == 0x4D { little = false }
        else { return nil }
        func u16(_ at: Int) -> Int? {
            guard at >= base, at + 2 <= end else { return nil }
            return little ? Int(b[at]) | Int(b[at + 1]) << 8 : Int(b[at]) << 8 | Int(b[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard let lo = u16(little ? at : at + 2), let hi = u16(little ? at + 2 : at) else { return nil }
            return hi << 16 | lo
        }
        guard u16(base + 2) == 42, let ifd = u32(base + 4), ifd >= 8, let count = u16(base + ifd) else { return nil }
        for e in 0..<min(count, 512) {
            let entry = base + ifd + 2 + 12 * e
            guard let tag = u16(entry) else { return nil }
            if tag == 0x0112 {
                guard u16(entry + 2) == 3, let value = u16(entry + 8), (1...8).contains(value) else { return nil }
                return value
            }
        }
        return nil
    }
}
