/// The parser of the architecture language (see `Architecture`).
struct ArchitectureParser {
    private let chars: [Character]
    private var index = 0
    private var line = 1
    private var column = 1

    init(_ text: String) { chars = Array(text) }

    private struct Token {
        var name: String
        var args: [(key: String?, value: String)]
        var line: Int, column: Int
        var text: String
    }

    mutating func parse() throws -> Architecture {
        var tokens: [Token] = []
        while let token = try nextToken() {
            tokens.append(token)
            if tokens.count > Architecture.maxLayers + 1 {
                throw CNNError(.parse, "architecture: more than \(Architecture.maxLayers) layers")
            }
        }
        guard let first = tokens.first else {
            throw CNNError(.parse, "architecture: empty text; expected input(C,H,W) followed by layers")
        }
        guard first.name == "input" else {
            throw error(first, "expected input(C,H,W) as the first layer")
        }
        let dims = try positional(first, count: 3, names: ["C", "H", "W"]).map { try int($0, first, "input size", min: 1) }
        let input = Shape(c: dims[0], h: dims[1], w: dims[2])
        var position = 1, leaves = 0
        let layers = try sequence(tokens, &position, depth: 0, leaves: &leaves)
        if position < tokens.count {
            throw error(tokens[position], "unexpected '\(tokens[position].name)' outside a block")
        }
        if layers.isEmpty {
            throw CNNError(.parse, "architecture: no layers after \(first.text); expected at least one layer such as dense(10)")
        }
        return Architecture(input: input, layers: layers)
    }

    // MARK: Blocks

    /// The deepest nesting of blocks accepted (a hostile text must not exhaust the stack).
    static let maxDepth = 16

    /// Layers up to the end of the text, a `|` or a `]` (left for the caller). `leaves` counts
    /// the layers that hold no others, after repeats, against `Architecture.maxLayers`.
    private func sequence(_ tokens: [Token], _ i: inout Int, depth: Int, leaves: inout Int) throws -> [LayerSpec] {
        var layers: [LayerSpec] = []
        while i < tokens.count {
            let t = tokens[i]
            if t.name == "]" || t.name == "|" { break }
            if t.name == "[" { throw error(t, "unexpected '['; blocks are residual[...], concat[... | ...] and repeat(N)[...]") }
            i += 1
            guard ["residual", "concat", "repeat"].contains(t.name) else {
                if i < tokens.count, tokens[i].name == "[" { throw error(tokens[i], "'\(t.text)' takes no block; blocks are residual[...], concat[... | ...] and repeat(N)[...]") }
                layers.append(LayerSpec(kind: try kind(of: t)))
                leaves += 1
                guard leaves <= Architecture.maxLayers else { throw error(t, "more than \(Architecture.maxLayers) layers") }
                continue
            }
            guard depth < Self.maxDepth else { throw error(t, "blocks nested more than \(Self.maxDepth) deep") }
            guard i < tokens.count, tokens[i].name == "[" else { throw error(t, "\(t.name) needs a block: \(t.name)[ ... ]") }
            i += 1
            var branches = [try sequence(tokens, &i, depth: depth + 1, leaves: &leaves)]
            while i < tokens.count, tokens[i].name == "|" {
                i += 1
                branches.append(try sequence(tokens, &i, depth: depth + 1, leaves: &leaves))
            }
            guard i < tokens.count, tokens[i].name == "]" else { throw error(t, "\(t.name)[ has no closing ']'") }
            i += 1
            switch t.name {
            case "residual":
                _ = try arguments(t, positional: [], keywords: [], required: 0)
                guard branches.count <= 2 else { throw error(t, "residual[BODY | SHORTCUT] has at most one '|'") }
                guard !branches[0].isEmpty else { throw error(t, "residual[...] needs layers in its body") }
                if branches.count == 2 && branches[1].isEmpty { throw error(t, "residual[BODY | ] has an empty shortcut; leave out the '|' for the identity") }
                layers.append(LayerSpec(kind: .residual(body: branches[0], shortcut: branches.count == 2 ? branches[1] : nil)))
            case "concat":
                _ = try arguments(t, positional: [], keywords: [], required: 0)
                guard branches.count >= 2 else { throw error(t, "concat[A | B ...] needs at least two branches separated by '|'") }
                guard branches.contains(where: { !$0.isEmpty }) else { throw error(t, "concat[...] has only empty branches") }
                layers.append(LayerSpec(kind: .concat(branches: branches)))
            default:   // repeat: the block's layers, n times
                let a = try arguments(t, positional: ["n"], keywords: [], required: 1)
                let n = try int(try need(a, "n", t), t, "n", min: 1)
                guard branches.count == 1 else { throw error(t, "repeat(N)[...] takes one sequence, no '|'") }
                guard !branches[0].isEmpty else { throw error(t, "repeat(N)[...] is empty") }
                let inside = branches[0].reduce(0) { $0 + $1.leafCount }
                guard n <= Architecture.maxLayers, leaves - inside + n * inside <= Architecture.maxLayers else {
                    throw error(t, "more than \(Architecture.maxLayers) layers once repeated")
                }
                leaves += (n - 1) * inside
                for _ in 0..<n { layers += branches[0] }
            }
        }
        return layers
    }

