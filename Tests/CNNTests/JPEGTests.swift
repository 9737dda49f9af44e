import Foundation
import Testing
@testable import CNN

/// Runs a command-line tool (cjpeg/djpeg of libjpeg-turbo-progs) and returns its stdout.
func runTool(_ tool: String, _ args: [String], input: Data? = nil) throws -> Data {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/" + tool)
    p.arguments = args
    let out = Pipe(), inPipe = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    if input != nil { p.standardInput = inPipe }
    try p.run()
    if let input {
        inPipe.fileHandleForWriting.write(input)
        try inPipe.fileHandleForWriting.close()
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw CNNError(.io, "\(tool) \(args) failed") }
    return data
}

/// A smooth test pattern with some detail, `channels` 1 or 3.
func pattern(width: Int, height: Int, channels: Int) -> Image {
    var image = Image(width: width, height: height, channels: channels)
    for y in 0..<height {
        for x in 0..<width {
            for c in 0..<channels {
                let v = 128 + 90 * sin(Double(x) * 0.21 + Double(c)) * cos(Double(y) * 0.17 - Double(c) * 0.5) + Double((x * 7 + y * 3) % 13)
                image[x, y, c] = UInt8(max(0, min(255, v)))
            }
        }
    }
    return image
}

/// PNM (P5/P6) bytes of an image, and back.
func pnm(_ image: Image) -> Data {
    Data("P\(image.channels == 1 ? 5 : 6)\n\(image.width) \(image.height)\n255\n".utf8) + Data(image.pixels)
}

func parsePNM(_ data: Data) throws -> Image {
    let bytes = [UInt8](data)
    var fields: [String] = [], i = 0
    while fields.count < 4 && i < bytes.count {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        var f = ""
        while i < bytes.count, !(bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09) { f.append(Character(UnicodeScalar(bytes[i]))); i += 1 }
        fields.append(f)
    }
    i += 1
    guard fields.count == 4, let w = Int(fields[1]), let h = Int(fields[2]) else { throw CNNError(.badFormat, "bad PNM") }
    let c = fields[0] == "P5" ? 1 : 3
    return Image(width: w, height: h, channels: c, pixels: Array(bytes[i..<(i + w * h * c)]))
}

func maxDifference(_ a: Image, _ b: Image) -> Int {
    guard a.width == b.width, a.height == b.height, a.channels == b.channels else { return 999 }
    return zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
}

@Suite("JPEG decoding")
struct JPEGTests {
    /// Each kind of JPEG, made by cjpeg, decoded by us and by djpeg: equal within ±1.
    @Test(arguments: [
        ("gray baseline", 1, 32, 24, ["-grayscale"]),
        ("RGB 4:2:0", 3, 40, 32, ["-sample", "2x2"]),
        ("RGB 4:2:2", 3, 40, 32, ["-sample", "2x1"]),
        ("RGB 4:4:4", 3, 40, 32, ["-sample", "1x1"]),
        ("progressive", 3, 48, 40, ["-progressive"]),
        ("restart markers", 3, 48, 40, ["-restart", "1"]),
        ("odd size", 3, 37, 23, ["-sample", "2x2"]),
        ("odd gray progressive", 1, 29, 17, ["-grayscale", "-progressive"]),
        ("arithmetic-free optimized", 3, 33, 35, ["-optimize"]),
    ])
    func matchesDjpeg(_ name: String, _ channels: Int, _ w: Int, _ h: Int, _ flags: [String]) throws {
        let source = pattern(width: w, height: h, channels: channels)
        let jpeg = try runTool("cjpeg", ["-quality", "90"] + flags, input: pnm(source))
        let reference = try parsePNM(runTool("djpeg", ["-pnm", "-dct", "int"], input: jpeg))
        let ours = try JPEG.decode([UInt8](jpeg)).image
        #expect(ours.channels == channels && ours.width == w && ours.height == h, "\(name)")
        #expect(maxDifference(ours, reference) <= 1, "\(name): differs from djpeg by \(maxDifference(ours, reference))")
        #expect(maxDifference(ours, source) < 40, "\(name): far from the source")
    }

