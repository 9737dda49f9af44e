/// ONNX import: a graph from `torch.onnx.export` (or our export) becomes an architecture text and
/// its weights, so everything else works on it: predict, evaluate, training, saving.
///
/// The architecture language describes trees of sequences, and an ONNX graph is a list of nodes
/// wired by value names, so the importer walks the graph from its input: a value with one consumer
/// continues the sequence; a value with several is a fork, whose branches are walked until they
/// meet at one node, the join (Add: a residual block; Concat: a concat block; Mul with one empty
/// branch: squeeze-and-excitation). Op patterns that are one layer here (x · sigmoid(x) is SiLU,
/// the erf form is GELU, MatMul + Add is dense) are recognized as they are reached. Every node must
/// be used; the first one that cannot be is named in the error, with its op and why. Never a
/// partial model.
extension Model {
    /// Reads an ONNX model file (see `ONNXImporter`).
    public static func importONNX(from path: String, allowNonFinite: Bool = false) throws -> Model {
        var importer = try ONNXImporter(ONNXFile.read(path))
        importer.allowNonFinite = allowNonFinite
        return try importer.model()
    }

    /// True when the file name says ONNX (`cnn_model_load` and the tool take such files directly).
    public static func isONNXPath(_ path: String) -> Bool {
        path.lowercased().hasSuffix(".onnx")
    }
}

struct ONNXImporter {
    let file: ONNXFile
    /// The file's nodes, with the activations written as several made one node (see
    /// `fusingActivations`) and concatenations nested (`nestingConcatenations`, and `fork`'s).
    var nodes: [ONNXFile.Node]
    let opset: Int
    /// Node indices that read each value (a node once per input naming it).
    var consumers: [String: [Int]] = [:]
    var producer: [String: Int] = [:]
    /// Initializers, Constant nodes' values and Identity of those.
    var constants: [String: ONNXFile.Tensor] = [:]
    /// The shapes of data values that Shape nodes read, [batch, C, H, W] with the batch nil.
    var knownShapes: [String: [Int?]] = [:]
    var integerMemo: [String: Integers] = [:]
    /// Values computed from shapes and constants alone (ONNXIntegers.swift): never data.
    var integerValueNames = Set<String>()
    var used: [Bool]
    var depth = 0
    var allowNonFinite = false
    /// The input's batch size when the graph fixes it (exported without a dynamic batch).
    var fixedBatch: Int? = nil

    /// One parsed piece of a sequence: its layers and their parameters' values in model-file order.
    struct Piece {
        var specs: [LayerSpec] = []
        var weights: [[Float]] = []
        mutating func append(_ spec: LayerSpec, _ w: [[Float]] = []) { specs.append(spec); weights += w }
        mutating func append(_ other: Piece) { specs += other.specs; weights += other.weights }
    }

    static let supportedOps = ["Conv", "BatchNormalization", "Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid",
                               "Sigmoid", "Tanh", "Gelu", "Erf", "Mul", "Add", "Concat", "MaxPool", "AveragePool",
                               "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Gemm", "MatMul", "Dropout",
                               "Identity", "Softmax", "LogSoftmax", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Slice",
                               "Cast", "Sub", "Div", "Transpose", "Pad", "ConstantOfShape"]
    static let unsupportedOp = "the op is not supported; supported: \(supportedOps.joined(separator: ", "))"

