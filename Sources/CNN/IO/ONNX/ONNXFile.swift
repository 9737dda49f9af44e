/// The parts of an ONNX model file (onnx.proto's ModelProto) the importer uses, read from untrusted
/// bytes: every count is capped, every tensor's size checked against its dims and its data before
/// anything is taken for it, and tensors stored outside the file are read only from the model's own
/// folder. Fields the importer does not use are skipped (their lengths still checked).
struct ONNXFile {
    struct Tensor {
        var name = ""
        var dims: [Int] = []
        var dataType = 0
        /// Exactly one of these holds the values (checked against dims by `validate`).
        var raw: Range<Int>? = nil
        var floats: [Float] = []
        var ints: [Int] = []
        var external: [String: String] = [:]
        var elementCount: Int { dims.reduce(1, *) }
    }

    struct Attribute {
        var name = ""
        var type = 0
        var f: Float = 0
        var i = 0
        var s = ""
        var t: Tensor? = nil
        var floats: [Float] = []
        var ints: [Int] = []
    }

    struct Node {
        var name = ""
        var opType = ""
        var domain = ""
        var inputs: [String] = []
        var outputs: [String] = []
        var attributes: [String: Attribute] = [:]
        /// "node 'Conv_17' (Conv)", or by position for a node without a name.
        var label = ""
    }

    enum Dim: Equatable { case value(Int), param(String), unknown }

    struct ValueInfo {
        var name = ""
        var elemType = 0
        var dims: [Dim]? = nil
    }

    var irVersion = 0
    /// Opset version per domain ("" is the default ONNX domain).
    var opsets: [String: Int] = [:]
    var metadata: [String: String] = [:]
    var nodes: [Node] = []
    var initializers: [String: Tensor] = [:]
    var inputs: [ValueInfo] = []
    var outputs: [ValueInfo] = []
    var bytes: [UInt8] = []
    var path = ""

    static let floatType = 1, int64Type = 7, int32Type = 6, doubleType = 11
    static let maxNodes = 1 << 16
    static let maxDims = 8
    static let maxListValues = 1 << 16
    static let maxFileBytes = 1 << 32

    /// Reads and checks a whole .onnx file.
    static func read(_ path: String) throws -> ONNXFile {
        var file = try parse(FileIO.read(path, maxBytes: maxFileBytes), path: path)
        try file.loadExternalData()
        return file
    }

    static func parse(_ bytes: [UInt8], path: String) throws -> ONNXFile {
        var file = ONNXFile()
        file.bytes = bytes
        file.path = path
        var r = ProtoReader(bytes, 0..<bytes.count, context: path + ": not a valid ONNX file: model")
        var sawGraph = false
        while let (field, wire) = try r.next() {
            switch field {
            case 1: file.irVersion = try r.int(wire, "ir_version")
            case 8:
                var m = try r.message(wire, "opset_import")
                var domain = "", version = 0
                while let (f, w) = try m.next() {
                    switch f {
                    case 1: domain = try m.string(w, "domain")
                    case 2: version = try m.int(w, "version")
                    default: try m.skip(w)
                    }
                }
                if domain == "ai.onnx" { domain = "" }
                file.opsets[domain] = version
            case 14:
                var m = try r.message(wire, "metadata_props")
                var key = "", value = ""
                while let (f, w) = try m.next() {
                    switch f {
                    case 1: key = try m.string(w, "key")
                    case 2: value = try m.string(w, "value", maxBytes: 1 << 20)
                    default: try m.skip(w)
                    }
                }
                guard file.metadata.count < 256 else { throw r.error("more than 256 metadata entries") }
                file.metadata[key] = value
            case 7:
                guard !sawGraph else { throw r.error("two graphs") }
                sawGraph = true
                var g = try r.message(wire, "graph")
                try file.readGraph(&g)
            case 25:
                throw r.error("the model defines functions (model-local operators), which are not supported")
            default: try r.skip(wire)
            }
        }
        guard sawGraph else { throw CNNError(.badFormat, "\(path): not an ONNX model (no graph; is it an ONNX file?)") }
        return file
    }