    // MARK: Tokens

    private mutating func advance() {
        if chars[index] == "\n" { line += 1; column = 1 } else { column += 1 }
        index += 1
    }

    private mutating func skipSpaceAndComments() {
        while index < chars.count {
            let c = chars[index]
            if c == "#" {
                while index < chars.count && chars[index] != "\n" { advance() }
            } else if c.isWhitespace || c == "," || c == ";" {
                advance()
            } else {
                return
            }
        }
    }

    private mutating func nextToken() throws -> Token? {
        skipSpaceAndComments()
        guard index < chars.count else { return nil }
        let startLine = line, startColumn = column
        if chars[index] == "[" || chars[index] == "]" || chars[index] == "|" {
            let c = String(chars[index])
            advance()
            return Token(name: c, args: [], line: startLine, column: startColumn, text: c)
        }
        var name = ""
        while index < chars.count, chars[index].isLetter || chars[index].isNumber || chars[index] == "_" {
            name.append(chars[index])
            advance()
        }
        if name.isEmpty {
            throw CNNError(.parse, "architecture, line \(startLine) column \(startColumn): unexpected '\(chars[index])'; expected a layer name such as conv or dense")
        }
        var text = name
        var args: [(key: String?, value: String)] = []
        // Arguments must follow the name directly: `conv(32,3)`, not `conv (32,3)`.
        if index < chars.count && chars[index] == "(" {
            text.append("(")
            advance()
            var current = ""
            var closed = false
            while index < chars.count {
                let c = chars[index]
                if c == "\n" || c == "#" || c == "(" { break }
                text.append(c)
                advance()
                if c == ")" { closed = true; break }
                if c == "," {
                    args.append(try argument(current, name: name, line: startLine, column: startColumn, text: text))
                    current = ""
                } else if !c.isWhitespace {
                    current.append(c)
                }
            }
            guard closed else {
                throw CNNError(.parse, "architecture, line \(startLine) column \(startColumn): '\(text)' has no closing ')'")
            }
            if !current.isEmpty || !args.isEmpty {
                args.append(try argument(current, name: name, line: startLine, column: startColumn, text: text))
            }
        }
        return Token(name: name.lowercased(), args: args, line: startLine, column: startColumn, text: text)
    }

    private func argument(_ raw: String, name: String, line: Int, column: Int, text: String) throws -> (key: String?, value: String) {
        if raw.isEmpty {
            throw CNNError(.parse, "architecture, line \(line) column \(column): empty argument in '\(text)'")
        }
        if let eq = raw.firstIndex(of: "=") {
            let key = String(raw[..<eq]).lowercased(), value = String(raw[raw.index(after: eq)...])
            if key.isEmpty || value.isEmpty {
                throw CNNError(.parse, "architecture, line \(line) column \(column): malformed argument '\(raw)' in '\(text)'; expected key=value")
            }
            return (key, value)
        }
        return (nil, raw)
    }

    // MARK: Layers

    /// The activations without arguments, by name.
    private static let activations: [String: ActivationKind] = [
        "relu": .relu, "sigmoid": .sigmoid, "tanh": .tanh, "relu6": .relu6, "hardsigmoid": .hardSigmoid,
        "hardswish": .hardSwish, "silu": .silu, "swish": .silu, "gelu": .gelu,
    ]

