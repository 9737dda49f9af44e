import Foundation
import Testing
@testable import CNN

/// Plain references for the preprocessing: each output pixel computed directly in Double.
enum ImageReference {
    /// Bilinear (half-pixel centers, clamped) along an enlarged axis, area average along a
    /// shrunk one, as a direct 2-D sum.
    static func resize(_ im: Image, _ w: Int, _ h: Int) -> Image {
        func weights(_ src: Int, _ dst: Int, _ o: Int) -> [(Int, Double)] {
            let scale = Double(src) / Double(dst)
            if dst < src {
                var list: [(Int, Double)] = []
                for i in 0..<src {
                    let overlap = min(Double(o + 1) * scale, Double(i + 1)) - max(Double(o) * scale, Double(i))
                    if overlap > 0 { list.append((i, overlap / scale)) }
                }
                return list
            }
            let x = min(max((Double(o) + 0.5) * scale - 0.5, 0), Double(src - 1))
            let i0 = Int(x.rounded(.down)), i1 = min(i0 + 1, src - 1)
            return [(i0, 1 - (x - Double(i0))), (i1, x - Double(i0))]
        }
        var out = Image(width: w, height: h, channels: im.channels)
        for y in 0..<h { for x in 0..<w { for c in 0..<im.channels {
            var s = 0.0
            for (sy, wy) in weights(im.height, h, y) { for (sx, wx) in weights(im.width, w, x) { s += wy * wx * Double(im[sx, sy, c]) } }
            out[x, y, c] = UInt8(max(0, min(255, s.rounded())))
        } } }
        return out
    }
}

@Suite("Image preprocessing")
struct ImageTests {
    @Test(arguments: [(40, 30, 10, 8), (40, 30, 13, 7), (20, 15, 40, 30), (17, 9, 33, 20), (30, 30, 30, 12), (9, 31, 27, 5)])
    func resizeMatchesReference(_ sw: Int, _ sh: Int, _ dw: Int, _ dh: Int) {
        let image = pattern(width: sw, height: sh, channels: 3)
        let fast = image.resized(width: dw, height: dh), reference = ImageReference.resize(image, dw, dh)
        #expect(maxDifference(fast, reference) <= 1, "\(sw)x\(sh) -> \(dw)x\(dh): \(maxDifference(fast, reference))")
    }

    @Test func areaAveragingOfAConstantIsExact() {
        let gray = Image(width: 37, height: 23, channels: 1, fill: 77)
        #expect(gray.resized(width: 5, height: 4).pixels.allSatisfy { $0 == 77 })
        #expect(gray.resized(width: 80, height: 50).pixels.allSatisfy { $0 == 77 })
    }

    @Test func channels() {
        var rgb = Image(width: 2, height: 1, channels: 3)
        rgb.pixels = [255, 0, 0, 10, 200, 30]
        let gray = rgb.converted(toChannels: 1)
        let first: Double = 0.299 * 255
        let second: Double = 0.299 * 10 + 0.587 * 200 + 0.114 * 30
        #expect(gray.pixels == [UInt8(first.rounded()), UInt8(second.rounded())])
        let back = gray.converted(toChannels: 3)
        #expect(back.pixels == [gray.pixels[0], gray.pixels[0], gray.pixels[0], gray.pixels[1], gray.pixels[1], gray.pixels[1]])
    }

    @Test func cropPadAndFit() {
        let image = pattern(width: 10, height: 6, channels: 1)
        let crop = image.centerCropped(width: 4, height: 2)
        #expect(crop.width == 4 && crop.height == 2)
        #expect(crop[0, 0, 0] == image[3, 2, 0] && crop[3, 1, 0] == image[6, 3, 0])
        let pad = image.padded(width: 12, height: 10)
        #expect(pad[0, 0, 0] == 0 && pad[1, 2, 0] == image[0, 0, 0] && pad[10, 7, 0] == image[9, 5, 0])
        // crop: cover then center-crop; pad: fit inside then pad; stretch: exact size.
        for fit in ImageFit.allCases {
            let f = image.fitted(channels: 3, width: 8, height: 8, fit: fit)
            #expect(f.width == 8 && f.height == 8 && f.channels == 3, "\(fit)")
        }
        let padded = image.fitted(channels: 1, width: 8, height: 8, fit: .pad)
        #expect(padded[0, 0, 0] == 0 && padded[4, 4, 0] != 0)       // letterboxed: black bands above and below
        let cropped = image.fitted(channels: 1, width: 6, height: 6, fit: .crop)
        #expect(cropped == image.centerCropped(width: 6, height: 6))  // height already 6: only the crop
    }

