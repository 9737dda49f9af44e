/// ONNX export: the model as an ONNX graph (opset 17) that ONNX Runtime, Netron or a phone's runtime
/// runs as `predict` does. One input, `pixels` (batch, C, H, W), takes what `predict` takes (values
/// in [0, 1]); the model's normalization is the graph's first nodes. Two outputs: `logits` and
/// `probabilities` (their softmax). The batch dimension is dynamic. Initializers carry the model
/// file's (PyTorch state-dict) names; `metadata_props` the architecture text, class names,
/// normalization and image fit, so `Model.importONNX` gives back this model bit for bit.
extension Model {
    public static let onnxOpset = 17
    static let onnxIRVersion = 8

    /// Writes the model as an ONNX file, atomically.
    public func exportONNX(to path: String) throws {
        let bytes = try onnxBytes()
        try bytes.withUnsafeBytes { try FileIO.writeAtomically(path, [$0]) }
    }

    /// The ONNX file's bytes.
    func onnxBytes() throws -> [UInt8] {
        // The weights are copied into the message about three times as it is nested.
        try Memory.check(4 * parameterFloats * 3, for: "the ONNX file of a model with \(parameterCount) parameters")
        var graph = ONNXGraphWriter()
        var x = "pixels"
        if mean.contains(where: { $0 != 0 }) || std.contains(where: { $0 != 1 }) {
            let c = inputShape.c
            graph.initializer("normalization.mean", dims: [1, c, 1, 1], mean)
            graph.initializer("normalization.std", dims: [1, c, 1, 1], std)
            graph.node("Sub", [x, "normalization.mean"], ["normalization.centered"], name: "normalization.Sub")
            graph.node("Div", ["normalization.centered", "normalization.std"], ["normalization.out"], name: "normalization.Div")
            x = "normalization.out"
        }
        let out = graph.sequence(layers, input: x, prefix: "")
        graph.node("Identity", [out], ["logits"], name: "logits")
        graph.node("Softmax", ["logits"], ["probabilities"], name: "probabilities", [("axis", .int(1))])

        var w = ProtoWriter()
        w.int(1, Model.onnxIRVersion)
        w.string(2, "SwiftCNN")
        w.message(8) { $0.string(1, ""); $0.int(2, Model.onnxOpset) }
        let metadata = [
            ("architecture", architecture.text),
            ("classes", JSON.array(classNames.map { .string($0) }).serialized),
            ("normalization_mean", Model.floatList(mean)),
            ("normalization_std", Model.floatList(std)),
            ("image_fit", imageFit.rawValue),
        ]
        for (key, value) in metadata { w.message(14) { $0.string(1, key); $0.string(2, value) } }
        let input = inputShape, classes = numClasses
        w.message(7) { g in
            g.string(2, "swiftcnn")
            g.bytes += graph.nodes.bytes
            g.bytes += graph.initializers.bytes
            g.message(11) { ONNXGraphWriter.valueInfo(&$0, "pixels", [nil, input.c, input.h, input.w]) }
            g.message(12) { ONNXGraphWriter.valueInfo(&$0, "logits", [nil, classes]) }
            g.message(12) { ONNXGraphWriter.valueInfo(&$0, "probabilities", [nil, classes]) }
        }
        return w.bytes
    }
}

/// Builds a graph's nodes and initializers as protobuf fields (GraphProto's 1 and 5).
struct ONNXGraphWriter {
    enum Attribute {
        case int(Int), float(Float), ints([Int])
    }

    var nodes = ProtoWriter()
    var initializers = ProtoWriter()

    mutating func node(_ op: String, _ inputs: [String], _ outputs: [String], name: String, _ attributes: [(String, Attribute)] = []) {
        nodes.message(1) { n in
            for i in inputs { n.string(1, i) }
            for o in outputs { n.string(2, o) }
            n.string(3, name)
            n.string(4, op)
            for (key, value) in attributes {
                n.message(5) { a in
                    a.string(1, key)
                    switch value {
                    case .int(let v): a.int(3, v); a.int(20, 2)
                    case .float(let v): a.float(2, v); a.int(20, 1)
                    case .ints(let v): a.ints(8, v); a.int(20, 7)
                    }
                }
            }
        }
    }

