import Testing
@testable import CNN

@Suite("ONNX")
struct ONNXTests {
    /// Every layer kind and block, with moved batch-norm statistics and a normalization.
    static let architectures = [
        "input(1,6,6) conv(4,3,pad=1) batchnorm relu maxpool(3,stride=2,pad=1) zeropad(0,1,0,1) conv(4,3,stride=2) zeropad(1) flatten dropout(0.2) dense(3)",
        "input(3,8,8) conv(8,3,pad=1,stride=2) relu6 conv(8,3,pad=1,groups=8,bias=false) hardswish conv(8,1) silu gelu "
            + "conv(8,3x1,pad=1x0) leakyrelu(alpha=0.2) hardsigmoid sigmoid tanh avgpool(3,stride=1,pad=1,count_include_pad=false) avgpool(2) flatten batchnorm(eps=0.001,momentum=0.01) dense(4,bias=false)",
        "input(2,8,8) conv(4,3,pad=1) batchnorm relu residual[conv(4,3,pad=1) batchnorm relu conv(4,3,pad=1) batchnorm] relu "
            + "residual[conv(8,3,stride=2,pad=1) | conv(8,1,stride=2) batchnorm] concat[conv(4,1) | | conv(2,3,pad=1) relu] "
            + "se(2) se(3,act=silu,gate=hardsigmoid) globalavgpool flatten dense(3)",
    ]

    static func model(_ text: String) throws -> Model {
        let m = try Model(architecture: Architecture(parsing: text), seed: 3)
        m.classNames = (0..<m.numClasses).map { "class \($0) \"ü\"" }
        m.mean = (0..<m.inputShape.c).map { 0.1 * Float($0 + 1) }
        m.std = (0..<m.inputShape.c).map { 0.3 + 0.1 * Float($0) }
        var rng = Random(seed: 1)
        var tr = TestRandom(2)
        _ = m.forward(FloatBuffer(tr.values(2 * m.inputShape.count)), batch: 2, training: true, rng: &rng)  // moves BN stats
        return m
    }

    /// Export, then import: the same architecture, names, normalization and fit, the same weights
    /// bit for bit, the same predictions; and exporting the import gives the same bytes.
    @Test(arguments: architectures)
    func exportThenImportGivesTheModelBack(_ text: String) throws {
        let m = try ONNXTests.model(text)
        m.imageFit = .pad
        let bytes = try m.onnxBytes()
        var importer = try ONNXImporter(ONNXFile.parse(bytes, path: "m.onnx"))
        let back = try importer.model()
        #expect(back.architecture == m.architecture)
        #expect(back.classNames == m.classNames && back.mean == m.mean && back.std == m.std && back.imageFit == .pad)
        for (a, b) in zip(m.namedParameters, back.namedParameters) {
            #expect(a.name == b.name && a.parameter.value.array.map(\.bitPattern) == b.parameter.value.array.map(\.bitPattern), "\(a.name)")
        }
        var tr = TestRandom(9)
        let x = tr.values(3 * m.inputShape.count, 0, 1)
        let p1 = x.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: 3) }
        let p2 = x.withUnsafeBufferPointer { back.predict($0.baseAddress!, batch: 3) }
        #expect(p1 == p2)
        #expect(try back.onnxBytes() == bytes)
    }

    @Test func batchNormMomentumComesBackAsWritten() {
        for m: Float in [0.1, 0.01, 0.001, 0.03, 0.5, 1] {
            #expect(ONNXImporter.torchMomentum(1 - m) == m)
        }
    }

    /// Any prefix of a good file, and any single byte changed, gives a value or an error.
    @Test func truncatedAndCorruptedFilesAreErrors() throws {
        let bytes = try ONNXTests.model(ONNXTests.architectures[2]).onnxBytes()
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)) {
            #expect(throws: CNNError.self) {
                var importer = try ONNXImporter(ONNXFile.parse(Array(bytes[..<cut]), path: "cut.onnx"))
                _ = try importer.model()
            }
        }
        var rng = Random(seed: 5)
        for _ in 0..<300 {
            var bad = bytes
            let i = Int(rng.next() % UInt64(bad.count))
            bad[i] = UInt8(truncatingIfNeeded: rng.next())
            if let file = try? ONNXFile.parse(bad, path: "bad.onnx"), var importer = try? ONNXImporter(file) { _ = try? importer.model() }
        }
    }

    /// The protobuf reader: lengths past the end, over-long varints and wire types 3 and 4.
    @Test func protobufReaderChecksEveryLength() throws {
        func fails(_ bytes: [UInt8], _ expected: String) {
            var r = ProtoReader(bytes, 0..<bytes.count, context: "m")
            do {
                while let (_, wire) = try r.next() { try r.skip(wire) }
                Issue.record("no error for \(bytes)")
            } catch let e as CNNError {
                #expect(e.message.contains(expected), "\(e.message)")
            } catch { Issue.record("\(error)") }
        }
        fails([0x0a, 0x05, 1, 2], "claims 5 bytes, but only 2 are left")
        fails([0x08] + [UInt8](repeating: 0xff, count: 11), "longer than ten bytes")
        fails([0x0b], "wire type 3")
        fails([0x0d, 1, 2], "four bytes run past the end")
        fails([0x08, 0x80], "runs past the end")
        var w = ProtoWriter()
        w.int(1, -3)
        w.string(2, "héllo")
        w.float(3, 1.5)
        w.ints(4, [1, 300, -1])
        var r = ProtoReader(w.bytes, 0..<w.bytes.count, context: "m")
        var ints: [Int] = []
        while let (field, wire) = try r.next() {
            switch field {
            case 1: #expect(try r.int(wire, "a") == -3)
            case 2: #expect(try r.string(wire, "b") == "héllo")
            case 3: #expect(try r.float(wire, "c") == 1.5)
            case 4: try r.ints(wire, "d", into: &ints, limit: 3)
            default: Issue.record("field \(field)")
            }
        }
        #expect(ints == [1, 300, -1])
    }
}
