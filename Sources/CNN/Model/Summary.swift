extension Model {
    /// The summary of an architecture, from its shapes alone: no parameter is allocated (a text
    /// naming billions of weights is described, or refused by the limits, without taking memory).
    public static func summary(of architecture: Architecture) throws -> String {
        try Model(architecture: architecture, fusing: true, allocate: false).summary
    }

    /// A table of the layers with their output shapes, parameter counts and FLOPs, and the totals.
    public var summary: String { summary(times: nil) }

    /// The summary with each layer's forward time (`layerTimes`) in milliseconds and as a share of
    /// the total; a block's time includes its layers'.
    public func summary(times: [ObjectIdentifier: Double]?) -> String {
        let total = layers.reduce(0) { $0 + (times?[ObjectIdentifier($1)] ?? 0) }
        func time(_ layer: Layer?) -> [String] {
            guard times != nil else { return [] }
            guard let layer else { return ["", ""] }
            let t = times?[ObjectIdentifier(layer)] ?? 0
            return [milliseconds(t), total > 0 ? String(Int((100 * t / total).rounded())) : "0"]
        }
        var rows: [[String]] = [["#", "layer", "output", "params", "FLOPs"] + (times == nil ? [] : ["ms", "%"])]
        let columns = rows[0].count
        rows.append(["", "input", inputShape.description, "0", "0"] + time(nil))
        // A block is a row with its totals, then its sequences' layers indented under their
        // module paths (body.0, shortcut.1, branches.2.0).
        func add(_ layer: Layer, _ name: String, _ indent: String) {
            let params = layer.parameters.filter(\.trainable).reduce(0) { $0 + $1.count }
            guard let block = layer as? Block else {
                rows.append([name, indent + layer.spec.text, layer.outputShape.description, grouped(params), grouped(layer.flops)] + time(layer))
                return
            }
            let kind = block is Residual ? "residual" : "concat"
            rows.append([name, indent + kind + "[", layer.outputShape.description, grouped(params), grouped(layer.flops)] + time(layer))
            for (sequence, inner) in block.sequences {
                if inner.isEmpty { rows.append(["", indent + "  " + sequence + ": identity", layer.inputShape.description, "0", "0"] + time(nil)) }
                for (j, l) in inner.enumerated() { add(l, "", indent + "  " + sequence + ".\(j) ") }
            }
            rows.append(["", indent + "]", "", "", ""] + time(nil))
        }
        for (i, layer) in layers.enumerated() { add(layer, String(i), "") }
        var widths = [Int](repeating: 0, count: columns)
        for r in rows { for (j, cell) in r.enumerated() { widths[j] = max(widths[j], cell.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { j, cell in
                let pad = String(repeating: " ", count: widths[j] - cell.count)
                return j >= 3 ? pad + cell : cell + pad
            }.joined(separator: "  ")
        }
        let rule = String(repeating: "-", count: widths.reduce(0, +) + 2 * (columns - 1))
        var out = [line(rows[0]), rule]
        out += rows.dropFirst().map(line)
        out.append(rule)
        out.append("parameters: \(grouped(parameterCount))   forward FLOPs per image: \(grouped(flops))   classes: \(numClasses)")
        if times != nil { out.append("forward: \(milliseconds(total)) ms per prediction (the layers' sum)") }
        return out.joined(separator: "\n")
    }
}

/// Seconds as milliseconds with three decimals: 0.0012345 -> "1.235".
func milliseconds(_ seconds: Double) -> String {
    let us = Int((seconds * 1e6).rounded())
    let frac = String(us % 1000)
    return String(us / 1000) + "." + String(repeating: "0", count: 3 - frac.count) + frac
}

/// 421642 -> "421,642"
func grouped(_ n: Int) -> String {
    let digits = Array(String(n.magnitude))
    var out = ""
    for (i, d) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(d)
    }
    return (n < 0 ? "-" : "") + out
}
