/// The protocol-buffer wire format, as much of it as ONNX files need: a writer, and a strict reader
/// for untrusted bytes (every length is checked against what is left of its message before use,
/// and nothing is allocated from a length alone).
///
/// A message is a sequence of fields, each a key (field number << 3 | wire type) and a value:
/// wire type 0 a varint, 1 eight bytes, 2 a varint length and that many bytes (strings, bytes,
/// nested messages, packed numbers), 5 four bytes.
enum Wire: Int {
    case varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5
}

struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: Int, _ wire: Wire) { varint(UInt64(field << 3 | wire.rawValue)) }

    /// int32, int64 and enum fields (a negative value takes ten bytes, as protobuf writes it).
    mutating func int(_ field: Int, _ value: Int) {
        key(field, .varint)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, .fixed32)
        let b = value.bitPattern
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: b >> (8 * UInt32(i)))) }
    }

    mutating func string(_ field: Int, _ value: String) { data(field, Array(value.utf8)) }

    mutating func data(_ field: Int, _ value: [UInt8]) {
        key(field, .bytes)
        varint(UInt64(value.count))
        bytes += value
    }

    mutating func data(_ field: Int, _ value: UnsafeRawBufferPointer) {
        key(field, .bytes)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// A packed repeated int64 field.
    mutating func ints(_ field: Int, _ values: [Int]) {
        var inner = ProtoWriter()
        for v in values { inner.varint(UInt64(bitPattern: Int64(v))) }
        data(field, inner.bytes)
    }

    /// A nested message, written by `body`.
    mutating func message(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        body(&inner)
        data(field, inner.bytes)
    }
}

/// Reads the fields of one message, bytes[range], in order. `context` names the message in errors
/// ("graph.node[3]"), so a bad file's error says where it is bad.
struct ProtoReader {
    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int
    let context: String

    init(_ bytes: [UInt8], _ range: Range<Int>, context: String) {
        self.bytes = bytes
        position = range.lowerBound
        end = range.upperBound
        self.context = context
    }

    func error(_ what: String) -> CNNError {
        CNNError(.badFormat, "\(context): \(what) (byte \(position))")
    }

    /// The next field's number and wire type; nil at the end of the message.
    mutating func next() throws -> (field: Int, wire: Wire)? {
        guard position < end else { return nil }
        let key = try varint()
        guard let wire = Wire(rawValue: Int(key & 7)) else {
            throw error("wire type \(key & 7) is not one protobuf writes for ONNX (a corrupt or truncated file?)")
        }
        let field = key >> 3
        guard field > 0, field < 1 << 29 else { throw error("field number \(field) is out of range") }
        return (Int(field), wire)
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw error("a number runs past the end of its message") }
            let b = bytes[position]
            position += 1
            guard shift < 64 else { throw error("a number is longer than ten bytes") }
            value |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return value }
            shift += 7
        }
    }

    /// An int32 / int64 / enum field's value.
    mutating func int(_ wire: Wire, _ what: String) throws -> Int {
        guard wire == .varint else { throw error("\(what) is not a number (wire type \(wire.rawValue))") }
        return Int(Int64(bitPattern: try varint()))
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - position >= 4 else { throw error("four bytes run past the end of the message") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[position + i]) << (8 * UInt32(i)) }
        position += 4
        return v
    }

    mutating func float(_ wire: Wire, _ what: String) throws -> Float {
        guard wire == .fixed32 else { throw error("\(what) is not a float (wire type \(wire.rawValue))") }
        return Float(bitPattern: try fixed32())
    }

    /// A length-delimited value's byte range, checked against the message's end.
    mutating func range(_ wire: Wire, _ what: String) throws -> Range<Int> {
        guard wire == .bytes else { throw error("\(what) is not length-delimited (wire type \(wire.rawValue))") }
        let n = try varint()
        guard n <= UInt64(end - position) else {
            throw error("\(what) claims \(n) bytes, but only \(end - position) are left in its message")
        }
        let r = position..<(position + Int(n))
        position = r.upperBound
        return r
    }

    /// A string of at most `maxBytes` bytes of valid UTF-8.
    mutating func string(_ wire: Wire, _ what: String, maxBytes: Int = 1 << 16) throws -> String {
        let r = try range(wire, what)
        guard r.count <= maxBytes else { throw error("\(what) is \(r.count) bytes long, more than \(maxBytes)") }
        guard let s = String(validating: bytes[r], as: UTF8.self) else { throw error("\(what) is not valid UTF-8") }
        return s
    }

    /// A reader of a nested message.
    mutating func message(_ wire: Wire, _ what: String) throws -> ProtoReader {
        ProtoReader(bytes, try range(wire, what), context: context + "." + what)
    }

    /// Appends a repeated int64 field's values (packed, or one unpacked value), at most `limit` in all.
    mutating func ints(_ wire: Wire, _ what: String, into values: inout [Int], limit: Int) throws {
        if wire == .varint {
            guard values.count < limit else { throw error("\(what) has more than \(limit) values") }
            values.append(Int(Int64(bitPattern: try varint())))
            return
        }
        var inner = ProtoReader(bytes, try range(wire, what), context: context + "." + what)
        while inner.position < inner.end {
            guard values.count < limit else { throw error("\(what) has more than \(limit) values") }
            values.append(Int(Int64(bitPattern: try inner.varint())))
        }
    }

    /// Appends a repeated float field's values (packed, or one unpacked value), at most `limit`.
    mutating func floats(_ wire: Wire, _ what: String, into values: inout [Float], limit: Int) throws {
        if wire == .fixed32 {
            guard values.count < limit else { throw error("\(what) has more than \(limit) values") }
            values.append(Float(bitPattern: try fixed32()))
            return
        }
        var inner = ProtoReader(bytes, try range(wire, what), context: context + "." + what)
        guard inner.end - inner.position <= 4 * (limit - values.count), (inner.end - inner.position) % 4 == 0 else {
            throw error("\(what) holds \(inner.end - inner.position) bytes, not a whole number of at most \(limit) floats")
        }
        values.reserveCapacity(values.count + (inner.end - inner.position) / 4)
        while inner.position < inner.end { values.append(Float(bitPattern: try inner.fixed32())) }
    }

    /// Skips a field this reader does not use.
    mutating func skip(_ wire: Wire) throws {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64:
            guard end - position >= 8 else { throw error("eight bytes run past the end of the message") }
            position += 8
        case .bytes: _ = try range(wire, "a field")
        case .fixed32: _ = try fixed32()
        }
    }
}