    init(_ file: ONNXFile) throws {
        self.file = file
        guard let version = file.opsets[""] else { throw CNNError(.badFormat, "\(file.path): the model imports no default ONNX opset") }
        guard (7...23).contains(version) else {
            throw CNNError(.badFormat, "\(file.path): opset \(version) is not supported (opsets 7 to 23 are read; torch.onnx.export writes 13-20)")
        }
        opset = version
        constants = file.initializers
        for n in file.nodes where n.opType == "Constant" {
            if let t = n.attributes["value"]?.t { constants[n.outputs.first ?? ""] = t }
        }
        nodes = ONNXImporter.nestingConcatenations(ONNXImporter.fusingActivations(file.nodes, constants: constants, file: file))
        used = [Bool](repeating: false, count: nodes.count)
        var produced = Set<String>()
        for (i, n) in nodes.enumerated() {
            guard n.domain.isEmpty || n.domain == "ai.onnx" else {
                throw error(i, "the operator domain '\(n.domain)' is not supported (only the default ONNX domain)")
            }
            for input in n.inputs where !input.isEmpty { consumers[input, default: []].append(i) }
            for output in n.outputs where !output.isEmpty {
                guard produced.insert(output).inserted, file.initializers[output] == nil else {
                    throw error(i, "its output '\(output)' is produced twice (ONNX values are assigned once)")
                }
                producer[output] = i
            }
        }
        for (i, n) in nodes.enumerated() {
            if n.opType == "Constant" {
                constants[n.outputs.first ?? ""] = try constantValue(i)
                used[i] = true
            } else if n.opType == "Identity", n.inputs.count == 1, let t = constants[n.inputs[0]], let out = n.outputs.first {
                constants[out] = t
                used[i] = true
            } else if n.opType == "Transpose", n.inputs.count == 1, let t = constants[n.inputs[0]], t.dims.count == 2, t.dataType == ONNXFile.floatType,
                      (n.attributes["perm"]?.ints ?? [1, 0]) == [1, 0], let out = n.outputs.first {
                // A weight matrix transposed by the graph (torch.onnx.export without constant folding).
                var transposed = ONNXFile.Tensor()
                transposed.name = out
                transposed.dataType = ONNXFile.floatType
                transposed.dims = [t.dims[1], t.dims[0]]
                transposed.floats = ONNXImporter.transposed(try file.floatValues(t), rows: t.dims[0], cols: t.dims[1])
                constants[out] = transposed
                used[i] = true
            }
        }
        integerValueNames = ONNXImporter.integerValues(nodes, producer: producer, constants: constants)
    }

    /// Activations torch.onnx.export writes as several nodes become one node (named after the
    /// first), so that a fork sees one consumer: SiLU, x · Sigmoid(x), becomes "Silu"; hard-swish
    /// before opset 14, x · HardSigmoid(x), "HardSwish"; GELU before opset 20,
    /// 0.5 · (x · (1 + erf(x / √2))) in five nodes (Div, Erf, Add, Mul, Mul), "Gelu".
    static func fusingActivations(_ nodes: [ONNXFile.Node], constants: [String: ONNXFile.Tensor], file: ONNXFile) -> [ONNXFile.Node] {
        var readers: [String: [Int]] = [:]
        for (i, n) in nodes.enumerated() { for input in n.inputs { readers[input, default: []].append(i) } }
        func value(_ name: String) -> Float? {
            guard let t = constants[name], let v = try? file.floatValues(t), v.count == 1 else { return nil }
            return v[0]
        }
        /// The one node reading `v`, if it is `op` with `v` and a constant (or `other`) as inputs.
        func next(_ v: String, _ op: String, other: String? = nil, constant: Float? = nil) -> Int? {
            guard let r = readers[v], r.count == 1, nodes[r[0]].opType == op, nodes[r[0]].inputs.count == 2,
                  nodes[r[0]].outputs.count == 1, nodes[r[0]].inputs.contains(v) else { return nil }
            let o = nodes[r[0]].inputs[0] == v ? nodes[r[0]].inputs[1] : nodes[r[0]].inputs[0]
            if let other { return o == other ? r[0] : nil }
            guard let c = value(o), let constant, abs(c - constant) < 1e-5 else { return nil }
            return r[0]
        }
        var drop = Set<Int>()
        var out = nodes
        for (i, div) in nodes.enumerated() where div.opType == "Div" && div.inputs.count == 2 && div.outputs.count == 1 {
            let x = div.inputs[0]
            guard let c = value(div.inputs[1]), abs(c - 1.4142135) < 1e-5,
                  let erf = readers[div.outputs[0]].flatMap({ $0.count == 1 && nodes[$0[0]].opType == "Erf" && nodes[$0[0]].outputs.count == 1 ? $0[0] : nil }),
                  let add = next(nodes[erf].outputs[0], "Add", constant: 1),
                  let mul = next(nodes[add].outputs[0], "Mul", other: x),
                  let half = next(nodes[mul].outputs[0], "Mul", constant: 0.5) else { continue }
            var gelu = div
            gelu.opType = "Gelu"
            gelu.inputs = [x]
            gelu.outputs = nodes[half].outputs
            gelu.attributes = [:]
            gelu.label = "node " + (div.name.isEmpty ? "#\(i)" : "'\(div.name)'") + " (Div, Erf, Add, Mul, Mul: GELU)"
            out[i] = gelu
            drop.formUnion([erf, add, mul, half])
        }
        for (i, gate) in nodes.enumerated() where (gate.opType == "Sigmoid" || gate.opType == "HardSigmoid") && gate.inputs.count == 1
            && gate.outputs.count == 1 && !drop.contains(i) {
            let x = gate.inputs[0]
            guard let mul = next(gate.outputs[0], "Mul", other: x) else { continue }
            if gate.opType == "HardSigmoid" {
                guard let a = gate.attributes["alpha"]?.f, abs(a - 1.0 / 6) < 1e-6, (gate.attributes["beta"]?.f ?? 0.5) == 0.5 else { continue }
            }
            var fused = gate
            fused.opType = gate.opType == "Sigmoid" ? "Silu" : "HardSwish"
            fused.outputs = nodes[mul].outputs
            fused.attributes = [:]
            fused.label = "node " + (gate.name.isEmpty ? "#\(i)" : "'\(gate.name)'") + " (\(gate.opType), Mul: \(gate.opType == "Sigmoid" ? "SiLU" : "hard-swish"))"
            out[i] = fused
            drop.insert(mul)
        }
        return out.enumerated().filter { !drop.contains($0.offset) }.map(\.element)
    }