    private func kind(of t: Token) throws -> LayerKind {
        switch t.name {
        case "input":
            throw error(t, "input(...) may appear only once, as the first layer")
        case "conv", "conv2d":
            let a = try arguments(t, positional: ["out", "kernel"], keywords: ["stride", "pad", "bias", "groups"], required: 2)
            let out = try int(try need(a, "out", t), t, "out", min: 1)
            let k = try pair(try need(a, "kernel", t), t, "kernel", min: 1)
            let s = try a["stride"].map { try pair($0, t, "stride", min: 1) } ?? Pair(1, 1)
            let p = try a["pad"].map { try pair($0, t, "pad", min: 0) } ?? Pair(0, 0)
            let b = try a["bias"].map { try bool($0, t, "bias") } ?? true
            let groups = try a["groups"].map { try int($0, t, "groups", min: 1) } ?? 1
            guard out % groups == 0 else { throw error(t, "out (\(out)) must be a multiple of groups (\(groups))") }
            return .conv(out: out, kernel: k, stride: s, pad: p, bias: b, groups: groups)
        case "maxpool", "avgpool":
            let a = try arguments(t, positional: ["kernel"], keywords: t.name == "maxpool" ? ["stride", "pad", "ceil"] : ["stride", "pad", "count_include_pad"],
                                  required: 1)
            let k = try pair(try need(a, "kernel", t), t, "kernel", min: 1)
            let s = try a["stride"].map { try pair($0, t, "stride", min: 1) } ?? k
            let p = try a["pad"].map { try pair($0, t, "pad", min: 0) } ?? Pair(0, 0)
            guard 2 * p.h <= k.h, 2 * p.w <= k.w else { throw error(t, "pad (\(p)) must be at most half the kernel (\(k))") }
            let ceil = try a["ceil"].map { try bool($0, t, "ceil") } ?? false
            let countPad = try a["count_include_pad"].map { try bool($0, t, "count_include_pad") } ?? true
            return t.name == "maxpool" ? .maxpool(kernel: k, stride: s, pad: p, ceil: ceil)
                : .averagePool(kernel: k, stride: s, pad: p, countPad: countPad)
        case "globalavgpool":
            _ = try arguments(t, positional: [], keywords: [], required: 0)
            return .globalAvgPool
        case "flatten":
            _ = try arguments(t, positional: [], keywords: [], required: 0)
            return .flatten
        case "zeropad":
            // PyTorch's ZeroPad2d: one amount for every side, or (left, right, top, bottom).
            let a = try arguments(t, positional: ["left", "right", "top", "bottom"], keywords: [], required: 1)
            guard a.count == 1 || a.count == 4 else { throw error(t, "zeropad takes one amount or four (left, right, top, bottom), not \(a.count)") }
            let left = try int(try need(a, "left", t), t, "left", min: 0)
            let sides = try ["right", "top", "bottom"].map { side in try a[side].map { try int($0, t, side, min: 0) } ?? left }
            let p = Padding(top: sides[1], left: left, bottom: sides[2], right: sides[0])
            guard p != Padding(top: 0, left: 0, bottom: 0, right: 0) else { throw error(t, "zeropad adds nothing: give an amount of 1 or more on some side") }
            return .zeroPad(p)
        case "dense", "linear":
            let a = try arguments(t, positional: ["out"], keywords: ["bias"], required: 1)
            let out = try int(try need(a, "out", t), t, "out", min: 1)
            let b = try a["bias"].map { try bool($0, t, "bias") } ?? true
            return .dense(out: out, bias: b)
        case "relu", "sigmoid", "tanh", "relu6", "hardsigmoid", "hardswish", "silu", "swish", "gelu":
            _ = try arguments(t, positional: [], keywords: [], required: 0)
            return .activation(Self.activations[t.name]!)
        case "se":
            let a = try arguments(t, positional: ["squeeze"], keywords: ["act", "gate"], required: 1)
            let squeeze = try int(try need(a, "squeeze", t), t, "squeeze", min: 1)
            func activation(_ key: String, _ allowed: [String], default kind: ActivationKind) throws -> ActivationKind {
                guard let name = a[key]?.lowercased() else { return kind }
                guard allowed.contains(name), let kind = Self.activations[name] else {
                    throw error(t, "\(key) must be one of \(allowed.joined(separator: ", ")), not '\(name)'")
                }
                return kind
            }
            let act = try activation("act", ["relu", "relu6", "silu", "swish", "hardswish", "gelu", "sigmoid", "tanh"], default: .relu)
            let gate = try activation("gate", ["sigmoid", "hardsigmoid"], default: .sigmoid)
            return .squeezeExcite(squeeze: squeeze, act: act, gate: gate)
        case "leakyrelu":
            let a = try arguments(t, positional: ["alpha"], keywords: [], required: 0)
            let alpha = try a["alpha"].map { try float($0, t, "alpha", in: 0...1) } ?? 0.01
            return .activation(.leakyRelu(alpha: alpha))
        case "dropout":
            let a = try arguments(t, positional: ["p"], keywords: [], required: 1)
            let p = try float(try need(a, "p", t), t, "p", in: 0...0.999)
            return .dropout(p: p)
        case "batchnorm", "bn":
            let a = try arguments(t, positional: [], keywords: ["eps", "momentum"], required: 0)
            let eps = try a["eps"].map { try float($0, t, "eps", in: 1e-12...1) } ?? 1e-5
            let m = try a["momentum"].map { try float($0, t, "momentum", in: 0...1) } ?? 0.1
            return .batchnorm(eps: eps, momentum: m)
        default:
            throw error(t, "unknown layer '\(t.name)'; expected one of conv, maxpool, avgpool, globalavgpool, zeropad, flatten, dense, relu, leakyrelu, sigmoid, tanh, relu6, hardsigmoid, hardswish, silu, gelu, dropout, batchnorm, se, residual[...], concat[...|...], repeat(N)[...]")
        }
    }