    /// Crop computes only the centered window of the cover-size resize: the same bytes as resizing
    /// whole and cropping, for shrinking, enlarging and mixed axes.
    @Test(arguments: [(10, 6, 8, 8), (7, 31, 5, 9), (40, 3, 12, 12), (3, 3, 17, 5), (64, 48, 10, 38), (1, 200, 38, 10)])
    func cropComputesOnlyTheWindow(_ sw: Int, _ sh: Int, _ w: Int, _ h: Int) {
        for channels in [1, 3] {
            let image = pattern(width: sw, height: sh, channels: channels)
            let useWidth = sw * h <= sh * w
            let rw = useWidth ? w : max(w, (sw * h + sh / 2) / sh), rh = useWidth ? max(h, (sh * w + sw / 2) / sw) : h
            let whole = image.resized(width: rw, height: rh).centerCropped(width: w, height: h)
            #expect(image.fitted(channels: channels, width: w, height: h, fit: .crop) == whole, "\(sw)x\(sh) -> \(w)x\(h)")
        }
    }

    /// Found by the JPEG fuzzer: a 1×59875 image fitted to 38×10 was first resized to
    /// 38×2,275,250 pixels (260 MB, 23 s under ASan); now only the 38×10 window is computed.
    @Test func extremeAspectRatioCostsItsWindow() {
        let tall = Image(width: 1, height: 59875, channels: 3, fill: 90)
        let f = tall.fitted(channels: 3, width: 38, height: 10, fit: .crop)
        #expect(f.width == 38 && f.height == 10 && f.pixels.allSatisfy { $0 == 90 })
    }
}

@Suite("Folder datasets, augmentation, prefetch", .serialized)
struct FolderTests {
    /// root/<class>/<files>; returns the root.
    func makeFolder(_ name: String, classes: [String: [String: [UInt8]]]) throws -> String {
        let root = temporaryPath(name)
        try? FileManager.default.removeItem(atPath: root)
        for (cls, files) in classes {
            try FileManager.default.createDirectory(atPath: root + "/" + cls, withIntermediateDirectories: true)
            for (file, bytes) in files { FileManager.default.createFile(atPath: root + "/" + cls + "/" + file, contents: Data(bytes)) }
        }
        return root
    }

    func jpeg(_ seed: Int, channels: Int = 3) throws -> [UInt8] {
        var image = pattern(width: 20 + seed % 7, height: 16 + seed % 5, channels: channels)
        for i in 0..<image.pixels.count { image.pixels[i] = image.pixels[i] &+ UInt8(seed * 37 % 256) }
        return try JPEG.encode(image, quality: 90)
    }

