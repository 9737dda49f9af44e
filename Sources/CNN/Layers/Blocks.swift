/// A layer made of sequences of layers (`residual[...]`, `concat[...]`). Its sequences' layers are
/// named as PyTorch modules holding `nn.Sequential`s name them: `body.0.weight`, `shortcut.1.bias`,
/// `branches.2.0.weight` (see `Model.namedLayers`).
protocol Block: Layer {
    /// The sequences, each with its module path ("body", "branches.1").
    var sequences: [(name: String, layers: [Layer])] { get }
    /// Times the sequences' layers while the model measures them (`Model.layerTimes`).
    var clock: LayerClock? { get set }
    /// Set by the memory plan when the block runs forward again in backward (see MemoryPlanner).
    var recomputation: Recomputation? { get set }
}

/// A block that keeps nothing of its layers from forward to backward: forward notes its input
/// (kept by the layer that wrote it, see MemoryPlanner) and the generator, and backward first runs
/// the sequences forward again from them. The same input, generator and code give the same values
/// bit for bit (dropout draws the same masks); batch norm does not update its running statistics
/// a second time.
final class Recomputation {
    private let sequences: [[Layer]]
    /// The batch norms inside, at any depth.
    private let norms: [BatchNorm]
    private var input: FloatBuffer?
    private var rng = Random(seed: 0)

    init(_ sequences: [[Layer]]) {
        self.sequences = sequences
        func norms(_ layers: [Layer]) -> [BatchNorm] {
            layers.flatMap { layer -> [BatchNorm] in
                if let norm = layer as? BatchNorm { return [norm] }
                return (layer as? Block)?.sequences.flatMap { norms($0.layers) } ?? []
            }
        }
        self.norms = sequences.flatMap(norms)
    }

    /// Called by the block's forward.
    func note(_ x: FloatBuffer, training: Bool, rng: Random) {
        input = training ? x : nil
        self.rng = rng
    }

    /// Runs the sequences forward again on the noted input, before their backward.
    func rerun(batch: Int) {
        guard let x = input else { return }
        for norm in norms { norm.updatesRunningStatistics = false }
        var r = rng
        for layers in sequences { _ = runForward(layers, x, batch: batch, training: true, rng: &r, clock: nil) }
        for norm in norms { norm.updatesRunningStatistics = true }
    }
}

extension Block {
    public var parameters: [Parameter] { sequences.flatMap { $0.layers.flatMap(\.parameters) } }
}

/// Runs a sequence forward from x (x itself for an empty one).
@inline(__always)
func runForward(_ layers: [Layer], _ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random,
                clock: LayerClock?) -> FloatBuffer {
    var h = x
    for layer in layers {
        if let clock {
            h = clock.time(layer) { layer.forward(h, batch: batch, training: training, rng: &rng) }
        } else {
            h = layer.forward(h, batch: batch, training: training, rng: &rng)
        }
    }
    return h
}

/// Runs a sequence backward: the gradient with respect to its input (dy itself for an empty one),
/// or nil when `needInputGradient` is false (the parameters' gradients are summed either way).
@inline(__always)
func runBackward(_ layers: [Layer], _ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
    var g = dy
    var i = layers.count - 1
    while i >= 0 {
        guard let dx = layers[i].backward(g, batch: batch, needInputGradient: i > 0 || needInputGradient) else { return nil }
        g = dx
        i -= 1
    }
    return needInputGradient ? g : nil
}

