/// ONNX import, node by node: each supported op (with one data input) becomes layers, its
/// attributes checked against what the layer computes.
extension ONNXImporter {
    /// Translates node `n` reading data value `x` of `shape`; returns the value it leaves.
    mutating func translate(_ n: Int, input x: String, shape: inout Shape, into piece: inout Piece) throws -> String {
        let node = nodes[n]
        guard !used[n] else { throw error(n, "it is reached twice (a cycle in the graph?)") }
        used[n] = true
        guard let out = node.outputs.first, !out.isEmpty else { throw error(n, "it has no output") }
        let data = dataInputs(n)
        guard data == [x] else {
            // An op outside the supported set says so, whatever it reads (F.pad's pads, computed
            // through a Cast, are a second data value).
            guard Self.supportedOps.contains(node.opType) else { throw error(n, Self.unsupportedOp) }
            throw error(n, "it reads \(data.count) data values (\(data.joined(separator: ", "))); one is supported here")
        }
        guard node.inputs.first == x || ["Mul", "Add"].contains(node.opType) else {
            throw error(n, "its data input must be its first input")
        }
        let attrs = node.attributes
        func int(_ name: String, _ fallback: Int) -> Int { attrs[name]?.i ?? fallback }
        func intList(_ name: String) -> [Int]? { attrs[name]?.ints }
        /// Adds a leaf layer, checking it against the current shape.
        func add(_ kind: LayerKind, _ weights: [[Float]] = []) throws {
            let spec = LayerSpec(kind: kind)
            let layer: Layer
            do { layer = try Model.makeLayer(spec, input: shape, index: piece.specs.count) } catch let e as CNNError {
                throw error(n, "as \(spec.text) on \(shape): \(e.message)")
            }
            let expected = layer.parameters.map(\.count)
            guard expected == weights.map(\.count) else {
                throw error(n, "its weights have \(weights.map(\.count)) values, \(spec.text) on \(shape) needs \(expected)")
            }
            piece.append(spec, weights)
            shape = layer.outputShape
        }
        func noExtraOutputs() throws {
            for o in node.outputs.dropFirst() where !o.isEmpty && consumers[o] != nil {
                throw error(n, "its output '\(o)' is used, which is not supported")
            }
        }
        try noExtraOutputs()

        switch node.opType {
        case "Identity":
            break
        case "Conv":
            guard !shape.flat else { throw error(n, "a convolution of a vector \(shape)") }
            guard let wt = constants[node.inputs.count > 1 ? node.inputs[1] : ""] else { throw error(n, "its weights are not a constant") }
            let w = try file.floatValues(wt)
            guard wt.dims.count == 4 else { throw error(n, "its weights have dims \(wt.dims), not (out, in / groups, kH, kW)") }
            let groups = int("group", 1)
            let (oc, k) = (wt.dims[0], Pair(wt.dims[2], wt.dims[3]))
            if let ks = intList("kernel_shape"), ks != [k.h, k.w] { throw error(n, "kernel_shape \(ks) differs from the weights' \(k)") }
            guard (intList("dilations") ?? [1, 1]).allSatisfy({ $0 == 1 }) else { throw error(n, "dilation \(intList("dilations")!) is not supported") }
            let strides = intList("strides") ?? [1, 1]
            let sides = try padding(n, attrs, shape: shape, kernel: k, strides: strides)
            guard strides.count == 2, strides.allSatisfy({ $0 >= 1 && $0 <= Architecture.maxDimension }) else { throw error(n, "strides \(strides)") }
            // Asymmetric padding (TensorFlow's "same" at a stride, a ZeroPad2d folded in by the
            // exporter): the convolution takes the padding both sides share, a zeropad the rest.
            let pads = Pair(min(sides.top, sides.bottom), min(sides.left, sides.right))
            guard groups >= 1, wt.dims[1] * groups == shape.c, oc % groups == 0 else {
                throw error(n, "weights \(wt.dims) with group \(groups) do not fit an input of \(shape.c) channels")
            }
            var weights = [w]
            if node.inputs.count > 2, !node.inputs[2].isEmpty {
                guard let bt = constants[node.inputs[2]] else { throw error(n, "its bias is not a constant") }
                weights.append(try file.floatValues(bt))
            }
            let rest = Padding(top: sides.top - pads.h, left: sides.left - pads.w, bottom: sides.bottom - pads.h, right: sides.right - pads.w)
            if rest != Padding(top: 0, left: 0, bottom: 0, right: 0) { try add(.zeroPad(rest)) }
            try add(.conv(out: oc, kernel: k, stride: Pair(strides[0], strides[1]), pad: pads, bias: weights.count == 2, groups: groups), weights)
        case "BatchNormalization":
            guard node.inputs.count == 5 else { throw error(n, "\(node.inputs.count) inputs (5 expected)") }
            var weights: [[Float]] = []
            for name in node.inputs.dropFirst() {
                guard let t = constants[name] else { throw error(n, "its parameter '\(name)' is not a constant") }
                weights.append(try file.floatValues(t))
            }
            guard int("training_mode", 0) == 0 else { throw error(n, "training_mode 1 (export the model in eval mode)") }
            let eps = attrs["epsilon"]?.f ?? 1e-5
            let momentum = ONNXImporter.torchMomentum(attrs["momentum"]?.f ?? 0.9)
            guard eps > 0, eps.isFinite, momentum > 0, momentum <= 1 else { throw error(n, "epsilon \(eps) / momentum \(momentum)") }
            try add(.batchnorm(eps: eps, momentum: momentum), weights)
        case "Relu": try add(.activation(.relu))
        case "Sigmoid": try add(.activation(.sigmoid))
        case "Tanh": try add(.activation(.tanh))
        case "HardSwish": try add(.activation(.hardSwish))
        case "Silu": try add(.activation(.silu))
        case "LeakyRelu": try add(.activation(.leakyRelu(alpha: attrs["alpha"]?.f ?? 0.01)))
        case "HardSigmoid":
            let alpha = attrs["alpha"]?.f ?? 0.2, beta = attrs["beta"]?.f ?? 0.5
            guard abs(alpha - 1.0 / 6) < 1e-6, abs(beta - 0.5) < 1e-6 else {
                throw error(n, "alpha \(alpha) and beta \(beta): PyTorch's hardsigmoid (alpha 1/6, beta 0.5) is supported")
            }
            try add(.activation(.hardSigmoid))
        case "Clip":
            var low = attrs["min"]?.f, high = attrs["max"]?.f
            if node.inputs.count > 1, !node.inputs[1].isEmpty { low = try scalar(n, node.inputs[1]) }
            if node.inputs.count > 2, !node.inputs[2].isEmpty { high = try scalar(n, node.inputs[2]) }
            if low == 0 && high == 6 { try add(.activation(.relu6)) }
            else if low == 0 && (high == nil || high == .infinity) { try add(.activation(.relu)) }
            else { throw error(n, "a clip to [\(low.map { "\($0)" } ?? "-inf"), \(high.map { "\($0)" } ?? "inf")]: [0, 6] (ReLU6) and [0, inf) are supported") }
        case "Gelu":
            guard (attrs["approximate"]?.s ?? "none") == "none" else { throw error(n, "the tanh approximation of GELU is not supported") }
            try add(.activation(.gelu))
        case "MaxPool", "AveragePool":
            guard !shape.flat else { throw error(n, "pooling a vector \(shape)") }
            guard let ks = intList("kernel_shape"), ks.count == 2 else { throw error(n, "kernel_shape must have two values") }
            let k = Pair(ks[0], ks[1]), strides = intList("strides") ?? [1, 1]
            guard strides.count == 2, strides.allSatisfy({ $0 >= 1 }) else { throw error(n, "strides \(strides)") }
            guard (intList("dilations") ?? [1, 1]).allSatisfy({ $0 == 1 }) else { throw error(n, "dilation is not supported") }
            let sides = try padding(n, attrs, shape: shape, kernel: k, strides: strides)
            // Zeros are not -infinity (max pooling) and count in an average: no zeropad here.
            guard sides.top == sides.bottom, sides.left == sides.right else {
                throw error(n, "asymmetric padding \([sides.top, sides.left, sides.bottom, sides.right]) is not supported for pooling")
            }
            let pads = Pair(sides.top, sides.left)
            guard 2 * pads.h <= k.h && 2 * pads.w <= k.w else { throw error(n, "padding \(pads) is more than half the window \(k)") }
            let s = Pair(strides[0], strides[1])
            // ceil_mode: the output size rounds up (a window past the end), kept where it changes it.
            let ceil = int("ceil_mode", 0) != 0
                && (pooledSize(shape.h, kernel: k.h, stride: s.h, pad: pads.h, ceil: true) != pooledSize(shape.h, kernel: k.h, stride: s.h, pad: pads.h, ceil: false)
                    || pooledSize(shape.w, kernel: k.w, stride: s.w, pad: pads.w, ceil: true) != pooledSize(shape.w, kernel: k.w, stride: s.w, pad: pads.w, ceil: false))
            if node.opType == "MaxPool" {
                try add(.maxpool(kernel: k, stride: s, pad: pads, ceil: ceil))
            } else {
                // count_include_pad 0 (ONNX's default): a border window is divided by its inputs alone.
                guard !ceil else { throw error(n, "ceil_mode 1 changes the output size here, which is not supported for average pooling") }
                try add(.averagePool(kernel: k, stride: s, pad: pads, countPad: int("count_include_pad", 0) != 0))
            }
        case "Pad":
            // Zeros around the image (ZeroPad2d, F.pad): pads are every axis's start, then every
            // axis's end, an attribute before opset 11, then an input computed from constants.
            guard !shape.flat else { throw error(n, "padding a vector \(shape)") }
            let mode = attrs["mode"]?.s ?? "constant"
            guard mode == "constant" else { throw error(n, "mode '\(mode)' is not supported (zeros, mode 'constant', are)") }
            var pads: [Int?]? = intList("pads")
            var value = attrs["value"]?.f ?? 0
            if opset >= 11 {
                pads = node.inputs.count > 1 ? try integers(of: node.inputs[1], node: n)?.values : nil
                if node.inputs.count > 2, !node.inputs[2].isEmpty { value = try scalar(n, node.inputs[2]) }
                guard node.inputs.count <= 3 || node.inputs[3].isEmpty else { throw error(n, "padding chosen axes (its axes input) is not supported") }
            }
            guard let pads, pads.count == 8, !pads.contains(nil) else {
                throw error(n, "its pads are not 8 integers (N, C, H, W) from constants or a computation on them")
            }
            guard value == 0 else { throw error(n, "padding with \(value) is not supported (zeros are)") }
            let p = pads.map { $0! }
            guard p[0] == 0, p[1] == 0, p[4] == 0, p[5] == 0 else { throw error(n, "pads \(p) pad the batch or the channels; the height and width are supported") }
            guard p.allSatisfy({ $0 >= 0 && $0 <= Architecture.maxDimension }) else { throw error(n, "pads \(p): negative pads (cropping) are not supported") }
            let sides = Padding(top: p[2], left: p[3], bottom: p[6], right: p[7])
            if sides != Padding(top: 0, left: 0, bottom: 0, right: 0) { try add(.zeroPad(sides)) }
        case "GlobalAveragePool":
            try add(.globalAvgPool)
        case "ReduceMean":
            var axes = intList("axes")
            if node.inputs.count > 1, !node.inputs[1].isEmpty {
                guard let t = constants[node.inputs[1]] else { throw error(n, "its axes are not a constant") }
                axes = try file.intValues(t)
            }
            guard !shape.flat, let a = axes, Set(a.map { $0 < 0 ? $0 + 4 : $0 }) == [2, 3] else {
                throw error(n, "a mean over axes \(axes.map { "\($0)" } ?? "all") of \(shape); the mean over height and width (2, 3) is supported")
            }
            try add(.globalAvgPool)
            if int("keepdims", 1) == 0 { try add(.flatten) }
        case "Flatten":
            guard int("axis", 1) == 1 else { throw error(n, "axis \(int("axis", 1)); flattening from axis 1 is supported") }
            if !shape.flat { try add(.flatten) }
        case "Reshape":
            guard node.inputs.count == 2, let target = try integers(of: node.inputs[1], node: n)?.values else {
                throw error(n, "its target shape is not a constant or a computation on Shape")
            }
            // To (batch, features): the batch as 0, -1 or the batch size read by Shape.
            let features = shape.count
            // (A model exported without a dynamic batch has its batch size as a constant there.)
            guard target.count == 2, target[0] == nil || target[0] == 0 || target[0] == -1 || target[0] == fixedBatch || target[1] != -1,
                  target[1] == -1 && target[0] != -1 || target[1] == features else {
                throw error(n, "a reshape of \(shape) to \(target.map { $0.map(String.init) ?? "batch" }); to (batch, \(features)) is supported")
            }
            if !shape.flat { try add(.flatten) }
        case "Gemm":
            guard shape.flat else { throw error(n, "a Gemm of \(shape): flatten it first") }
            guard int("transA", 0) == 0, attrs["alpha"].map({ $0.f == 1 }) ?? true, attrs["beta"].map({ $0.f == 1 }) ?? true else {
                throw error(n, "transA, alpha and beta must be 0, 1 and 1")
            }
            guard node.inputs.count >= 2, let bt = constants[node.inputs[1]], bt.dims.count == 2 else { throw error(n, "its weights are not a constant matrix") }
            var w = try file.floatValues(bt)
            let transB = int("transB", 0) != 0
            let (outputs, inputs) = transB ? (bt.dims[0], bt.dims[1]) : (bt.dims[1], bt.dims[0])
            guard inputs == shape.c else { throw error(n, "weights \(bt.dims) for \(shape.c) inputs") }
            if !transB { w = ONNXImporter.transposed(w, rows: inputs, cols: outputs) }
            var weights = [w]
            if node.inputs.count > 2, !node.inputs[2].isEmpty {
                guard let ct = constants[node.inputs[2]] else { throw error(n, "its bias is not a constant") }
                let b = try file.floatValues(ct)
                guard b.count == outputs else { throw error(n, "a bias of \(b.count) values for \(outputs) outputs (broadcasting is not supported)") }
                weights.append(b)
            }
            try add(.dense(out: outputs, bias: weights.count == 2), weights)
        case "MatMul":
            guard shape.flat else { throw error(n, "a MatMul of \(shape): flatten it first") }
            guard node.inputs.count == 2, node.inputs[0] == x, let bt = constants[node.inputs[1]], bt.dims.count == 2, bt.dims[0] == shape.c else {
                throw error(n, "a product with a constant (\(shape.c), out) matrix is supported")
            }
            let outputs = bt.dims[1]
            var weights = [ONNXImporter.transposed(try file.floatValues(bt), rows: shape.c, cols: outputs)]
            var result = out
            // The Add of a bias right after it.
            if let a = (consumers[out] ?? []).first, consumers[out]!.count == 1, nodes[a].opType == "Add", !used[a],
               let biasName = nodes[a].inputs.first(where: { $0 != out }), let ct = constants[biasName],
               let sum = nodes[a].outputs.first, !sum.isEmpty {
                let b = try file.floatValues(ct)
                if b.count == outputs {
                    used[a] = true
                    weights.append(b)
                    result = sum
                }
            }
            try add(.dense(out: outputs, bias: weights.count == 2), weights)
            return result
        case "Dropout":
            var p = attrs["ratio"]?.f ?? 0.5
            if node.inputs.count > 1, !node.inputs[1].isEmpty { p = try scalar(n, node.inputs[1]) }
            guard p >= 0, p < 1 else { throw error(n, "ratio \(p)") }
            try add(.dropout(p: p))
        case "Softmax", "LogSoftmax":
            throw error(n, "a softmax is supported only as the graph's last node, over the classes")
        default:
            let known = ONNXImporter.supportedOps.contains(node.opType)
            throw error(n, known ? "this use of \(node.opType) is not supported (on \(shape))" : Self.unsupportedOp)
        }
        return out
    }