    private mutating func readGraph(_ g: inout ProtoReader) throws {
        while let (field, wire) = try g.next() {
            switch field {
            case 1:
                guard nodes.count < ONNXFile.maxNodes else { throw g.error("more than \(ONNXFile.maxNodes) nodes") }
                var m = try g.message(wire, "node[\(nodes.count)]")
                nodes.append(try readNode(&m, index: nodes.count))
            case 5:
                guard initializers.count < ONNXFile.maxNodes else { throw g.error("more than \(ONNXFile.maxNodes) initializers") }
                var m = try g.message(wire, "initializer[\(initializers.count)]")
                let t = try readTensor(&m)
                guard initializers[t.name] == nil else { throw m.error("two initializers are named '\(t.name)'") }
                initializers[t.name] = t
            case 15: throw g.error("sparse initializers are not supported")
            case 11, 12:
                var m = try g.message(wire, field == 11 ? "input" : "output")
                let info = try readValueInfo(&m)
                guard inputs.count + outputs.count < ONNXFile.maxNodes else { throw g.error("too many inputs and outputs") }
                if field == 11 { inputs.append(info) } else { outputs.append(info) }
            default: try g.skip(wire)
            }
        }
    }

    private func readNode(_ m: inout ProtoReader, index: Int) throws -> Node {
        var node = Node()
        while let (f, w) = try m.next() {
            switch f {
            case 1, 2:
                let s = try m.string(w, f == 1 ? "input" : "output")
                guard node.inputs.count + node.outputs.count < 1024 else { throw m.error("more than 1024 inputs and outputs") }
                if f == 1 { node.inputs.append(s) } else { node.outputs.append(s) }
            case 3: node.name = try m.string(w, "name")
            case 4: node.opType = try m.string(w, "op_type")
            case 7: node.domain = try m.string(w, "domain")
            case 5:
                guard node.attributes.count < 64 else { throw m.error("more than 64 attributes") }
                var a = try m.message(w, "attribute")
                let attr = try readAttribute(&a)
                node.attributes[attr.name] = attr
            default: try m.skip(w)
            }
        }
        node.label = "node " + (node.name.isEmpty ? "#\(index)" : "'\(node.name)'") + " (\(node.opType))"
        return node
    }

    private func readAttribute(_ m: inout ProtoReader) throws -> Attribute {
        var a = Attribute()
        while let (f, w) = try m.next() {
            switch f {
            case 1: a.name = try m.string(w, "name")
            case 20: a.type = try m.int(w, "type")
            case 2: a.f = try m.float(w, "f")
            case 3: a.i = try m.int(w, "i")
            case 4: a.s = try m.string(w, "s")
            case 5:
                var t = try m.message(w, "t")
                a.t = try readTensor(&t)
            case 7: try m.floats(w, "floats", into: &a.floats, limit: ONNXFile.maxListValues)
            case 8: try m.ints(w, "ints", into: &a.ints, limit: ONNXFile.maxListValues)
            default: try m.skip(w)  // graphs (If, Loop) and the rest: their nodes are refused by type
            }
        }
        return a
    }

