/// The small integer tensors a graph computes from shapes and constants: the target of
/// `x.view(x.size(0), -1)` (Shape, Gather, Unsqueeze, Concat) and F.pad's pads, which
/// torch.onnx.export writes as a computation even with its constant folding (ConstantOfShape,
/// Concat, Reshape to pairs, Slice backwards, Transpose, Reshape, Cast; Mul and Sub on the
/// rank without folding). Such values are not data: the walk does not follow them, and the ops
/// that read them (Reshape, Pad) evaluate them here.
extension ONNXImporter {
    /// Dims and values in row-major order; a nil value is the batch size, unknown here.
    struct Integers: Equatable {
        var dims: [Int]
        var values: [Int?]
    }

    static let integerOps: Set<String> = ["Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity",
                                          "ConstantOfShape", "Reshape", "Transpose", "Add", "Sub", "Mul", "Div"]
    /// The most values one such tensor holds here (pads: 8).
    static let maxIntegers = 64

    /// The number of values of `dims`; nil when negative or past `maxIntegers` (checked as it
    /// multiplies: a hostile file's dims overflow an Int).
    static func count(_ dims: [Int]) -> Int? {
        var n = 1
        for d in dims {
            guard d >= 0 else { return nil }
            if d == 0 { return dims.allSatisfy { $0 >= 0 } ? 0 : nil }
            n *= d
            guard n <= maxIntegers else { return nil }
        }
        return n
    }

    /// The values computed from shapes and constants alone: made by an op of `integerOps` whose
    /// inputs are constants or such values (Shape reads any value). Memoized, and at most 32 nodes
    /// deep, so that a file's chains cost once each.
    static func integerValues(_ nodes: [ONNXFile.Node], producer: [String: Int], constants: [String: ONNXFile.Tensor]) -> Set<String> {
        var memo: [String: Bool] = [:]
        func isInteger(_ v: String, _ depth: Int) -> Bool {
            if let known = memo[v] { return known }
            guard depth < 32, let p = producer[v], integerOps.contains(nodes[p].opType) else { return false }
            let node = nodes[p]
            let result = node.opType == "Shape"
                || node.inputs.allSatisfy { $0.isEmpty || constants[$0] != nil || isInteger($0, depth + 1) }
            memo[v] = result
            return result
        }
        var values = Set<String>()
        for node in nodes { for o in node.outputs where !o.isEmpty && isInteger(o, 0) { values.insert(o) } }
        return values
    }