/// `residual[BODY]`: y = body(x) + x; `residual[BODY | SHORTCUT]`: y = body(x) + shortcut(x) (a
/// shortcut such as a strided 1×1 convolution and batch norm, for a body that changes the shape).
/// Backward sends dy through both and adds what comes back. An activation after the sum is the
/// next layer (`residual[...] relu`), as in torchvision's ResNets.
public final class Residual: Block, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let body: [Layer]
    let shortcut: [Layer]
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    /// Set by the model when the body ends with a convolution (or one and the batch norm folded
    /// into it): at inference the shortcut runs first and that convolution writes the sum, with
    /// `sumActivation` (the activation after the block, which then passes its input through)
    /// applied, into the block's output: no separate passes for the sum and the activation.
    var sumsInLastConvolution: Conv2D?
    var sumActivation = Clamp.none
    var clock: LayerClock?
    var recomputation: Recomputation?
    /// Set by the memory plan when backward may return the sum in the body's input gradient (its
    /// sequence's buffer, used once): no buffer of the input's size of its own beside dy and it.
    /// Not when the layer before is a block (or passes through to one), whose sequences would take
    /// turns on the buffer that holds their dy.
    var sumsIntoBody = false

    /// Its sequences' first layers may read the input: see MemoryPlanner.readsInput.
    var backwardReads: BackwardReads { .nothing }

    init(spec: LayerSpec, input: Shape, body: [Layer], shortcut: [Layer]) {
        self.spec = spec
        inputShape = input
        outputShape = body.last?.outputShape ?? input
        self.body = body
        self.shortcut = shortcut
    }

    var sequences: [(name: String, layers: [Layer])] {
        shortcut.isEmpty ? [("body", body)] : [("body", body), ("shortcut", shortcut)]
    }

    public var flops: Int { (body + shortcut).reduce(outputShape.count) { $0 + $1.flops } }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let count = batch * outputShape.count
        if !training, let conv = sumsInLastConvolution {
            // y is neither x nor the shortcut's output (another sequence's buffers), as the
            // convolution's write needs.
            let b = runForward(shortcut, x, batch: batch, training: false, rng: &rng, clock: clock)
            let y = buffers.output(count, input: x, training: false)
            conv.residualSum = ResidualSum(output: y, addend: UnsafePointer(b.pointer), clamp: sumActivation)
            let a = runForward(body, x, batch: batch, training: false, rng: &rng, clock: clock)
            conv.residualSum = nil
            if a === y { return y }
            // (Not reached: the layers after the convolution pass its output through.)
            add(a.pointer, b.pointer, into: y.pointer, count: count)
            if sumActivation != .none { for i in 0..<count { y.pointer[i] = sumActivation.apply(y.pointer[i]) } }
            return y
        }
        recomputation?.note(x, training: training, rng: rng)
        let a = runForward(body, x, batch: batch, training: training, rng: &rng, clock: clock)
        let b = runForward(shortcut, x, batch: batch, training: training, rng: &rng, clock: clock)
        let y = buffers.output(count, input: x, training: training)
        add(a.pointer, b.pointer, into: y.pointer, count: count)
        return y
    }

    /// The convolution that can write the sum: the body's last layer, or the one before a batch
    /// norm folded into it, applying no activation or pooling of its own.
    var lastConvolution: Conv2D? {
        var layers = body[...]
        if let norm = layers.last as? BatchNorm, norm.foldedIntoPrevious, norm.activation == nil { layers = layers.dropLast() }
        guard let conv = layers.last as? Conv2D, conv.pooling == nil, conv.fusedActivation == .none,
              conv.inferenceActivation == .none else { return nil }
        return conv
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        recomputation?.rerun(batch: batch)
        let a = runBackward(body, dy, batch: batch, needInputGradient: needInputGradient)
        // A shortcut that starts with a strided convolution (a 1×1 projection) adds its input
        // gradient into the body's: its sequence's pair then holds no buffer of the input's size.
        // Only where the sum may be returned in the body's buffer (`sumsIntoBody`): after a block,
        // that buffer is one the block's sequences take turns on, and a concatenation's first
        // branch wrote over its own dy there (a fuzzing finding: the second branch's gradients
        // were wrong, and differed from step to step).
        let first = shortcut.first as? Conv2D
        if sumsIntoBody, let a, a !== dy, let first, first.canAddInputGradient { first.addsInputGradient = a }
        let b = runBackward(shortcut, dy, batch: batch, needInputGradient: needInputGradient)
        first?.addsInputGradient = nil
        guard let a, let b else { return nil }
        if b === a { return a }
        let count = batch * inputShape.count
        let dx = sumsIntoBody && a !== dy ? a : buffers.inputGradient(count, dy: dy)
        add(a.pointer, b.pointer, into: dx.pointer, count: count)
        return dx
    }
}

