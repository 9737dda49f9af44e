/// The safetensors format: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the raw little-endian data. Readable by the
/// `safetensors` package of numpy and PyTorch users.
enum Safetensors {
    static let maxHeaderBytes = 100 << 20
    static let maxFileBytes = 1 << 34

    enum DType: String {
        case f32 = "F32"
        case i64 = "I64"
        var size: Int { self == .f32 ? 4 : 8 }
    }

    struct TensorOut {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: UnsafeRawBufferPointer
    }

    struct TensorIn {
        var dtype: DType
        var shape: [Int]
        /// Byte range in the file.
        var range: Range<Int>
    }

    struct File {
        var metadata: [String: String]
        var tensors: [String: TensorIn]
        var bytes: [UInt8]
    }

    static func write(_ path: String, metadata: [(String, String)], tensors: [TensorOut]) throws {
        #if _endian(big)
        throw CNNError(.internal, "safetensors writing needs a little-endian machine")
        #endif
        var members: [(String, JSON)] = [("__metadata__", .object(metadata.map { ($0.0, .string($0.1)) }))]
        var offset = 0
        for t in tensors {
            members.append((t.name, .object([
                ("dtype", .string(t.dtype.rawValue)),
                ("shape", .array(t.shape.map { .number(Double($0)) })),
                ("data_offsets", .array([.number(Double(offset)), .number(Double(offset + t.bytes.count))])),
            ])))
            offset += t.bytes.count
        }
        var header = Array(JSON.object(members).serialized.utf8)
        while header.count % 8 != 0 { header.append(0x20) }  // pad so the data is 8-byte aligned
        var length = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * UInt64(i))) }
        try length.withUnsafeBytes { l in
            try header.withUnsafeBytes { h in
                try FileIO.writeAtomically(path, [l, h] + tensors.map(\.bytes))
            }
        }
    }

    /// Reads and validates a whole file: every offset, size and shape is checked before use.
    static func read(_ path: String) throws -> File {
        try parse(FileIO.read(path, maxBytes: maxFileBytes), path: path)
    }

    /// Validates the bytes of a whole file (`path` names it in errors).
    static func parse(_ bytes: [UInt8], path: String) throws -> File {
        func bad(_ what: String) -> CNNError { CNNError(.badFormat, "\(path): not a valid safetensors file: \(what)") }
        guard bytes.count >= 8 else { throw bad("\(bytes.count) bytes, shorter than the 8-byte header length") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n >= 2, n <= UInt64(maxHeaderBytes), n <= UInt64(bytes.count - 8) else {
            throw bad("header length \(n) does not fit the file of \(bytes.count) bytes")
        }
        let headerEnd = 8 + Int(n)
        let header: JSON
        do { header = try JSON.parse(bytes[8..<headerEnd]) } catch let e as CNNError { throw bad("header: \(e.message)") }
        guard case .object(let members) = header else { throw bad("the header is not a JSON object") }
        let dataSize = bytes.count - headerEnd
        var metadata: [String: String] = [:]
        var tensors: [String: TensorIn] = [:]
        var ranges: [(Range<Int>, String)] = []
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let entries) = value else { throw bad("__metadata__ is not an object") }
                for (k, v) in entries {
                    guard let s = v.stringValue else { throw bad("metadata '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard tensors[name] == nil else { throw bad("tensor '\(name)' appears twice") }
            guard let dt = value["dtype"]?.stringValue else { throw bad("tensor '\(name)' has no dtype") }
            guard let dtype = DType(rawValue: dt) else { throw bad("tensor '\(name)' has dtype \(dt); only F32 and I64 are supported") }
            guard case .array(let dims)? = value["shape"], dims.count <= 8 else { throw bad("tensor '\(name)' has no valid shape") }
            var shape: [Int] = []
            var elements = 1
            for d in dims {
                guard case .number(let v) = d, v >= 0, v <= 1e12, v == v.rounded() else { throw bad("tensor '\(name)' has an invalid dimension") }
                shape.append(Int(v))
                let (p, o) = elements.multipliedReportingOverflow(by: Int(v))
                guard !o, p <= maxFileBytes else { throw bad("tensor '\(name)' is too large") }
                elements = p
            }
            guard case .array(let off)? = value["data_offsets"], off.count == 2,
                  case .number(let b) = off[0], case .number(let e) = off[1],
                  b >= 0, b <= e, e <= Double(dataSize), b == b.rounded(), e == e.rounded() else {
                throw bad("tensor '\(name)' has data_offsets outside the \(dataSize) data bytes")
            }
            let begin = Int(b), end = Int(e)
            guard end - begin == elements * dtype.size else {
                throw bad("tensor '\(name)' of shape \(shape) needs \(elements * dtype.size) bytes, its offsets span \(end - begin)")
            }
            tensors[name] = TensorIn(dtype: dtype, shape: shape, range: (headerEnd + begin)..<(headerEnd + end))
            ranges.append((begin..<end, name))
        }
        // The data must be covered exactly: no overlap, no gap, nothing left over.
        ranges.sort { $0.0.lowerBound < $1.0.lowerBound }
        var position = 0
        for (r, name) in ranges {
            guard r.lowerBound == position else {
                throw bad(r.lowerBound < position ? "tensor '\(name)' overlaps another" : "gap in the data before tensor '\(name)'")
            }
            position = r.upperBound
        }
        guard position == dataSize else { throw bad("\(dataSize - position) data bytes belong to no tensor") }
        return File(metadata: metadata, tensors: tensors, bytes: bytes)
    }
}

extension Safetensors.File {
    /// Copies a float tensor into `buffer`.
    func copyFloats(_ name: String, into buffer: FloatBuffer) {
        guard let t = tensors[name], t.dtype == .f32, t.range.count == buffer.count * 4 else { return }
        bytes.withUnsafeBytes { raw in
            let src = raw.baseAddress! + t.range.lowerBound
            UnsafeMutableRawPointer(buffer.pointer).copyMemory(from: src, byteCount: t.range.count)
        }
    }

    func int64(_ name: String) -> Int64? {
        guard let t = tensors[name], t.dtype == .i64, t.range.count == 8 else { return nil }
        var v: Int64 = 0
        for i in 0..<8 { v |= Int64(bytes[t.range.lowerBound + i]) << (8 * Int64(i)) }
        return v
    }
}