    /// DenseNet's concatenations (torchvision's `torch.cat(features, 1)` in every layer) read the
    /// same values again and again: cat(x), cat(x, a), cat(x, a, b), ... Each becomes the
    /// concatenation of the longest other one along channels whose inputs begin its own, and of the
    /// values after them, cat(cat(x, a), b): the same channels in the same order, and each is one
    /// block's join (`concat[ | LAYER]`, LAYER having made b from cat(x, a)). A concatenation of
    /// one value is that value (an Identity). Only prefixes up to four values shorter are looked
    /// up (DenseNet's is one shorter), so that a file's nodes cost time in proportion to their inputs.
    static func nestingConcatenations(_ nodes: [ONNXFile.Node]) -> [ONNXFile.Node] {
        func channels(_ n: ONNXFile.Node) -> Bool {
            n.opType == "Concat" && n.outputs.count == 1 && !n.inputs.isEmpty && !n.inputs.contains("")
                && [1, -3].contains(n.attributes["axis"]?.i ?? 0)
        }
        // Each concatenation's output by its inputs, as the file wrote them.
        var byInputs: [[String]: String] = [:]
        for n in nodes where channels(n) && byInputs[n.inputs] == nil { byInputs[n.inputs] = n.outputs[0] }
        var out = nodes
        for (i, n) in nodes.enumerated() where channels(n) {
            if n.inputs.count == 1 {
                out[i].opType = "Identity"
                out[i].attributes = [:]
                continue
            }
            for k in stride(from: n.inputs.count - 1, through: max(1, n.inputs.count - 4), by: -1) {
                if let first = byInputs[Array(n.inputs.prefix(k))], first != n.outputs[0] {
                    out[i].inputs = [first] + n.inputs.dropFirst(k)
                    break
                }
            }
        }
        return out
    }

    func error(_ node: Int, _ what: String) -> CNNError {
        CNNError(.badFormat, "\(file.path): \(nodes[node].label): \(what)")
    }

    private func constantValue(_ i: Int) throws -> ONNXFile.Tensor {
        let n = nodes[i]
        if let t = n.attributes["value"]?.t { return t }
        var t = ONNXFile.Tensor()
        if let a = n.attributes["value_float"] { t.dataType = ONNXFile.floatType; t.floats = [a.f] }
        else if let a = n.attributes["value_floats"] { t.dataType = ONNXFile.floatType; t.floats = a.floats; t.dims = [a.floats.count] }
        else if let a = n.attributes["value_int"] { t.dataType = ONNXFile.int64Type; t.ints = [a.i] }
        else if let a = n.attributes["value_ints"] { t.dataType = ONNXFile.int64Type; t.ints = a.ints; t.dims = [a.ints.count] }
        else { throw error(i, "a Constant without a value, value_float(s) or value_int(s) attribute is not supported") }
        return t
    }

    // MARK: The model