    /// The padding on each side, from `pads` (top, left, bottom, right) or auto_pad.
    private func padding(_ n: Int, _ attrs: [String: ONNXFile.Attribute], shape: Shape, kernel k: Pair, strides: [Int]) throws -> Padding {
        let auto = attrs["auto_pad"]?.s ?? "NOTSET"
        switch auto {
        case "NOTSET":
            let pads = attrs["pads"]?.ints ?? [0, 0, 0, 0]
            guard pads.count == 4, pads.allSatisfy({ $0 >= 0 && $0 <= Architecture.maxDimension }) else { throw error(n, "pads \(pads)") }
            return Padding(top: pads[0], left: pads[1], bottom: pads[2], right: pads[3])
        case "VALID": return Padding(top: 0, left: 0, bottom: 0, right: 0)
        case "SAME_UPPER", "SAME_LOWER":
            // The output size is the input's over the stride, rounded up; an odd total puts the
            // extra row or column at the end (UPPER) or the start (LOWER).
            guard strides.count == 2, strides.allSatisfy({ $0 >= 1 && $0 <= Architecture.maxDimension }) else { throw error(n, "strides \(strides)") }
            func total(_ size: Int, _ kk: Int, _ s: Int) -> Int { max(0, ((size + s - 1) / s - 1) * s + kk - size) }
            let th = total(shape.h, k.h, strides[0]), tw = total(shape.w, k.w, strides[1])
            let (top, left) = auto == "SAME_UPPER" ? (th / 2, tw / 2) : (th - th / 2, tw - tw / 2)
            return Padding(top: top, left: left, bottom: th - top, right: tw - left)
        default:
            throw error(n, "auto_pad '\(auto)' (NOTSET, VALID, SAME_UPPER and SAME_LOWER are read)")
        }
    }