    /// The integers value `value` holds, when it is a constant or one of `integerValues` that
    /// evaluates here (nil otherwise). Nodes evaluated are marked used; `n` is the node asking.
    mutating func integers(of value: String, node n: Int, depth: Int = 0) throws -> Integers? {
        if let t = constants[value] {
            guard t.dataType == ONNXFile.int64Type || t.dataType == ONNXFile.int32Type, t.elementCount <= Self.maxIntegers else { return nil }
            let v = try file.intValues(t)
            return Integers(dims: Self.count(t.dims) == v.count ? t.dims : [v.count], values: v)
        }
        if let v = integerMemo[value] { return v }
        guard depth < 32, let p = producer[value] else { return nil }
        let node = nodes[p], attributes = node.attributes
        func input(_ k: Int) throws -> Integers? {
            guard k < node.inputs.count, !node.inputs[k].isEmpty else { return nil }
            return try integers(of: node.inputs[k], node: n, depth: depth + 1)
        }
        /// Input k's values when all are known.
        func known(_ k: Int) throws -> [Int]? {
            guard let a = try input(k), !a.values.contains(nil) else { return nil }
            return a.values.map { $0! }
        }
        /// A list given as an attribute before `opset`, as input k from it.
        func list(_ name: String, input k: Int, from version: Int) throws -> [Int]? {
            opset < version ? attributes[name]?.ints : try known(k)
        }
        let result: Integers
        switch node.opType {
        case "Shape":
            let source = node.inputs.first ?? ""
            guard let s = knownShapes[source] ?? constants[source].map({ $0.dims.map { Optional($0) } }) else { return nil }
            let start = attributes["start"]?.i ?? 0, end = attributes["end"]?.i ?? s.count
            let a = max(0, min(s.count, start < 0 ? start + s.count : start)), b = max(a, min(s.count, end < 0 ? end + s.count : end))
            result = Integers(dims: [b - a], values: Array(s[a..<b]))
        case "Cast", "Identity":
            guard let a = try input(0) else { return nil }
            result = a
        case "Gather":
            guard let data = try input(0), data.dims.count == 1, let idx = try input(1), (attributes["axis"]?.i ?? 0) == 0 else { return nil }
            var values: [Int?] = []
            for i in idx.values {
                guard let i, i >= -data.values.count, i < data.values.count else { return nil }
                values.append(data.values[i < 0 ? i + data.values.count : i])
            }
            result = Integers(dims: idx.dims, values: values)
        case "Unsqueeze":
            guard let a = try input(0), let axes = try list("axes", input: 1, from: 13) else { return nil }
            let rank = a.dims.count + axes.count
            let at = Set(axes.map { $0 < 0 ? $0 + rank : $0 })
            guard at.count == axes.count, at.allSatisfy({ (0..<rank).contains($0) }) else { return nil }
            var rest = a.dims.makeIterator()
            result = Integers(dims: (0..<rank).map { at.contains($0) ? 1 : rest.next()! }, values: a.values)
        case "Squeeze":
            guard let a = try input(0) else { return nil }
            let axes = try list("axes", input: 1, from: 13)
            let at = axes.map { Set($0.map { $0 < 0 ? $0 + a.dims.count : $0 }) } ?? Set(a.dims.indices.filter { a.dims[$0] == 1 })
            guard at.allSatisfy({ a.dims.indices.contains($0) && a.dims[$0] == 1 }) else { return nil }
            result = Integers(dims: a.dims.indices.filter { !at.contains($0) }.map { a.dims[$0] }, values: a.values)
        case "Concat":
            guard [0, -1].contains(attributes["axis"]?.i ?? 0) else { return nil }
            var values: [Int?] = []
            for k in node.inputs.indices where !node.inputs[k].isEmpty {
                guard let a = try input(k), a.dims.count == 1, values.count + a.values.count <= Self.maxIntegers else { return nil }
                values += a.values
            }
            result = Integers(dims: [values.count], values: values)
        case "Slice":
            // One axis, any step (F.pad's pads are reversed by a step of -1).
            guard let a = try input(0), !a.dims.isEmpty, let starts = try list("starts", input: 1, from: 10),
                  let ends = try list("ends", input: 2, from: 10), starts.count == 1, ends.count == 1 else { return nil }
            let axes = try list("axes", input: 3, from: 10) ?? [0], steps = opset < 10 ? [1] : try known(4) ?? [1]
            guard axes.count == 1, steps.count == 1, steps[0] != 0, (-a.dims.count..<a.dims.count).contains(axes[0]) else { return nil }
            let axis = axes[0] < 0 ? axes[0] + a.dims.count : axes[0], size = a.dims[axis], step = steps[0]
            // ONNX's rule: a negative index counts from the end, then clamped to where the step can go.
            func clamp(_ v: Int, _ lo: Int, _ hi: Int) -> Int { max(lo, min(hi, v < 0 ? v + size : v)) }
            let picked = step > 0 ? Array(stride(from: clamp(starts[0], 0, size), to: clamp(ends[0], 0, size), by: step))
                : Array(stride(from: clamp(starts[0], 0, size - 1), to: clamp(ends[0], -1, size - 1), by: step))
            let inner = a.dims[(axis + 1)...].reduce(1, *), outer = a.dims[..<axis].reduce(1, *)
            var values: [Int?] = []
            for o in 0..<outer { for i in picked { values += a.values[((o * size + i) * inner)..<((o * size + i + 1) * inner)] } }
            var dims = a.dims
            dims[axis] = picked.count
            result = Integers(dims: dims, values: values)
        case "ConstantOfShape":
            guard let dims = try known(0), let count = Self.count(dims) else { return nil }
            var fill = 0
            if let t = attributes["value"]?.t {
                let isInt = t.dataType == ONNXFile.int64Type || t.dataType == ONNXFile.int32Type
                guard t.elementCount == 1, let v = isInt ? try file.intValues(t).first : try file.floatValues(t).first.flatMap({ Int(exactly: $0) }) else { return nil }
                fill = v
            }
            result = Integers(dims: dims, values: [Int?](repeating: fill, count: count))
        case "Reshape":
            guard let a = try input(0), let target = try known(1), target.filter({ $0 == -1 }).count <= 1 else { return nil }
            // 0 copies the input's size there (unless allowzero), -1 takes what is left.
            let keepZero = (attributes["allowzero"]?.i ?? 0) != 0
            var dims = target
            for (i, d) in target.enumerated() where d == 0 && !keepZero {
                guard i < a.dims.count else { return nil }
                dims[i] = a.dims[i]
            }
            if let i = dims.firstIndex(of: -1) {
                guard let rest = Self.count(dims.filter { $0 != -1 }), rest > 0, a.values.count % rest == 0 else { return nil }
                dims[i] = a.values.count / rest
            }
            guard Self.count(dims) == a.values.count else { return nil }
            result = Integers(dims: dims, values: a.values)
        case "Transpose":
            guard let a = try input(0) else { return nil }
            let rank = a.dims.count, perm = attributes["perm"]?.ints ?? Array((0..<rank).reversed())
            guard perm.sorted() == Array(0..<rank) else { return nil }
            let dims = perm.map { a.dims[$0] }
            var strides = [Int](repeating: 1, count: rank)
            for i in stride(from: rank - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * a.dims[i + 1] }
            var values: [Int?] = []
            for flat in 0..<a.values.count {
                // The output's index `flat`, digit by digit in its dims, read where the input has it.
                var rem = flat, source = 0
                for k in stride(from: rank - 1, through: 0, by: -1) {
                    source += rem % dims[k] * strides[perm[k]]
                    rem /= dims[k]
                }
                values.append(a.values[source])
            }
            result = Integers(dims: dims, values: values)
        case "Add", "Sub", "Mul", "Div":
            // Same sizes, or one value against many.
            guard let a = try input(0), let b = try input(1),
                  a.values.count == b.values.count || a.values.count == 1 || b.values.count == 1 else { return nil }
            let count = max(a.values.count, b.values.count)
            var values: [Int?] = []
            for i in 0..<count {
                guard let x = a.values[a.values.count == 1 ? 0 : i], let y = b.values[b.values.count == 1 ? 0 : i] else { values.append(nil); continue }
                let (v, overflow): (Int, Bool)
                switch node.opType {
                case "Add": (v, overflow) = x.addingReportingOverflow(y)
                case "Sub": (v, overflow) = x.subtractingReportingOverflow(y)
                case "Mul": (v, overflow) = x.multipliedReportingOverflow(by: y)
                default: (v, overflow) = y == 0 ? (0, true) : x.dividedReportingOverflow(by: y)
                }
                guard !overflow else { return nil }
                values.append(v)
            }
            // The dims of the larger one (of the higher rank when both are that large).
            let shapes = [a, b].filter { $0.values.count == count }.map(\.dims)
            result = Integers(dims: shapes.max { $0.count < $1.count }!, values: values)
        default:
            return nil
        }
        guard result.values.count <= Self.maxIntegers, Self.count(result.dims) == result.values.count else { return nil }
        used[p] = true
        integerMemo[value] = result
        return result
    }
}
