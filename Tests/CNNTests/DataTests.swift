import Testing
@testable import CNN

@Suite("IDX files and datasets")
struct DataTests {
    @Test func loadsTheShippedSample() throws {
        let train = try IDX.load(images: sampleDir + "/train-images-idx3-ubyte.gz")
        #expect(train.count == 2000)
        #expect(train.shape == Shape(c: 1, h: 28, w: 28))
        #expect(train.classNames.count == 10 && train.classNames[9] == "Ankle boot")
        #expect(Set(train.labels).count == 10)
        let stats = train.channelStatistics()
        #expect(abs(stats.mean[0] - 0.286) < 0.01 && abs(stats.std[0] - 0.353) < 0.01)
    }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let path = temporaryPath(name)
        bytes.withUnsafeBytes { b in try? FileIO.writeAtomically(path, [b]) }
        return path
    }

    func header(_ magic: UInt8, _ dims: [Int]) -> [UInt8] {
        [0, 0, 8, magic] + dims.flatMap { d in (0..<4).reversed().map { UInt8(truncatingIfNeeded: d >> (8 * $0)) } }
    }

    @Test func plainIDXAndErrors() throws {
        let images = write("a-images-idx3-ubyte", header(3, [3, 2, 2]) + (0..<12).map(UInt8.init))
        let labels = write("a-labels-idx1-ubyte", header(1, [3]) + [0, 2, 1])
        defer { unlink(images); unlink(labels) }
        let d = try IDX.load(images: images)
        #expect(d.count == 3 && d.labels == [0, 2, 1] && d.classNames == ["0", "1", "2"])

        func rejects(_ imageBytes: [UInt8], _ labelBytes: [UInt8], _ expected: String) {
            let i = write("b-images-idx3-ubyte", imageBytes), l = write("b-labels-idx1-ubyte", labelBytes)
            defer { unlink(i); unlink(l) }
            do {
                _ = try IDX.load(images: i)
                Issue.record("accepted bad IDX (\(expected))")
            } catch let e as CNNError {
                #expect(e.message.contains(expected), "\(e.message)")
            } catch { Issue.record("\(error)") }
        }
        let good = header(3, [3, 2, 2]) + (0..<12).map(UInt8.init), goodLabels = header(1, [3]) + [0, 2, 1]
        rejects(header(1, [3, 2, 2]) + (0..<12).map(UInt8.init), goodLabels, "not an IDX images file")
        rejects(Array(good.prefix(20)), goodLabels, "declares 3 images of 2×2 (12 bytes), but the file holds 4 bytes")
        rejects(Array(good.prefix(10)), goodLabels, "IDX images header")
        rejects(good + [7], goodLabels, "but the file holds 13 bytes")
        // 16 bytes declaring 16 GiB: refused from the file's size, before anything is read.
        rejects(header(3, [65536, 512, 512]), goodLabels, "(17179869184 bytes), but the file holds 0 bytes")
        rejects(header(3, [0x7FFF_FFFF, 65535, 65535]), goodLabels, "implausible")
        rejects(good, header(1, [2]) + [0, 1], "2 labels for the 3 images")
        rejects(good, header(3, [3]) + [0, 1, 2], "not an IDX labels file")
        rejects(good, [], "IDX labels header")
    }

    @Test func corruptGzipIsRejected() throws {
        var gz = try FileIO.read(sampleDir + "/t10k-labels-idx1-ubyte.gz", maxBytes: 1 << 20)
        let images = try FileIO.read(sampleDir + "/t10k-images-idx3-ubyte.gz", maxBytes: 1 << 22)
        for (name, bytes) in [("trunc", Array(gz.prefix(gz.count / 2))), ("flip", { gz[gz.count / 2] ^= 0xFF; return gz }())] {
            let i = write("\(name)-images-idx3-ubyte.gz", images), l = write("\(name)-labels-idx1-ubyte.gz", bytes)
            defer { unlink(i); unlink(l) }
            #expect(throws: CNNError.self) { try IDX.load(images: i) }
        }
    }

    /// A gzip stream is read as it decompresses: a header's claim is never allocated up front.
    @Test func gzipDeclaringMoreThanItHolds() throws {
        let dir = repositoryRoot + "/Tests/data/hostile/"
        do {
            _ = try IDX.load(images: dir + "declares-4gib-images-idx3-ubyte.gz", labels: dir + "declares-4gib-labels-idx1-ubyte.gz")
            Issue.record("accepted a gzip IDX file that declares 4 GiB")
        } catch let e as CNNError {
            #expect(e.kind == .badFormat)
            #expect(e.message.contains("file ends after 0 of the 4294967296 bytes"), "\(e.message)")
        }
        // Trailing bytes after a gzip stream's declared data are still an error.
        let labels = try FileIO.GzipReader(sampleDir + "/t10k-labels-idx1-ubyte.gz")
        #expect(try labels.readExactly(8, what: "header").count == 8)
        #expect(try labels.readExactly(100, what: "labels").count == 100)
        #expect(try !labels.atEnd())
    }

    @Test func missingLabels() {
        #expect(throws: CNNError.self) { try IDX.load(images: "/nonexistent/train-images-idx3-ubyte.gz") }
        #expect(throws: CNNError.self) { try IDX.load(images: sampleDir + "/LICENSE") }
    }

    @Test func datasetValidation() {
        #expect(throws: CNNError.self) { try Dataset(bytes: [1, 2, 3], labels: [0], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"]) }
        #expect(throws: CNNError.self) { try Dataset(bytes: [1, 2, 3, 4], labels: [1], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"]) }
        #expect(throws: CNNError.self) { try Dataset(floats: [1, .nan, 3, 4], labels: [0], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"]) }
        #expect(throws: CNNError.self) { try Dataset(bytes: [], labels: [], shape: Shape(c: 1, h: 2, w: 2), classNames: ["a"]) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