    private func scalar(_ n: Int, _ name: String) throws -> Float {
        guard let t = constants[name] else { throw error(n, "its input '\(name)' is not a constant") }
        let v = t.dataType == ONNXFile.floatType || t.dataType == ONNXFile.doubleType ? try file.floatValues(t) : try file.intValues(t).map(Float.init)
        guard v.count == 1 else { throw error(n, "its input '\(name)' holds \(v.count) values, not one") }
        return v[0]
    }

    /// ONNX's batch-norm momentum weighs the running statistics, PyTorch's the batch's: 1 - m,
    /// rounded to six decimals when that is within float error (0.9 comes back as 0.1, not 0.10000002).
    static func torchMomentum(_ m: Float) -> Float {
        let d = 1 - Double(m)
        let snapped = (d * 1e6).rounded() / 1e6
        return Float(abs(d - snapped) < 1e-7 ? snapped : d)
    }

    /// w (rows × cols) transposed, by the engine's transpose. Values of another count (an
    /// external tensor left empty) come back as they are, for the layer's size check to refuse.
    static func transposed(_ w: [Float], rows: Int, cols: Int) -> [Float] {
        guard !w.isEmpty, w.count == rows * cols else { return w }
        var t = [Float](repeating: 0, count: w.count)
        w.withUnsafeBufferPointer { src in
            t.withUnsafeMutableBufferPointer { transpose(src.baseAddress!, rows: rows, cols: cols, into: $0.baseAddress!) }
        }
        return t
    }
}
