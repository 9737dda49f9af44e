import Testing
@testable import CNN

@Suite("Model files")
struct ModelFileTests {
    func trainedModel() throws -> Model {
        let m = try Model(architecture: Architecture(parsing: "input(1,6,6) conv(4,3,pad=1) batchnorm relu maxpool(2) flatten dropout(0.2) dense(3)"), seed: 4)
        m.classNames = ["cat", "dog \"quoted\"", "ünïcode"]
        m.mean = [0.25]
        m.std = [0.5]
        var rng = Random(seed: 1)
        var tr = TestRandom(2)
        _ = m.forward(FloatBuffer(tr.values(2 * 36)), batch: 2, training: true, rng: &rng)  // moves BN stats
        return m
    }

    @Test func roundTrip() throws {
        let m = try trainedModel()
        let path = temporaryPath("roundtrip.safetensors")
        defer { unlink(path) }
        try m.save(to: path)
        let loaded = try Model.load(from: path)
        #expect(loaded.architecture == m.architecture)
        #expect(loaded.classNames == m.classNames)
        #expect(loaded.mean == m.mean && loaded.std == m.std)
        for (a, b) in zip(m.namedParameters, loaded.namedParameters) {
            #expect(a.name == b.name && a.parameter.value.array == b.parameter.value.array)
        }
        #expect((loaded.layers[1] as? BatchNorm)?.batchesTracked == 1)
        var tr = TestRandom(9)
        let x = tr.values(3 * 36, 0, 1)
        let p1 = x.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: 3) }
        let p2 = x.withUnsafeBufferPointer { loaded.predict($0.baseAddress!, batch: 3) }
        #expect(p1 == p2)
        // Saving the loaded model gives the same bytes.
        let path2 = temporaryPath("roundtrip2.safetensors")
        defer { unlink(path2) }
        try loaded.save(to: path2)
        #expect(try FileIO.read(path, maxBytes: 1 << 20) == FileIO.read(path2, maxBytes: 1 << 20))
    }

    func expectRejected(_ bytes: [UInt8], _ expected: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        let path = temporaryPath("bad-\(bytes.count)-\(bytes.reduce(0) { $0 &* 31 &+ Int($1) }).safetensors")
        defer { unlink(path) }
        bytes.withUnsafeBytes { b in try? FileIO.writeAtomically(path, [b]) }
        do {
            _ = try Model.load(from: path)
            Issue.record("loaded a bad file", sourceLocation: sourceLocation)
        } catch let e as CNNError {
            #expect(e.kind == .badFormat || e.kind == .io, sourceLocation: sourceLocation)
            #expect(!e.message.isEmpty, sourceLocation: sourceLocation)
            if let expected { #expect(e.message.contains(expected), "\(e.message)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func truncatedAndCorruptedFilesAreRejected() throws {
        let m = try trainedModel()
        let path = temporaryPath("good.safetensors")
        defer { unlink(path) }
        try m.save(to: path)
        let good = try FileIO.read(path, maxBytes: 1 << 20)
        // Truncated at many offsets, including inside the header length and the JSON.
        for cut in [0, 1, 7, 8, 9, 20, 100, good.count / 2, good.count - 4, good.count - 1] {
            expectRejected(Array(good.prefix(cut)))
        }
        // Extra data at the end.
        expectRejected(good + [1, 2, 3, 4], "belong to no tensor")
        // A header length that points past the end.
        var long = good
        long[0] = 0xFF; long[1] = 0xFF; long[2] = 0xFF
        expectRejected(long, "header length")
        // Random bytes.
        var r = Random(seed: 1)
        for n in [5, 64, 4096] { expectRejected((0..<n).map { _ in UInt8(truncatingIfNeeded: r.next()) }) }
        // Every single-byte corruption inside the header is caught or leaves a valid model.
        let headerLength = Int(good[0]) | Int(good[1]) << 8
        for i in stride(from: 8, to: 8 + headerLength, by: 7) {
            var bad = good
            bad[i] ^= 0x5A
            let p = temporaryPath("flip.safetensors")
            bad.withUnsafeBytes { b in try? FileIO.writeAtomically(p, [b]) }
            _ = try? Model.load(from: p)   // must not crash; errors are fine
            unlink(p)
        }
    }

    func rewriteHeader(_ good: [UInt8], _ edit: (String) -> String) -> [UInt8] {
        let n = Int(good[0]) | Int(good[1]) << 8 | Int(good[2]) << 16
        let header = String(decoding: good[8..<(8 + n)], as: UTF8.self)
        var newHeader = Array(edit(header).utf8)
        while newHeader.count % 8 != 0 { newHeader.append(0x20) }
        var out: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: newHeader.count >> (8 * $0)) }
        out += newHeader
        out += good[(8 + n)...]
        return out
    }

    @Test func resizedAndMismatchedTensorsAreRejected() throws {
        let m = try trainedModel()
        let path = temporaryPath("mismatch.safetensors")
        defer { unlink(path) }
        try m.save(to: path)
        let good = try FileIO.read(path, maxBytes: 1 << 20)
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("\"shape\":[4,1,3,3]", "\"shape\":[4,1,9]") }, "0.weight")
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("conv(4,3,pad=1)", "conv(5,3,pad=1)") })
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("\"format\":\"swiftcnn\"", "\"format\":\"other\"") }, "not a SwiftCNN model")
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("\"0.weight\"", "\"0.weights\"") })
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("\"F32\"", "\"F16\"") }, "dtype")
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("input(1,6,6)", "input(1,6,6") }, "architecture")
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("[0.25]", "[0.25,1]") }, "normalization")
        expectRejected(rewriteHeader(good) { $0.replacingOccurrences("\"data_offsets\":[0,", "\"data_offsets\":[4,") })
    }

    @Test func savingIsAtomicAndKeepsTheOldFileOnError() throws {
        let m = try trainedModel()
        let path = temporaryPath("atomic.safetensors")
        defer { unlink(path) }
        try m.save(to: path)
        let before = try FileIO.read(path, maxBytes: 1 << 20)
        #expect(throws: CNNError.self) { try m.save(to: "/nonexistent-dir/x.safetensors") }
        #expect(throws: CNNError.self) { try m.save(to: "/tmp") }
        #expect(try FileIO.read(path, maxBytes: 1 << 20) == before)
    }

    @Test func missingFile() {
        #expect(throws: CNNError.self) { try Model.load(from: "/nonexistent.safetensors") }
        #expect(throws: CNNError.self) { try Model.load(from: "/tmp") }
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String { replacing(a, with: b) }
}

#if canImport(Glibc)
import Glibc
#endif
