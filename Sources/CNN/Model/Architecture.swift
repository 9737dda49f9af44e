/// The architecture language: one short text describes a sequential network.
///
///     input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2)
///     flatten dense(128) relu dense(10)
///
/// Layers are separated by spaces or new lines, `#` starts a comment, arguments are positional or
/// `key=value`, and a size that may be rectangular is written `3` or `3x5` (height x width).
/// The grammar, with defaults:
///
///     input(C,H,W)                       first, exactly once
///     conv(OUT,K, stride=1, pad=0, bias=true, groups=1)   groups=C: depthwise
///     maxpool(K, stride=K, pad=0, ceil=false)   globalavgpool
///     avgpool(K, stride=K, pad=0, count_include_pad=true)
///                                        pad <= K/2; ceil: the output size rounds up (as PyTorch);
///                                        count_include_pad=false: padding not counted (as PyTorch)
///     flatten   dense(OUT, bias=true)
///     relu   leakyrelu(alpha=0.01)   sigmoid   tanh
///     relu6   hardsigmoid   hardswish   silu (or swish)   gelu
///     dropout(P)                         0 <= P < 1
///     batchnorm(eps=1e-5, momentum=0.1)
///     se(S, act=relu, gate=sigmoid)      squeeze-and-excitation through S channels
///     residual[BODY]  residual[BODY | SHORTCUT]   body(x) + x, or body(x) + shortcut(x)
///     concat[A | B | ...]                the branches side by side along channels
///     repeat(N)[LAYERS]                  the layers N times (written out in the canonical text)
public enum LayerKind: Equatable, Sendable {
    case conv(out: Int, kernel: Pair, stride: Pair, pad: Pair, bias: Bool, groups: Int = 1)
    /// Padding never wins a maximum (PyTorch's and ONNX's -infinity). `ceil`: the output size
    /// rounds up, a last window that starts inside the input (or its leading padding) overhanging
    /// its end (PyTorch's ceil_mode, ONNX's ceil_mode 1).
    case maxpool(kernel: Pair, stride: Pair, pad: Pair = Pair(0, 0), ceil: Bool = false)
    /// `countPad`: padding counts as zeros, a window's sum is divided by K·K wherever it lies
    /// (PyTorch's default count_include_pad=True, ONNX's count_include_pad 1); otherwise by the
    /// inputs inside the window alone (count_include_pad=False; ONNX's default 0). Always true
    /// without padding, where the two agree.
    case avgpool(kernel: Pair, stride: Pair, pad: Pair = Pair(0, 0), countPad: Bool = true)
    case globalAvgPool
    /// Zeros around each plane, any amount on each side (PyTorch's ZeroPad2d, ONNX's Pad): the
    /// asymmetric padding of networks ported from TensorFlow ("same" with stride 2).
    case zeroPad(Padding)
    case flatten
    case dense(out: Int, bias: Bool)
    case activation(ActivationKind)
    case dropout(p: Float)
    case batchnorm(eps: Float, momentum: Float)
    /// Squeeze-and-excitation: `squeeze` hidden channels, `act` after the first 1×1 convolution,
    /// `gate` (sigmoid or hardsigmoid) after the second.
    case squeezeExcite(squeeze: Int, act: ActivationKind, gate: ActivationKind)
    /// body(x) + shortcut(x), or body(x) + x without a shortcut.
    case residual(body: [LayerSpec], shortcut: [LayerSpec]?)
    /// The branches' outputs side by side along the channels (an empty branch is x itself).
    case concat(branches: [[LayerSpec]])

    /// Average pooling as the parser and the ONNX importer write it: `countPad` true without
    /// padding, where every window lies inside the input and the two agree, so that one pooling
    /// has one value (and one text).
    static func averagePool(kernel: Pair, stride: Pair, pad: Pair, countPad: Bool) -> LayerKind {
        .avgpool(kernel: kernel, stride: stride, pad: pad, countPad: countPad || pad == Pair(0, 0))
    }
}

/// Zeros on each side of an image, in rows (top, bottom) and columns (left, right).
public struct Padding: Equatable, Sendable {
    public var top: Int, left: Int, bottom: Int, right: Int
    public init(top: Int, left: Int, bottom: Int, right: Int) {
        self.top = top; self.left = left; self.bottom = bottom; self.right = right
    }
}