    @Test(arguments: [false, true])
    func cmykAndYCCK(_ ycck: Bool) throws {
        var cmyk = Image(width: 24, height: 16, channels: 4)
        for y in 0..<16 { for x in 0..<24 {
            cmyk[x, y, 0] = UInt8(x * 10); cmyk[x, y, 1] = UInt8(y * 15); cmyk[x, y, 2] = 128; cmyk[x, y, 3] = UInt8(200 - x * 3)
        } }
        let jpeg = try JPEG.encode(cmyk, quality: 100, ycck: ycck)
        let rgb = try JPEG.decode(jpeg).image
        #expect(rgb.channels == 3 && rgb.width == 24 && rgb.height == 16)
        // libjpeg writes an Adobe marker: stored values are inverted ink, RGB = stored · K / 255.
        var worst = 0
        for y in 0..<16 { for x in 0..<24 { for c in 0..<3 {
            let expected = (Int(cmyk[x, y, c]) * Int(cmyk[x, y, 3]) + 127) / 255
            worst = max(worst, abs(expected - Int(rgb[x, y, c])))
        } } }
        #expect(worst <= 6, "CMYK conversion off by \(worst)")
    }

    /// An APP1 segment with an EXIF orientation, inserted after SOI.
    func withOrientation(_ jpeg: [UInt8], _ orientation: Int, bigEndian: Bool) -> [UInt8] {
        var tiff: [UInt8] = bigEndian ? [0x4D, 0x4D, 0, 42, 0, 0, 0, 8] : [0x49, 0x49, 42, 0, 8, 0, 0, 0]
        let entry: [UInt8] = bigEndian
            ? [0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, UInt8(orientation), 0, 0, 0, 0, 0, 0]
            : [1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, UInt8(orientation), 0, 0, 0, 0, 0, 0, 0]
        tiff += entry
        let payload: [UInt8] = [0x45, 0x78, 0x69, 0x66, 0, 0] + tiff
        let length = payload.count + 2
        return [0xFF, 0xD8, 0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 255)] + payload + jpeg[2...]
    }

    @Test func exifOrientations() throws {
        let source = pattern(width: 6, height: 4, channels: 3)
        let plain = try JPEG.encode(source, quality: 100, subsampling: 444)
        let upright = try JPEG.decode(plain).image
        // Reference: where each oriented pixel comes from, written as rotations and mirrors.
        func reference(_ o: Int) -> Image {
            let w = upright.width, h = upright.height
            var out = Image(width: o >= 5 ? h : w, height: o >= 5 ? w : h, channels: 3)
            for y in 0..<h { for x in 0..<w { for c in 0..<3 {
                let v = upright[x, y, c]
                switch o {
                case 1: out[x, y, c] = v
                case 2: out[w - 1 - x, y, c] = v
                case 3: out[w - 1 - x, h - 1 - y, c] = v
                case 4: out[x, h - 1 - y, c] = v
                case 5: out[y, x, c] = v
                case 6: out[h - 1 - y, x, c] = v          // rotated 90° clockwise
                case 7: out[h - 1 - y, w - 1 - x, c] = v
                default: out[y, w - 1 - x, c] = v         // rotated 90° counter-clockwise
                }
            } } }
            return out
        }
        for o in 1...8 {
            for big in [false, true] {
                let file = withOrientation(plain, o, bigEndian: big)
                #expect(JPEG.exifOrientation(file) == o)
                let decoded = try JPEG.decode(file)
                #expect(decoded.orientation == o)
                #expect(decoded.image == reference(o), "orientation \(o)")
                var off = JPEGOptions()
                off.applyOrientation = false
                #expect(try JPEG.decode(file, options: off).image == upright)
            }
        }
        // Malformed EXIF is ignored, not trusted.
        var bad = withOrientation(plain, 6, bigEndian: false)
        bad[16] = 0xFF  // IFD offset far outside the segment
        #expect(JPEG.exifOrientation(bad) == 1)
        #expect(try JPEG.decode(bad).image == upright)
    }

    @Test func dctScaledDecodeMatchesFullDecodeAndResize() throws {
        let source = pattern(width: 256, height: 192, channels: 3)
        let jpeg = try JPEG.encode(source, quality: 95)
        let full = try JPEG.decode(jpeg).image
        for (target, expectedWidth) in [(32, 32), (64, 64), (100, 128), (200, 256)] {
            let scaled = try JPEG.decode(jpeg, minWidth: target, minHeight: target * 3 / 4)
            #expect(scaled.image.width == expectedWidth, "min \(target): decoded at \(scaled.image.width)")
            let a = scaled.image.resized(width: target, height: target * 3 / 4)
            let b = full.resized(width: target, height: target * 3 / 4)
            let mean = Double(zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.reduce(0, +)) / Double(a.pixels.count)
            #expect(mean < 3, "DCT-scaled decode to \(target) differs by \(mean) on average")
        }
    }

    func expectFailure(_ bytes: [UInt8], _ expected: String? = nil, options: JPEGOptions = JPEGOptions(),
                       sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try JPEG.decode(bytes, options: options)
            Issue.record("decoded bad data", sourceLocation: sourceLocation)
        } catch let e as CNNError {
            #expect(e.kind == .badFormat, sourceLocation: sourceLocation)
            if let expected { #expect(e.message.contains(expected), "\(e.message)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func badDataNeverCrashes() throws {
        let good = try JPEG.encode(pattern(width: 64, height: 48, channels: 3), quality: 90, progressive: true)
        expectFailure([], "empty")
        expectFailure([1, 2, 3, 4], "not a JPEG")
        expectFailure(Array("hello, world".utf8), "not a JPEG")
        // Truncated at many offsets: an error, or (lenient) a partial image with a warning.
        var strict = JPEGOptions()
        strict.strict = true
        for cut in [2, 3, 10, 50, 100, 200, good.count / 2, good.count - 2] {
            let part = Array(good.prefix(cut))
            if let d = try? JPEG.decode(part) {
                #expect(d.warning != nil, "truncated at \(cut) decoded without a warning")
                expectFailure(part, options: strict)
            }
        }
        // Random bytes after a valid header, with several seeds.
        let headerEnd = good.firstIndex(of: 0xDA).map { $0 + 20 } ?? 200
        var rng = Random(seed: 3)
        for _ in 0..<30 {
            var bytes = Array(good.prefix(headerEnd))
            bytes += (0..<2000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? JPEG.decode(bytes)          // must return, with an image or an error
            _ = try? JPEG.decode(bytes, options: strict)
        }
        // Random corruption anywhere.
        for _ in 0..<100 {
            var bytes = good
            for _ in 0..<5 { bytes[rng.below(bytes.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? JPEG.decode(bytes)
        }
    }

    /// A header that declares 65535 × 65535 fails from the header, before any allocation.
    @Test func hugeDeclaredDimensionsFailFast() throws {
        var jpeg = try JPEG.encode(pattern(width: 16, height: 16, channels: 1), quality: 90)
        guard let sof = (0..<(jpeg.count - 9)).first(where: { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 }) else {
            Issue.record("no SOF0"); return
        }
        for i in [5, 7] { jpeg[sof + i] = 0xFD }   // 65000 × 65000: within libjpeg's own limit
        for i in [6, 8] { jpeg[sof + i] = 0xE8 }
        let start = monotonicSeconds()
        expectFailure(jpeg, "exceeds the limit")
        #expect(monotonicSeconds() - start < 0.5)
        var big = JPEGOptions()
        big.maxPixels = 100
        expectFailure(try JPEG.encode(pattern(width: 11, height: 10, channels: 1)), "exceeds the limit", options: big)
    }

    @Test func tooManyScans() throws {
        // cjpeg accepts at most 100 scans in a script: 3 DC scans and 32 AC bands × 3 = 99 scans.
        var script = "0: 0 0 0 2;\n0: 0 0 2 1;\n0: 0 0 1 0;\n"
        let bands = stride(from: 1, through: 63, by: 2).map { ($0, min($0 + 1, 63)) }
        for (al, ah) in [(2, 0), (1, 2), (0, 1)] { for (a, b) in bands { script += "0: \(a) \(b) \(ah) \(al);\n" } }
        let scriptPath = temporaryPath("scans.txt")
        defer { unlink(scriptPath) }
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let jpeg = [UInt8](try runTool("cjpeg", ["-grayscale", "-scans", scriptPath], input: pnm(pattern(width: 16, height: 16, channels: 1))))
        #expect(try JPEG.decode(jpeg).image.width == 16)      // 99 scans: within the default 100
        var few = JPEGOptions()
        few.maxScans = 50
        expectFailure(jpeg, "more than 50 progressive scans", options: few)
        // Repeating the last scan makes 149: over the default limit.
        guard let lastSOS = (0..<(jpeg.count - 1)).last(where: { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xDA }) else {
            Issue.record("no scan"); return
        }
        let lastScan = Array(jpeg[lastSOS..<(jpeg.count - 2)])
        var long = Array(jpeg[..<(jpeg.count - 2)])
        for _ in 0..<50 { long += lastScan }
        long += [0xFF, 0xD9]
        expectFailure(long, "more than 100 progressive scans")
    }
}