    /// Matches positional and keyword arguments to names; a positional name may also be given by key.
    private func arguments(_ t: Token, positional: [String], keywords: [String], required: Int) throws -> [String: String] {
        var result: [String: String] = [:]
        var position = 0
        for (key, value) in t.args {
            if let key {
                guard positional.contains(key) || keywords.contains(key) else {
                    let allowed = positional + keywords
                    throw error(t, "unknown argument '\(key)'" + (allowed.isEmpty ? "; \(t.name) takes no arguments" : "; expected one of \(allowed.joined(separator: ", "))"))
                }
                guard result[key] == nil else { throw error(t, "argument '\(key)' given twice") }
                result[key] = value
            } else {
                guard position < positional.count else {
                    throw error(t, positional.isEmpty ? "\(t.name) takes no positional arguments" : "too many arguments; expected \(positional.joined(separator: ", "))")
                }
                guard result[positional[position]] == nil else { throw error(t, "argument '\(positional[position])' given twice") }
                result[positional[position]] = value
                position += 1
            }
        }
        for name in positional.prefix(required) where result[name] == nil {
            throw error(t, "missing argument '\(name)'; expected \(t.name)(\(positional.joined(separator: ",")))")
        }
        return result
    }

    private func need(_ a: [String: String], _ name: String, _ t: Token) throws -> String {
        guard let v = a[name] else { throw error(t, "missing argument '\(name)'") }
        return v
    }

    private func positional(_ t: Token, count: Int, names: [String]) throws -> [String] {
        guard t.args.count == count, t.args.allSatisfy({ $0.key == nil }) else {
            throw error(t, "expected \(t.name)(\(names.joined(separator: ",")))")
        }
        return t.args.map(\.value)
    }

    private func error(_ t: Token, _ what: String) -> CNNError {
        CNNError(.parse, "architecture, line \(t.line) column \(t.column), '\(t.text)': \(what)")
    }

    private func int(_ s: String, _ t: Token, _ name: String, min: Int) throws -> Int {
        guard let v = Int(s), v >= min, v <= Architecture.maxDimension else {
            throw error(t, "\(name) must be an integer from \(min) to \(Architecture.maxDimension), not '\(s)'")
        }
        return v
    }

    private func pair(_ s: String, _ t: Token, _ name: String, min: Int) throws -> Pair {
        let parts = s.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else {
            throw error(t, "\(name) must be N or HxW, not '\(s)'")
        }
        let h = try int(String(parts[0]), t, name, min: min)
        let w = parts.count == 2 ? try int(String(parts[1]), t, name, min: min) : h
        return Pair(h, w)
    }

    private func float(_ s: String, _ t: Token, _ name: String, in range: ClosedRange<Float>) throws -> Float {
        guard let v = Float(s), v.isFinite, range.contains(v) else {
            throw error(t, "\(name) must be a number from \(range.lowerBound) to \(range.upperBound), not '\(s)'")
        }
        return v
    }

    private func bool(_ s: String, _ t: Token, _ name: String) throws -> Bool {
        switch s.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw error(t, "\(name) must be true or false, not '\(s)'")
        }
    }
}
