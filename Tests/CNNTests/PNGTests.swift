import Foundation
import Testing
@testable import CNN

/// PNG through libpng: every color type, depth and interlacing decodes to the exact pixels, and
/// hostile files are errors within the limits.
@Suite("PNG")
struct PNGTests {
    /// The pixels a decoder must give for `image` written with `channels`: alpha dropped.
    func withoutAlpha(_ image: Image) -> Image {
        guard image.channels == 2 || image.channels == 4 else { return image }
        let kept = image.channels - 1
        var out = Image(width: image.width, height: image.height, channels: kept)
        for y in 0..<image.height { for x in 0..<image.width { for c in 0..<kept { out[x, y, c] = image[x, y, c] } } }
        return out
    }

    func withAlpha(_ image: Image) -> Image {
        var out = Image(width: image.width, height: image.height, channels: image.channels + 1)
        for y in 0..<image.height { for x in 0..<image.width {
            for c in 0..<image.channels { out[x, y, c] = image[x, y, c] }
            out[x, y, image.channels] = UInt8((x * 37 + y) % 256)
        } }
        return out
    }

    @Test(arguments: [(1, 8, false), (1, 16, false), (3, 8, false), (3, 8, true), (3, 16, true), (1, 8, true)])
    func decodesExactPixels(_ channels: Int, _ depth: Int, _ interlaced: Bool) throws {
        let image = pattern(width: 37, height: 23, channels: channels)
        for source in [image, withAlpha(image)] {
            let png = try PNG.encode(source, bitDepth: depth, interlaced: interlaced)
            let decoded = try PNG.decode(png)
            #expect(decoded.image == withoutAlpha(source), "\(source.channels) channels, \(depth) bits, interlaced \(interlaced)")
            #expect(decoded.warning == nil)
        }
    }

    @Test func decodesPalettes() throws {
        var image = Image(width: 20, height: 10, channels: 3)
        for y in 0..<10 { for x in 0..<20 { for c in 0..<3 { image[x, y, c] = UInt8(((x / 4) * 50 + c * 30 + y / 5 * 7) % 256) } } }
        let png = try PNG.encode(image, palette: true)
        #expect(try PNG.decode(png).image == image)
        #expect(try ImageFile.decode(png).image == image)   // told apart by the signature
    }

    @Test func hostileFilesAreErrors() throws {
        let good = try PNG.encode(pattern(width: 64, height: 48, channels: 3))
        func fails(_ bytes: [UInt8], _ kind: CNNError.Kind = .badFormat, _ options: JPEGOptions = JPEGOptions(), _ text: String = "") {
            do {
                _ = try PNG.decode(bytes, options: options)
                Issue.record("decoded a hostile PNG (\(text))")
            } catch let e as CNNError {
                #expect(e.kind == kind, "\(text): \(e.message)")
                #expect(!e.message.isEmpty)
            } catch { Issue.record("\(error)") }
        }
        fails([], .badFormat, JPEGOptions(), "empty")
        fails(Array(good[0..<8]), .badFormat, JPEGOptions(), "signature only")
        for cut in [20, 33, 60, good.count / 2, good.count - 13] { fails(Array(good[0..<cut]), .badFormat, JPEGOptions(), "cut at \(cut)") }
        var badCRC = good
        badCRC[29] ^= 0xFF   // inside IHDR
        fails(badCRC, .badFormat, JPEGOptions(), "IHDR CRC")
        var huge = good     // IHDR width and height 1,000,000 each, CRC fixed
        let side: [UInt8] = [0x00, 0x0F, 0x42, 0x40]
        huge.replaceSubrange(16..<20, with: side)
        huge.replaceSubrange(20..<24, with: side)
        let crc = crc32(Array(huge[12..<29]))
        huge.replaceSubrange(29..<33, with: [UInt8(crc >> 24), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc & 0xFF)])
        fails(huge, .badFormat, JPEGOptions(), "10^12 pixels")
        var small = JPEGOptions()
        small.maxBytes = 4096
        fails(good, .outOfMemory, small, "over the memory limit")
        var strict = JPEGOptions()
        strict.strict = true
        fails(Array(good[0..<(good.count - 12)]), .badFormat, strict, "no IEND, strict")
    }

    @Test func limitsArePixelsAndBytes() throws {
        let png = try PNG.encode(pattern(width: 300, height: 200, channels: 3))
        var options = JPEGOptions()
        options.maxPixels = 300 * 200 - 1
        #expect(throws: CNNError.self) { try PNG.decode(png, options: options) }
        options.maxPixels = 300 * 200
        #expect(try PNG.decode(png, options: options).image.width == 300)
    }

    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }
}