/// A height × width pair such as a kernel size, written `3` or `3x5`.
public struct Pair: Equatable, Sendable, CustomStringConvertible {
    public var h: Int
    public var w: Int
    public init(_ h: Int, _ w: Int) { self.h = h; self.w = w }
    public var description: String { h == w ? "\(h)" : "\(h)x\(w)" }
}

/// One layer of an architecture, with the canonical text that describes it.
public struct LayerSpec: Equatable, Sendable {
    public var kind: LayerKind
    public var text: String { LayerSpec.render(kind) }

    /// Layers that hold no others: 1, or those inside a block.
    public var leafCount: Int {
        switch kind {
        case let .residual(body, shortcut): return (body + (shortcut ?? [])).reduce(0) { $0 + $1.leafCount }
        case let .concat(branches): return branches.joined().reduce(0) { $0 + $1.leafCount }
        default: return 1
        }
    }

    public static func render(_ kind: LayerKind) -> String {
        switch kind {
        case let .conv(out, k, s, p, b, groups):
            var t = "conv(\(out),\(k)"
            if s != Pair(1, 1) { t += ",stride=\(s)" }
            if p != Pair(0, 0) { t += ",pad=\(p)" }
            if !b { t += ",bias=false" }
            if groups != 1 { t += ",groups=\(groups)" }
            return t + ")"
        case let .maxpool(k, s, p, ceil):
            return "maxpool(\(k)" + (s == k ? "" : ",stride=\(s)") + (p == Pair(0, 0) ? "" : ",pad=\(p)") + (ceil ? ",ceil=true" : "") + ")"
        case let .avgpool(k, s, p, countPad):
            return "avgpool(\(k)" + (s == k ? "" : ",stride=\(s)") + (p == Pair(0, 0) ? "" : ",pad=\(p)")
                + (countPad ? "" : ",count_include_pad=false") + ")"
        case .globalAvgPool: return "globalavgpool"
        case let .zeroPad(p):
            let sides = [p.left, p.right, p.top, p.bottom]
            return "zeropad(" + (Set(sides).count == 1 ? "\(p.top)" : sides.map(String.init).joined(separator: ",")) + ")"
        case .flatten: return "flatten"
        case let .dense(out, b): return "dense(\(out)" + (b ? "" : ",bias=false") + ")"
        case .activation(.relu): return "relu"
        case .activation(.leakyRelu(let a)): return a == 0.01 ? "leakyrelu" : "leakyrelu(alpha=\(a))"
        case .activation(.sigmoid): return "sigmoid"
        case .activation(.tanh): return "tanh"
        case .activation(.relu6): return "relu6"
        case .activation(.hardSigmoid): return "hardsigmoid"
        case .activation(.hardSwish): return "hardswish"
        case .activation(.silu): return "silu"
        case .activation(.gelu): return "gelu"
        case .dropout(let p): return "dropout(\(p))"
        case let .batchnorm(eps, m):
            var args: [String] = []
            if eps != 1e-5 { args.append("eps=\(eps)") }
            if m != 0.1 { args.append("momentum=\(m)") }
            return args.isEmpty ? "batchnorm" : "batchnorm(" + args.joined(separator: ",") + ")"
        case let .residual(body, shortcut):
            return "residual[" + ([body] + (shortcut.map { [$0] } ?? [])).map { $0.map(\.text).joined(separator: " ") }.joined(separator: " | ") + "]"
        case let .concat(branches):
            return "concat[" + branches.map { $0.map(\.text).joined(separator: " ") }.joined(separator: " | ") + "]"
        case let .squeezeExcite(squeeze, act, gate):
            var t = "se(\(squeeze)"
            if act != .relu { t += ",act=" + render(.activation(act)) }
            if gate != .sigmoid { t += ",gate=" + render(.activation(gate)) }
            return t + ")"
        }
    }
}

/// A parsed network description: the input shape and the layers in order.
public struct Architecture: Equatable, Sendable {
    public var input: Shape
    public var layers: [LayerSpec]

    /// The canonical text: parsing it gives back the same architecture.
    public var text: String {
        (["input(\(input.c),\(input.h),\(input.w))"] + layers.map(\.text)).joined(separator: " ")
    }

    /// Limits that keep a hostile text from asking for absurd allocations.
    public static let maxDimension = 1 << 16
    public static let maxLayers = 1024

    public init(input: Shape, layers: [LayerSpec]) {
        self.input = input
        self.layers = layers
    }

    /// Parses an architecture text. Errors name the token, its line and column, and what was expected.
    public init(parsing text: String) throws {
        var parser = ArchitectureParser(text)
        self = try parser.parse()
    }
}