    mutating func model() throws -> Model {
        let path = file.path
        let dataInputs = file.inputs.filter { file.initializers[$0.name] == nil }
        guard dataInputs.count == 1, let input = dataInputs.first else {
            throw CNNError(.badFormat, "\(path): the graph has \(dataInputs.count) inputs (other than weights); one image input is supported")
        }
        guard input.elemType == ONNXFile.floatType else {
            throw CNNError(.badFormat, "\(path): the input '\(input.name)' is \(ONNXFile.typeName(input.elemType)); float32 images are supported")
        }
        guard let dims = input.dims, dims.count == 4, case .value(let c) = dims[1], case .value(let h) = dims[2], case .value(let w) = dims[3],
              [c, h, w].allSatisfy({ $0 > 0 && $0 <= Architecture.maxDimension }) else {
            throw CNNError(.badFormat, "\(path): the input '\(input.name)' must be (batch, C, H, W) with C, H and W fixed numbers; it is \(describe(input.dims))")
        }
        if case .value(let b) = dims[0] {
            guard b >= 1 else { throw CNNError(.badFormat, "\(path): the input's batch dimension is \(b)") }
            fixedBatch = b
        }
        var shape = Shape(c: c, h: h, w: w)
        var x = input.name
        let (mean, std) = try normalization(&x, channels: c)
        let (piece, out, stop) = try sequence(from: x, shape: &shape)
        if let stop { throw error(stop, "it joins values that do not branch from one value (not a residual, concat or gate pattern)") }
        // The classifier's output, and optionally its softmax.
        let outputs = Set(file.outputs.map(\.name))
        guard outputs.contains(out) || finalSoftmax != nil && outputs.contains(finalSoftmax!) else {
            throw CNNError(.badFormat, "\(path): the walk from the input ends at '\(out)', which is not a graph output")
        }
        for name in outputs where name != out && name != finalSoftmax {
            throw CNNError(.badFormat, "\(path): the graph output '\(name)' is not the classifier's output '\(out)' or its softmax (one classifier output is supported)")
        }
        if let i = used.firstIndex(of: false) {
            throw error(i, "it is not on the path from the input to the output (a second input, output or head is not supported)")
        }
        guard shape.flat else {
            throw CNNError(.badFormat, "\(path): the output '\(out)' is \(shape), not a vector of class scores")
        }
        let architecture = Architecture(input: Shape(c: c, h: h, w: w), layers: piece.specs)
        let model: Model
        do { model = try Model(architecture: architecture) } catch let e as CNNError {
            throw CNNError(e.kind, "\(path): the imported architecture \(architecture.text) is invalid: \(e.message)")
        }
        let parameters = model.namedParameters
        guard parameters.count == piece.weights.count else {
            throw CNNError(.internal, "\(path): \(piece.weights.count) tensors imported for \(parameters.count) parameters")
        }
        for ((name, p), values) in zip(parameters, piece.weights) {
            guard values.count == p.count else {
                throw CNNError(.internal, "\(path): tensor for '\(name)' has \(values.count) values, \(p.count) expected")
            }
            guard allowNonFinite || values.allSatisfy(\.isFinite) else { throw CNNError(.badFormat, "\(path): the weights of '\(name)' hold NaN or infinite values (a diverged model? loading it anyway needs CNN_LOAD_ALLOW_NON_FINITE)") }
            values.withUnsafeBufferPointer { p.value.pointer.update(from: $0.baseAddress!, count: values.count) }
            p.version += 1
        }
        model.mean = mean
        model.std = std
        if let text = file.metadata["classes"], case .array(let names)? = try? JSON.parse(ArraySlice(text.utf8)),
           names.count == model.numClasses, names.allSatisfy({ $0.stringValue != nil }) {
            model.classNames = names.compactMap(\.stringValue)
        }
        if let fit = file.metadata["image_fit"].flatMap(ImageFit.init(rawValue:)) { model.imageFit = fit }
        for (_, layer) in model.namedLayers {
            if let bn = layer as? BatchNorm, bn.runningVar.value.array.contains(where: { $0 < 0 }) {
                throw CNNError(.badFormat, "\(path): a BatchNormalization's variance has negative values")
            }
        }
        return model
    }

    private func describe(_ dims: [ONNXFile.Dim]?) -> String {
        guard let dims else { return "of unknown shape" }
        return "(" + dims.map { d -> String in
            switch d {
            case .value(let v): return "\(v)"
            case .param(let p): return p
            case .unknown: return "?"
            }
        }.joined(separator: ", ") + ")"
    }