/// What a convolution that ends a residual block's body writes at inference (see
/// `Residual.sumsInLastConvolution`): clamp(conv(x) + addend) into `output`.
struct ResidualSum {
    var output: FloatBuffer
    var addend: UnsafePointer<Float>
    var clamp: Clamp
}

/// z = a + b elementwise, on the pool for large tensors (the same sums in any chunking).
func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, into z: UnsafeMutablePointer<Float>, count: Int) {
    parallelChunks(count, chunk: 1 << 15) { lo, hi in
        for i in lo..<hi { z[i] = a[i] + b[i] }
    }
}

/// `concat[A | B | ...]`: every branch runs on x and their outputs are stacked along the channels
/// (an empty branch passes x itself), as `torch.cat(dim=1)` of an `nn.ModuleList`'s outputs.
public final class Concat: Block, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    let branches: [[Layer]]
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    private var slices: [Workspace]   // each branch's part of dy, contiguous
    /// Channels of each branch's output (stored: made per call, it was an allocation a step).
    private let channels: [Int]
    var clock: LayerClock?
    var recomputation: Recomputation?

    var backwardReads: BackwardReads { .nothing }

    init(spec: LayerSpec, input: Shape, branches: [[Layer]]) {
        self.spec = spec
        inputShape = input
        self.branches = branches
        let shapes = branches.map { $0.last?.outputShape ?? input }
        channels = shapes.map(\.c)
        outputShape = Shape(c: shapes.reduce(0) { $0 + $1.c }, h: shapes[0].h, w: shapes[0].w)
        slices = branches.map { _ in Workspace() }
    }

    var sequences: [(name: String, layers: [Layer])] {
        branches.enumerated().map { ("branches.\($0.offset)", $0.element) }
    }

    public var flops: Int { branches.joined().reduce(0) { $0 + $1.flops } }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let hw = outputShape.h * outputShape.w, total = outputShape.c
        recomputation?.note(x, training: training, rng: rng)
        let y = buffers.output(batch * outputShape.count, input: x, training: training), yp = y.pointer
        var offset = 0
        for (branch, c) in zip(branches, channels) {
            let out = runForward(branch, x, batch: batch, training: training, rng: &rng, clock: clock).pointer
            let first = offset
            parallelChunks(batch, chunk: 1) { lo, hi in
                for n in lo..<hi { (yp + (n * total + first) * hw).update(from: out + n * c * hw, count: c * hw) }
            }
            offset += c
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        recomputation?.rerun(batch: batch)
        let hw = outputShape.h * outputShape.w, total = outputShape.c
        let dyp = dy.pointer
        let count = batch * inputShape.count
        var dx: FloatBuffer? = nil
        var offset = 0
        for (b, (branch, c)) in zip(branches, channels).enumerated() {
            let slice = slices[b].reserve(batch * c * hw), sp = slice.pointer
            let first = offset
            parallelChunks(batch, chunk: 1) { lo, hi in
                for n in lo..<hi { (sp + n * c * hw).update(from: dyp + (n * total + first) * hw, count: c * hw) }
            }
            offset += c
            guard let g = runBackward(branch, slice, batch: batch, needInputGradient: needInputGradient) else { continue }
            if let sum = dx {
                add(sum.pointer, g.pointer, into: sum.pointer, count: count)
            } else {
                let sum = buffers.inputGradient(count, dy: dy)
                sum.pointer.update(from: g.pointer, count: count)
                dx = sum
            }
        }
        return dx
    }
}
