import CPNGShim

/// PNG decoding through libpng, with JPEG's limits (`JPEGOptions`: pixels, memory, strictness).
public enum PNG {
    /// The 8-byte signature every PNG file starts with.
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func isPNG(_ bytes: [UInt8]) -> Bool { bytes.count >= 8 && Array(bytes[0..<8]) == signature }

    /// Decodes a PNG held in memory to 8-bit gray or RGB (palettes and low bit depths expanded,
    /// 16-bit samples scaled, alpha dropped). Every file is untrusted: the size is checked against
    /// `options.maxPixels` from the header, and libpng's memory and the pixels against
    /// `options.maxBytes` (and the memory limit), before they are allocated.
    public static func decode(_ bytes: [UInt8], options: JPEGOptions = JPEGOptions()) throws -> DecodedJPEG {
        guard isPNG(bytes) else { throw CNNError(.badFormat, "not a PNG file (no PNG signature)") }
        var limits = cnnpng_limits(max_pixels: Int64(options.maxPixels), max_bytes: Int64(min(options.maxBytes, Memory.limit)),
                                   strict: options.strict ? 1 : 0)
        var info = cnnpng_image()
        var message = [CChar](repeating: 0, count: 256)
        func text() -> String { message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
        var pixels: [UInt8] = []
        let ok: Bool = bytes.withUnsafeBufferPointer { b in
            guard let decoder = cnnpng_open(b.baseAddress, b.count, &limits, &info, &message, message.count) else { return false }
            // Within max_bytes (checked by the shim), so an allocation the system allows.
            pixels = [UInt8](repeating: 0, count: info.buffer_bytes)
            return pixels.withUnsafeMutableBufferPointer { p in
                cnnpng_read(decoder, p.baseAddress, &info, &message, message.count) == 0
            }
        }
        guard ok else { throw CNNError(info.over_limit != 0 ? .outOfMemory : .badFormat, "cannot decode PNG: \(text())") }
        let image = Image(width: Int(info.width), height: Int(info.height), channels: Int(info.channels), pixels: pixels)
        return DecodedJPEG(image: image, warning: info.warnings > 0 ? text() : nil, orientation: 1,
                           fullWidth: image.width, fullHeight: image.height)
    }

    /// Encodes 8-bit pixels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as PNG: for tests and tools.
    public static func encode(_ image: Image, bitDepth: Int = 8, interlaced: Bool = false, palette: Bool = false) throws -> [UInt8] {
        guard image.width > 0, image.height > 0, (1...4).contains(image.channels),
              image.pixels.count == image.width * image.height * image.channels else {
            throw CNNError(.invalidArgument, "cannot encode a \(image.width)x\(image.height)x\(image.channels) image")
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { p in
            cnnpng_encode(p.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels), Int32(bitDepth),
                          interlaced ? 1 : 0, palette ? 1 : 0, &out, &size, &message, message.count)
        }
        guard status == 0, let out else {
            throw CNNError(.invalidArgument, "cannot encode PNG: \(message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })")
        }
        defer { cnnpng_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }
}

/// Image files as the library reads them: JPEG or PNG, told apart by their first bytes (never by
/// the file name).
public enum ImageFile {
    /// The file names a folder dataset takes (any case).
    public static let extensions = [".jpg", ".jpeg", ".png"]

    public static func hasImageExtension(_ name: String) -> Bool {
        let lower = name.lowercased()
        return extensions.contains { lower.hasSuffix($0) }
    }

    /// Decodes JPEG or PNG bytes; `minWidth`/`minHeight` allow JPEG's DCT scaling.
    public static func decode(_ bytes: [UInt8], options: JPEGOptions = JPEGOptions(),
                              minWidth: Int = 0, minHeight: Int = 0) throws -> DecodedJPEG {
        if PNG.isPNG(bytes) { return try PNG.decode(bytes, options: options) }
        if bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xD8 {
            return try JPEG.decode(bytes, options: options, minWidth: minWidth, minHeight: minHeight)
        }
        guard !bytes.isEmpty else { throw CNNError(.badFormat, "empty file") }
        let head = bytes.prefix(8).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        throw CNNError(.badFormat, "neither a JPEG nor a PNG file (it starts with bytes \(head))")
    }
}