    /// The Softmax (or LogSoftmax) after the classifier's output, once the walk has reached it.
    var finalSoftmax: String? = nil

    /// A leading Sub of per-channel means and Div by (or Mul by the inverse of) per-channel standard
    /// deviations on the input: the model's normalization (as our export writes it).
    mutating func normalization(_ x: inout String, channels c: Int) throws -> ([Float], [Float]) {
        var mean = [Float](repeating: 0, count: c), std = [Float](repeating: 1, count: c)
        guard let sub = onlyConsumer(x), nodes[sub].opType == "Sub",
              let m = try perChannel(nodes[sub].inputs, x, c),
              let afterSub = nodes[sub].outputs.first, let div = onlyConsumer(afterSub),
              ["Div", "Mul"].contains(nodes[div].opType),
              let s = try perChannel(nodes[div].inputs, afterSub, c), let normalized = nodes[div].outputs.first else { return (mean, std) }
        let isDiv = nodes[div].opType == "Div"
        guard nodes[sub].inputs[0] == x, nodes[div].inputs[0] == afterSub, s.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            return (mean, std)
        }
        mean = m
        std = isDiv ? s : s.map { 1 / $0 }
        used[sub] = true
        used[div] = true
        x = normalized
        return (mean, std)
    }

    /// The values of a node's constant second input when it holds one value per channel.
    private func perChannel(_ inputs: [String], _ x: String, _ c: Int) throws -> [Float]? {
        guard inputs.count == 2, inputs[0] == x, let t = constants[inputs[1]], t.dataType == ONNXFile.floatType else { return nil }
        let v = try file.floatValues(t)
        guard v.count == c, t.dims.filter({ $0 != 1 }).count <= 1 else { return nil }
        if c > 1 { guard t.dims.count >= 3, t.dims[t.dims.count - 3] == c else { return nil } }
        return v
    }

    private func onlyConsumer(_ value: String) -> Int? {
        let c = consumers[value] ?? []
        return c.count == 1 ? c[0] : nil
    }

    // MARK: Walking the graph

    /// The values among a node's inputs that are data (not weights or constants).
    func dataInputs(_ node: Int) -> [String] {
        nodes[node].inputs.filter { !$0.isEmpty && constants[$0] == nil && !integerValueNames.contains($0) }
    }

    private func isJoin(_ node: Int) -> Bool {
        ["Add", "Mul", "Concat", "Sum"].contains(nodes[node].opType) && dataInputs(node).count >= 2
    }

    /// Walks from value `v` while each value has one data consumer; returns the layers, the value
    /// where the walk stopped, and the join node it stopped at (nil at the graph's end).
    mutating func sequence(from start: String, shape: inout Shape) throws -> (Piece, String, Int?) {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 64 else { throw CNNError(.badFormat, "\(file.path): blocks are nested more than 64 deep") }
        var piece = Piece()
        var v = start
        while true {
            var data: [Int] = []
            for c in consumers[v] ?? [] {
                if nodes[c].opType == "Shape" {
                    knownShapes[v] = [nil] + (shape.flat ? [shape.c] : [shape.c, shape.h, shape.w])
                    used[c] = true
                } else if !data.contains(c) {
                    data.append(c)
                }
            }
            if data.isEmpty { return (piece, v, nil) }
            if data.count == 1 {
                let n = data[0]
                if isJoin(n) { return (piece, v, n) }
                if try atFinalSoftmax(n) { return (piece, v, nil) }
                v = try translate(n, input: v, shape: &shape, into: &piece)
                continue
            }
            v = try fork(at: v, consumers: data, shape: &shape, into: &piece)
        }
    }

    /// A Softmax over the classes whose output is a graph output and goes nowhere else; or a
    /// LogSoftmax (PyTorch's MNIST example ends with F.log_softmax): the same probabilities, and
    /// the logits before it differ from its output by one constant per sample.
    mutating func atFinalSoftmax(_ n: Int) throws -> Bool {
        let node = nodes[n]
        guard node.opType == "Softmax" || node.opType == "LogSoftmax", let out = node.outputs.first, file.outputs.contains(where: { $0.name == out }),
              consumers[out] == nil else { return false }
        let axis = node.attributes["axis"]?.i ?? (opset >= 13 ? -1 : 1)
        guard axis == 1 || axis == -1 else { throw error(n, "a softmax over axis \(axis) is not over the classes") }
        used[n] = true
        finalSoftmax = out
        return true
    }

    /// The branches from value `v` up to the node where they meet, as one block.
    mutating func fork(at v: String, consumers starts: [Int], shape: inout Shape, into piece: inout Piece) throws -> String {
        var branches: [(piece: Piece, end: String, shape: Shape)] = []
        var join: Int? = nil
        for s in starts {
            var branchShape = shape
            var branch = Piece(), end = v, stop: Int? = s
            if !isJoin(s) {
                let next = try translate(s, input: v, shape: &branchShape, into: &branch)
                let (rest, e, j) = try sequence(from: next, shape: &branchShape)
                branch.append(rest)
                end = e
                stop = j
            }
            guard let stop else {
                throw CNNError(.badFormat, "\(file.path): the value '\(v)' branches, and the branch through \(nodes[s].label) never joins the others (a second output or head is not supported)")
            }
            if let join, join != stop {
                throw error(stop, "the branches from '\(v)' meet at two different nodes (here and \(nodes[join].label))")
            }
            join = stop
            // A join reading v directly (an empty branch) once per input naming it.
            let times = isJoin(s) ? nodes[s].inputs.filter({ $0 == v }).count : 1
            for _ in 0..<times { branches.append((branch, end, branchShape)) }
        }
        guard let j = join else { throw CNNError(.internal, "\(file.path): a fork without branches") }
        let node = nodes[j]
        let inputs = dataInputs(j)
        if inputs.count > branches.count, node.opType == "Concat", let run = adjacentRun(of: branches.map(\.end), in: inputs) {
            // A concatenation of concatenations written as one (TorchScript's export flattens
            // Inception-v3's cat([a, cat([b, c]), ...])): these branches' inputs, side by side,
            // become a concat block whose output takes their place among the join's inputs.
            let ordered = run.compactMap { i in branches.first { $0.end == inputs[i] } }
            guard ordered.allSatisfy({ !$0.shape.flat && $0.shape.h == ordered[0].shape.h && $0.shape.w == ordered[0].shape.w }) else {
                throw error(j, "a concatenation of \(ordered.map(\.shape.description).joined(separator: ", ")) is not along the channels of images")
            }
            piece.append(LayerSpec(kind: .concat(branches: ordered.map(\.piece.specs))), ordered.flatMap(\.piece.weights))
            shape = Shape(c: ordered.reduce(0) { $0 + $1.shape.c }, h: ordered[0].shape.h, w: ordered[0].shape.w)
            // A name no value of the file has.
            var nested = "\(node.outputs.first ?? "concat")#\(run.lowerBound)"
            while producer[nested] != nil || consumers[nested] != nil || constants[nested] != nil { nested += "#" }
            let positions = nodes[j].inputs.indices.filter { !nodes[j].inputs[$0].isEmpty && constants[nodes[j].inputs[$0]] == nil
                && !integerValueNames.contains(nodes[j].inputs[$0]) }
            nodes[j].inputs.replaceSubrange(positions[run.lowerBound]...positions[run.upperBound - 1], with: [nested])
            consumers[nested] = [j]
            return nested
        }
        guard inputs.count == branches.count else {
            throw error(j, "it joins \(inputs.count) values, but \(branches.count) branches come from '\(v)'")
        }
        // The branches in the join's input order.
        var ordered: [(piece: Piece, end: String, shape: Shape)] = []
        var left = branches
        for input in inputs {
            guard let k = left.firstIndex(where: { $0.end == input }) else {
                throw error(j, "its input '\(input)' does not come from the branches of '\(v)'")
            }
            ordered.append(left.remove(at: k))
        }
        used[j] = true
        guard node.outputs.count == 1 else { throw error(j, "\(node.outputs.count) outputs") }
        switch node.opType {
        case "Add", "Sum":
            guard ordered.count == 2 else { throw error(j, "a sum of \(ordered.count) branches is not supported (two: a residual block)") }
            guard ordered[0].shape == ordered[1].shape else {
                throw error(j, "it adds \(ordered[0].shape) and \(ordered[1].shape) (a broadcasting sum is not supported)")
            }
            let body = ordered[0].piece.specs.isEmpty ? ordered[1] : ordered[0]
            let other = ordered[0].piece.specs.isEmpty ? ordered[0] : ordered[1]
            guard !body.piece.specs.isEmpty else { throw error(j, "x + x is not a residual block") }
            let shortcut = other.piece.specs.isEmpty ? nil : other.piece.specs
            var block = Piece()
            block.append(LayerSpec(kind: .residual(body: body.piece.specs, shortcut: shortcut)), body.piece.weights + other.piece.weights)
            piece.append(block)
            shape = body.shape
        case "Concat":
            let axis = node.attributes["axis"]?.i ?? 1
            guard axis == 1 || axis == -3, ordered.allSatisfy({ !$0.shape.flat && $0.shape.h == ordered[0].shape.h && $0.shape.w == ordered[0].shape.w }) else {
                throw error(j, "a concatenation along axis \(axis) of \(ordered.map(\.shape.description).joined(separator: ", ")) is not along the channels of images")
            }
            piece.append(LayerSpec(kind: .concat(branches: ordered.map(\.piece.specs))), ordered.flatMap(\.piece.weights))
            shape = Shape(c: ordered.reduce(0) { $0 + $1.shape.c }, h: ordered[0].shape.h, w: ordered[0].shape.w)
        case "Mul":
            guard ordered.count == 2, let gateIndex = ordered.firstIndex(where: { !$0.piece.specs.isEmpty }),
                  ordered[1 - gateIndex].piece.specs.isEmpty else {
                throw error(j, "a product of branches is supported as x · sigmoid(x), x · hardsigmoid(x) or a squeeze-and-excitation gate")
            }
            try gate(ordered[gateIndex].piece, node: j, shape: shape, into: &piece)
        default:
            throw error(j, "joining branches is supported by Add, Concat and Mul")
        }
        return node.outputs[0]
    }

    /// The positions of `ends` among `inputs` (each input taken once), when they lie side by side.
    private func adjacentRun(of ends: [String], in inputs: [String]) -> Range<Int>? {
        var taken = Set<Int>()
        for e in ends {
            guard let i = inputs.indices.first(where: { inputs[$0] == e && !taken.contains($0) }) else { return nil }
            taken.insert(i)
        }
        guard let lo = taken.min(), let hi = taken.max(), hi - lo + 1 == ends.count else { return nil }
        return lo..<(hi + 1)
    }

    /// x · f(x): SiLU, hard-swish, or squeeze-and-excitation (pool, 1×1 conv, act, 1×1 conv, gate).
    private func gate(_ branch: Piece, node j: Int, shape: Shape, into piece: inout Piece) throws {
        let specs = branch.specs.map(\.kind)
        if specs == [.activation(.sigmoid)] { piece.append(LayerSpec(kind: .activation(.silu))); return }
        if specs == [.activation(.hardSigmoid)] { piece.append(LayerSpec(kind: .activation(.hardSwish))); return }
        if specs.count == 5, case .globalAvgPool = specs[0], case let .conv(s, k1, st1, p1, _, g1) = specs[1],
           case .activation(let act) = specs[2], case let .conv(c, k2, st2, p2, _, g2) = specs[3], case .activation(let gate) = specs[4],
           c == shape.c, [k1, k2, st1, st2].allSatisfy({ $0 == Pair(1, 1) }), p1 == Pair(0, 0), p2 == Pair(0, 0), g1 == 1, g2 == 1,
           gate == .sigmoid || gate == .hardSigmoid, branch.weights.count >= 2 {
            // Convolutions without biases get zero ones (se's 1×1 convolutions have biases).
            var w = branch.weights
            if w.count == 2 || w.count == 3 && w[1].count != s { w.insert([Float](repeating: 0, count: s), at: 1) }
            if w.count == 3 { w.append([Float](repeating: 0, count: c)) }
            guard w.count == 4 else { throw error(j, "a squeeze-and-excitation gate's convolutions are not supported") }
            piece.append(LayerSpec(kind: .squeezeExcite(squeeze: s, act: act, gate: gate)), w)
            return
        }
        throw error(j, "it multiplies x by \(branch.specs.map(\.text).joined(separator: " ")); supported: sigmoid (SiLU), hardsigmoid (hard-swish) or a squeeze-and-excitation gate (global pool, 1x1 conv, activation, 1x1 conv, sigmoid)")
    }
}