    private func readTensor(_ m: inout ProtoReader) throws -> Tensor {
        var t = Tensor()
        var location = 0
        while let (f, w) = try m.next() {
            switch f {
            case 1: try m.ints(w, "dims", into: &t.dims, limit: ONNXFile.maxDims)
            case 2: t.dataType = try m.int(w, "data_type")
            case 8: t.name = try m.string(w, "name")
            case 9: t.raw = try m.range(w, "raw_data")
            case 4: try m.floats(w, "float_data", into: &t.floats, limit: Model.maxParameters)
            case 7, 5: try m.ints(w, f == 7 ? "int64_data" : "int32_data", into: &t.ints, limit: ONNXFile.maxListValues)
            case 14: location = try m.int(w, "data_location")
            case 13:
                var e = try m.message(w, "external_data")
                var key = "", value = ""
                while let (f2, w2) = try e.next() {
                    if f2 == 1 { key = try e.string(w2, "key") } else if f2 == 2 { value = try e.string(w2, "value") } else { try e.skip(w2) }
                }
                guard t.external.count < 16 else { throw e.error("more than 16 external_data entries") }
                t.external[key] = value
            case 3: throw m.error("tensor '\(t.name)' is segmented, which is not supported")
            default: try m.skip(w)
            }
        }
        let what = "tensor '\(t.name)'"
        var count = 1
        for d in t.dims {
            guard d >= 0 else { throw m.error("\(what) has a negative dimension \(d)") }
            let (c, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, c <= Model.maxParameters else { throw m.error("\(what) has more than \(Model.maxParameters) values (dims \(t.dims))") }
            count = c
        }
        if location == 1 {
            guard t.raw == nil, t.floats.isEmpty, t.ints.isEmpty else { throw m.error("\(what) is external but also holds data") }
            return t
        }
        guard location == 0 else { throw m.error("\(what) has data_location \(location)") }
        guard t.external.isEmpty else { throw m.error("\(what) has external_data entries but is not marked external") }
        try validate(t, count: count, reader: m)
        return t
    }

    /// The tensor's data holds exactly its dims' number of values of its type.
    private func validate(_ t: Tensor, count: Int, reader m: ProtoReader) throws {
        let what = "tensor '\(t.name)'"
        let size: Int
        switch t.dataType {
        case ONNXFile.floatType, ONNXFile.int32Type: size = 4
        case ONNXFile.int64Type, ONNXFile.doubleType: size = 8
        default: return  // other types are refused where they are used, naming the node
        }
        if let raw = t.raw {
            guard t.floats.isEmpty, t.ints.isEmpty else { throw m.error("\(what) holds both raw_data and typed data") }
            guard raw.count == count * size else {
                throw m.error("\(what) has dims \(t.dims) (\(count) values of \(size) bytes) but \(raw.count) bytes of raw_data")
            }
        } else if t.dataType == ONNXFile.floatType {
            guard t.floats.count == count, t.ints.isEmpty else { throw m.error("\(what) has dims \(t.dims) but \(t.floats.count) float values") }
        } else if t.dataType == ONNXFile.doubleType {
            throw m.error("\(what): double values outside raw_data are not supported")
        } else {
            guard t.ints.count == count, t.floats.isEmpty else { throw m.error("\(what) has dims \(t.dims) but \(t.ints.count) integer values") }
        }
    }

    private func readValueInfo(_ m: inout ProtoReader) throws -> ValueInfo {
        var info = ValueInfo()
        while let (f, w) = try m.next() {
            switch f {
            case 1: info.name = try m.string(w, "name")
            case 2:
                var type = try m.message(w, "type")
                while let (f2, w2) = try type.next() {
                    guard f2 == 1 else { try type.skip(w2); continue }
                    var tensor = try type.message(w2, "tensor_type")
                    while let (f3, w3) = try tensor.next() {
                        switch f3 {
                        case 1: info.elemType = try tensor.int(w3, "elem_type")
                        case 2:
                            var shape = try tensor.message(w3, "shape")
                            var dims: [Dim] = []
                            while let (f4, w4) = try shape.next() {
                                guard f4 == 1 else { try shape.skip(w4); continue }
                                guard dims.count < ONNXFile.maxDims else { throw shape.error("more than \(ONNXFile.maxDims) dimensions") }
                                var d = try shape.message(w4, "dim")
                                var dim = Dim.unknown
                                while let (f5, w5) = try d.next() {
                                    switch f5 {
                                    case 1: dim = .value(try d.int(w5, "dim_value"))
                                    case 2: dim = .param(try d.string(w5, "dim_param"))
                                    default: try d.skip(w5)
                                    }
                                }
                                dims.append(dim)
                            }
                            info.dims = dims
                        default: try tensor.skip(w3)
                        }
                    }
                }
            default: try m.skip(w)
            }
        }
        return info
    }

    // MARK: Values

    /// A float tensor's values, converted from doubles if it holds those.
    func floatValues(_ t: Tensor) throws -> [Float] {
        let what = "\(path): tensor '\(t.name)'"
        switch t.dataType {
        case ONNXFile.floatType:
            guard let raw = t.raw else { return t.floats }
            try Memory.check(raw.count, for: what)
            var out = [Float](repeating: 0, count: raw.count / 4)
            out.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[raw])) }
            }
            #if _endian(big)
            for i in out.indices { out[i] = Float(bitPattern: out[i].bitPattern.byteSwapped) }
            #endif
            return out
        case ONNXFile.doubleType:
            guard let raw = t.raw else { throw CNNError(.badFormat, "\(what) holds no raw doubles") }
            var out: [Float] = []
            out.reserveCapacity(raw.count / 8)
            var i = raw.lowerBound
            while i < raw.upperBound {
                var v: UInt64 = 0
                for b in 0..<8 { v |= UInt64(bytes[i + b]) << (8 * UInt64(b)) }
                out.append(Float(Double(bitPattern: v)))
                i += 8
            }
            return out
        default:
            throw CNNError(.badFormat, "\(what) has data type \(ONNXFile.typeName(t.dataType)); weights must be float32")
        }
    }

    /// An integer tensor's values (INT64 or INT32), at most maxListValues.
    func intValues(_ t: Tensor) throws -> [Int] {
        let what = "\(path): tensor '\(t.name)'"
        guard t.dataType == ONNXFile.int64Type || t.dataType == ONNXFile.int32Type else {
            throw CNNError(.badFormat, "\(what) has data type \(ONNXFile.typeName(t.dataType)), not an integer type")
        }
        guard let raw = t.raw else { return t.ints }
        let size = t.dataType == ONNXFile.int64Type ? 8 : 4
        guard raw.count / size <= ONNXFile.maxListValues else { throw CNNError(.badFormat, "\(what) has too many integers") }
        var out: [Int] = []
        var i = raw.lowerBound
        while i < raw.upperBound {
            var v: UInt64 = 0
            for b in 0..<size { v |= UInt64(bytes[i + b]) << (8 * UInt64(b)) }
            out.append(size == 8 ? Int(Int64(bitPattern: v)) : Int(Int32(truncatingIfNeeded: v)))
            i += size
        }
        return out
    }

    static func typeName(_ type: Int) -> String {
        let names = [1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
                     9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 16: "BFLOAT16"]
        return names[type] ?? "type \(type)"
    }

    // MARK: External data

    /// Tensors stored in files beside the model (`torch.onnx.export` of a model over 2 GB): read
    /// from a relative path inside the model's folder, the byte range checked against the file.
    private mutating func loadExternalData() throws {
        let folder = FileIO.directory(of: path)
        var files: [String: [UInt8]] = [:]
        for (name, var t) in initializers where !t.external.isEmpty || (t.raw == nil && t.floats.isEmpty && t.ints.isEmpty && t.elementCount > 0) {
            let what = "\(path): tensor '\(name)'"
            guard let location = t.external["location"], !location.isEmpty else {
                throw CNNError(.badFormat, "\(what) is stored externally but names no location")
            }
            guard !location.hasPrefix("/"), !location.split(separator: "/").contains(".."), !location.contains("\\") else {
                throw CNNError(.badFormat, "\(what): external data '\(location)' is outside the model's folder (an absolute path or '..' is refused)")
            }
            // Weights, and the integers the default exporter also stores there (shapes, axes).
            let sizes = [ONNXFile.floatType: 4, ONNXFile.doubleType: 8, ONNXFile.int64Type: 8, ONNXFile.int32Type: 4]
            guard let size = sizes[t.dataType] else {
                throw CNNError(.badFormat, "\(what): external data of type \(ONNXFile.typeName(t.dataType)) is not supported (float32, float64, int64 and int32 are)")
            }
            let offset = Int(t.external["offset"] ?? "0") ?? -1
            let length = t.external["length"].map { Int($0) ?? -1 } ?? t.elementCount * size
            guard offset >= 0, length == t.elementCount * size else {
                throw CNNError(.badFormat, "\(what): external data offset \(t.external["offset"] ?? "0") and length \(t.external["length"] ?? "-") do not give its \(t.elementCount) values of \(size) bytes")
            }
            if files[location] == nil { files[location] = try FileIO.read(folder + "/" + location, maxBytes: ONNXFile.maxFileBytes) }
            let data = files[location]!
            guard offset <= data.count, length <= data.count - offset else {
                throw CNNError(.badFormat, "\(what): external data bytes \(offset)..<\(offset + length) are past the end of '\(location)' (\(data.count) bytes)")
            }
            try Memory.check(bytes.count + length, for: "the model's external data")
            t.raw = bytes.count..<(bytes.count + length)
            bytes += data[offset..<(offset + length)]
            t.external = [:]
            initializers[name] = t
        }
    }
}