    mutating func initializer(_ name: String, dims: [Int], _ values: [Float]) {
        values.withUnsafeBytes { initializer(name, dims: dims, $0) }
    }

    mutating func initializer(_ name: String, dims: [Int], _ bytes: UnsafeRawBufferPointer) {
        initializers.message(5) { t in
            t.ints(1, dims)
            t.int(2, ONNXFile.floatType)
            t.string(8, name)
            t.data(9, bytes)  // little-endian, as raw_data is defined
        }
    }

    /// A tensor of 64-bit integers (a Pad's pads).
    mutating func initializer(_ name: String, dims: [Int], int64s values: [Int]) {
        let bytes = values.flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: UInt64(bitPattern: Int64(v)) >> (8 * UInt64($0))) } }
        initializers.message(5) { t in
            t.ints(1, dims)
            t.int(2, ONNXFile.int64Type)
            t.string(8, name)
            bytes.withUnsafeBytes { t.data(9, $0) }
        }
    }

    static func valueInfo(_ w: inout ProtoWriter, _ name: String, _ dims: [Int?]) {
        w.string(1, name)
        w.message(2) { type in
            type.message(1) { tensor in
                tensor.int(1, ONNXFile.floatType)
                tensor.message(2) { shape in
                    for d in dims { shape.message(1) { if let d { $0.int(1, d) } else { $0.string(2, "batch") } } }
                }
            }
        }
    }

    /// Emits a sequence of layers on value `input`; returns its output value's name. Layer i's
    /// nodes and tensors are named by its module path (`3.body.0`), as the model file names them.
    mutating func sequence(_ layers: [Layer], input: String, prefix: String) -> String {
        var x = input
        for (i, layer) in layers.enumerated() { x = self.layer(layer, input: x, path: prefix + "\(i)") }
        return x
    }

    private mutating func parameters(_ layer: Layer, _ path: String) -> [String] {
        layer.parameters.map { p in
            initializer(path + "." + p.name, dims: p.shape, UnsafeRawBufferPointer(start: p.value.pointer, count: 4 * p.count))
            return path + "." + p.name
        }
    }

    private mutating func scalar(_ name: String, _ value: Float) -> String {
        initializer(name, dims: [], [value])
        return name
    }

    private mutating func layer(_ layer: Layer, input x: String, path: String) -> String {
        let y = path
        switch layer.spec.kind {
        case let .conv(_, k, s, p, _, groups):
            node("Conv", [x] + parameters(layer, path), [y], name: path + ".Conv", [
                ("kernel_shape", .ints([k.h, k.w])), ("strides", .ints([s.h, s.w])),
                ("pads", .ints([p.h, p.w, p.h, p.w])), ("dilations", .ints([1, 1])), ("group", .int(groups)),
            ])
        case let .maxpool(k, s, p, ceil):
            node("MaxPool", [x], [y], name: path + ".MaxPool", [
                ("kernel_shape", .ints([k.h, k.w])), ("strides", .ints([s.h, s.w])), ("pads", .ints([p.h, p.w, p.h, p.w])),
                ("ceil_mode", .int(ceil ? 1 : 0)),
            ])
        case let .avgpool(k, s, p, countPad):
            node("AveragePool", [x], [y], name: path + ".AveragePool", [
                ("kernel_shape", .ints([k.h, k.w])), ("strides", .ints([s.h, s.w])), ("pads", .ints([p.h, p.w, p.h, p.w])),
                ("count_include_pad", .int(countPad ? 1 : 0)),
            ])
        case .globalAvgPool:
            node("GlobalAveragePool", [x], [y], name: path + ".GlobalAveragePool")
        case let .zeroPad(p):
            // Every axis's start (N, C, H, W), then every axis's end; constant mode, zeros by default.
            initializer(path + ".pads", dims: [8], int64s: [0, 0, p.top, p.left, 0, 0, p.bottom, p.right])
            node("Pad", [x, path + ".pads"], [y], name: path + ".Pad")
        case .flatten:
            node("Flatten", [x], [y], name: path + ".Flatten", [("axis", .int(1))])
        case .dense:
            node("Gemm", [x] + parameters(layer, path), [y], name: path + ".Gemm", [("transB", .int(1))])
        case .activation(let kind):
            activation(kind, x, y, path)
        case .dropout(let p):
            // An identity at inference; kept so that the architecture comes back on import.
            node("Dropout", [x, scalar(path + ".ratio", p)], [y], name: path + ".Dropout")
        case let .batchnorm(eps, momentum):
            // ONNX's momentum weighs the running value, PyTorch's (and ours) the batch's.
            node("BatchNormalization", [x] + parameters(layer, path), [y], name: path + ".BatchNormalization",
                 [("epsilon", .float(eps)), ("momentum", .float(1 - momentum))])
        case let .squeezeExcite(_, act, gate):
            let names = parameters(layer, path)  // fc1.weight, fc1.bias, fc2.weight, fc2.bias
            node("GlobalAveragePool", [x], [path + ".pooled"], name: path + ".GlobalAveragePool")
            node("Conv", [path + ".pooled", names[0], names[1]], [path + ".fc1"], name: path + ".fc1.Conv", [("kernel_shape", .ints([1, 1]))])
            activation(act, path + ".fc1", path + ".act", path + ".act")
            node("Conv", [path + ".act", names[2], names[3]], [path + ".fc2"], name: path + ".fc2.Conv", [("kernel_shape", .ints([1, 1]))])
            activation(gate, path + ".fc2", path + ".gate", path + ".gate")
            node("Mul", [x, path + ".gate"], [y], name: path + ".Mul")
        case .residual:
            let block = layer as! Block
            let outs = block.sequences.map { sequence($0.layers, input: x, prefix: path + "." + $0.name + ".") }
            node("Add", outs.count == 2 ? outs : [outs[0], x], [y], name: path + ".Add")
        case .concat:
            let block = layer as! Block
            let outs = block.sequences.map { sequence($0.layers, input: x, prefix: path + "." + $0.name + ".") }
            node("Concat", outs, [y], name: path + ".Concat", [("axis", .int(1))])
        }
        return y
    }

    /// An activation from x to y, in the ops torch.onnx.export writes for it at opset 17.
    private mutating func activation(_ kind: ActivationKind, _ x: String, _ y: String, _ path: String) {
        switch kind {
        case .relu: node("Relu", [x], [y], name: path + ".Relu")
        case .leakyRelu(let alpha): node("LeakyRelu", [x], [y], name: path + ".LeakyRelu", [("alpha", .float(alpha))])
        case .sigmoid: node("Sigmoid", [x], [y], name: path + ".Sigmoid")
        case .tanh: node("Tanh", [x], [y], name: path + ".Tanh")
        case .relu6:
            node("Clip", [x, scalar(path + ".min", 0), scalar(path + ".max", 6)], [y], name: path + ".Clip")
        case .hardSigmoid:
            node("HardSigmoid", [x], [y], name: path + ".HardSigmoid", [("alpha", .float(1.0 / 6)), ("beta", .float(0.5))])
        case .hardSwish: node("HardSwish", [x], [y], name: path + ".HardSwish")
        case .silu:
            node("Sigmoid", [x], [path + ".sigmoid"], name: path + ".Sigmoid")
            node("Mul", [x, path + ".sigmoid"], [y], name: path + ".Mul")
        case .gelu:
            // x · Φ(x) = 0.5 · x · (1 + erf(x / √2)), as torch writes it before opset 20's Gelu.
            node("Div", [x, scalar(path + ".sqrt2", 1.4142135)], [path + ".scaled"], name: path + ".Div")
            node("Erf", [path + ".scaled"], [path + ".erf"], name: path + ".Erf")
            node("Add", [path + ".erf", scalar(path + ".one", 1)], [path + ".erf1"], name: path + ".Add")
            node("Mul", [x, path + ".erf1"], [path + ".xerf"], name: path + ".Mul")
            node("Mul", [path + ".xerf", scalar(path + ".half", 0.5)], [y], name: path + ".Mul_1")
        }
    }
}