    @Test func loadsClassesSortedAndSkipsBadFiles() throws {
        let good = try jpeg(1)
        let root = try makeFolder("folder-a", classes: [
            "zebra": ["1.jpg": good, "2.JPEG": try jpeg(2, channels: 1), "notes.txt": [1, 2, 3]],
            "apple": ["a.jpeg": try jpeg(3), "broken.jpg": Array(good.prefix(40)), "empty.jpg": []],
            "mango": ["x.Jpg": try jpeg(4)],
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        var o = FolderOptions(channels: 3, height: 12, width: 12)
        let d = try Dataset.fromFolder(root, options: o)
        #expect(d.classNames == ["apple", "mango", "zebra"])
        #expect(d.count == 4)
        #expect(d.labels == [0, 1, 2, 2])
        #expect(d.skipped.count == 3)   // the two bad JPEGs, and notes.txt: every unused file is named
        #expect(d.skipped.map { ($0.path as NSString).lastPathComponent }.sorted() == ["broken.jpg", "empty.jpg", "notes.txt"])
        #expect(d.skipped.first { $0.path.hasSuffix("notes.txt") }?.reason.contains("not an image type") == true)
        #expect(d.skipped.allSatisfy { !$0.reason.isEmpty })
        o.strict = true
        #expect(throws: CNNError.self) { try Dataset.fromFolder(root, options: o) }
    }

    @Test func folderErrors() throws {
        let empty = try makeFolder("folder-empty", classes: [:])
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let o = FolderOptions(channels: 1, height: 8, width: 8)
        func message(_ path: String) -> String {
            do { _ = try Dataset.fromFolder(path, options: o); return "" } catch let e as CNNError { return e.message } catch { return "\(error)" }
        }
        #expect(message(empty).contains("no class folders"))
        #expect(message(empty + "/nothing").contains("No such file"))
        #expect(message(sampleDir + "/LICENSE").contains("not a directory"))
        let noJPEG = try makeFolder("folder-nojpeg", classes: ["a": ["x.jpg": try jpeg(1)], "b": ["readme.txt": [65]]])
        defer { try? FileManager.default.removeItem(atPath: noJPEG) }
        #expect(message(noJPEG).contains("class folder 'b' holds no .jpg"))
        let allBad = try makeFolder("folder-allbad", classes: ["a": ["x.jpg": [0xFF, 0xD8, 0xFF]]])
        defer { try? FileManager.default.removeItem(atPath: allBad) }
        #expect(message(allBad).contains("none of the 1 files could be decoded"))
    }

    /// The shipped JPEG sample trains to the same bytes whether the images are kept in memory or
    /// decoded per batch on the loader threads, with any number of loader and compute threads,
    /// and augmentation is reproducible from the seed.
    @Test func cachedStreamedAugmentedAndThreadedRunsAgree() throws {
        let root = sampleDir.replacingOccurrences(of: "fashion-mnist-sample", with: "fashion-mnist-jpeg") + "/train"
        var o = FolderOptions(channels: 1, height: 28, width: 28)
        let cached = try Dataset.fromFolder(root, options: o).prefix(256)
        o.cacheBytes = 0
        let streamed = try Dataset.fromFolder(root, options: o).prefix(256)
        if case .files = streamed.pixels {} else { Issue.record("not streamed") }
        #expect(cached.count == 256 && cached.classNames.count == 10)
        let spec = "input(1,28,28) conv(4,3) relu maxpool(2) flatten dropout(0.2) dense(10)"
        func run(_ d: Dataset, augment: Bool, loaders: Int, threads: Int) throws -> [Float] {
            try threadSettingLock.with {
                ThreadPool.setThreads(threads)
                defer { ThreadPool.setThreads(1) }
                var s = TrainingSettings()
                s.epochs = 2
                s.batchSize = 32
                s.normalization = ([0.3], [0.35])
                s.loaderThreads = loaders
                if augment { s.augmentation.flip = true; s.augmentation.translate = 2; s.augmentation.brightness = 0.1; s.augmentation.contrast = 0.2 }
                let m = try Model(architecture: Architecture(parsing: spec), seed: 2)
                try Trainer(model: m, settings: s).fit(d)
                return m.namedParameters.flatMap { $0.parameter.value.array }
            }
        }
        let plain = try run(cached, augment: false, loaders: 1, threads: 1)
        #expect(try run(streamed, augment: false, loaders: 2, threads: 1) == plain)
        let augmented = try run(cached, augment: true, loaders: 1, threads: 1)
        #expect(augmented != plain)
        #expect(try run(cached, augment: true, loaders: 3, threads: 2) == augmented)
        #expect(try run(streamed, augment: true, loaders: 2, threads: 1) == augmented)
    }

    @Test func augmentationMovesPixelsAsPromised() {
        let shape = Shape(c: 1, h: 3, w: 4)
        let x0: [Float] = (0..<12).map { Float($0 + 1) / 20 }
        var scratch = [Float](repeating: 0, count: 12)
        var a = Augmentation()
        a.flip = true
        var flipped = 0, seen = 0
        for seed in 0..<40 {
            var x = x0
            var rng = Random(seed: UInt64(seed))
            x.withUnsafeMutableBufferPointer { a.apply($0.baseAddress!, shape: shape, rng: &rng, scratch: &scratch) }
            if x == x0 { seen += 1 } else {
                #expect(x == [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9].map { Float($0) / 20 })
                flipped += 1
            }
        }
        #expect(flipped > 8 && seen > 8)
        var t = Augmentation()
        t.translate = 1
        for seed in 0..<20 {
            var x = x0
            var rng = Random(seed: UInt64(seed))
            x.withUnsafeMutableBufferPointer { t.apply($0.baseAddress!, shape: shape, rng: &rng, scratch: &scratch) }
            // Every value is an original pixel or the black padding, and the order is kept.
            let kept = x.filter { $0 != 0 }
            #expect(kept.allSatisfy { x0.contains($0) } && kept == kept.sorted())
        }
    }

    /// Random erasing fills one rectangle of 2-33 % of the image with each channel's mean, in about
    /// `erase` of the samples, and leaves every other pixel; off, it draws nothing (runs without it
    /// keep their generator's sequence).
    @Test func randomErasing() {
        let shape = Shape(c: 2, h: 16, w: 20), count = shape.count
        let x0: [Float] = (0..<count).map { Float(($0 * 37) % 101) / 100 }
        var scratch = [Float](repeating: 0, count: count)
        var a = Augmentation()
        a.erase = 0.5
        var erased = 0
        for seed in 0..<60 {
            var x = x0
            var rng = Random(seed: UInt64(seed))
            x.withUnsafeMutableBufferPointer { a.apply($0.baseAddress!, shape: shape, rng: &rng, scratch: &scratch) }
            let changed = (0..<count).filter { x[$0] != x0[$0] }
            guard !changed.isEmpty else { continue }
            erased += 1
            for c in 0..<2 {
                let plane = Array(x0[(c * 320)..<((c + 1) * 320)])
                let mean = plane.reduce(0, +) / 320
                let inPlane = changed.filter { $0 / 320 == c }.map { $0 % 320 }
                #expect(inPlane.allSatisfy { abs(x[c * 320 + $0] - mean) < 1e-6 })
                // A rectangle: its rows and columns span exactly the changed pixels' count.
                let rows = Set(inPlane.map { $0 / 20 }), cols = Set(inPlane.map { $0 % 20 })
                #expect(inPlane.count <= rows.count * cols.count && rows.count * cols.count <= 320 * 33 / 100 + 20)
            }
        }
        #expect(erased > 15 && erased < 45, "\(erased) of 60 erased")
        var rng = Random(seed: 1), plain = Random(seed: 1)
        var x = x0
        x.withUnsafeMutableBufferPointer { Augmentation().apply($0.baseAddress!, shape: shape, rng: &rng, scratch: &scratch) }
        _ = plain.below(2); _ = plain.uniform(); _ = plain.uniform()   // flip, brightness, contrast
        #expect(rng.uniform() == plain.uniform(), "without erasing the draws are the same as before")
    }

    @Test func splitIsSeededAndDisjoint() throws {
        let d = try IDX.load(images: sampleDir + "/t10k-images-idx3-ubyte.gz")
        let (a, b) = try d.split(validationFraction: 0.2, seed: 5)
        #expect(a.count == 400 && b.count == 100)
        let (a2, b2) = try d.split(validationFraction: 0.2, seed: 5)
        #expect(a.labels == a2.labels && b.labels == b2.labels)
        #expect(throws: CNNError.self) { try d.split(validationFraction: 1, seed: 1) }
    }
}
