/// A sequential network built from an `Architecture`, with what a trained classifier also needs:
/// class names and the input normalization.
public final class Model {
    public let architecture: Architecture
    public let layers: [Layer]
    /// One name per output class; "0", "1", ... until a dataset names them.
    public var classNames: [String]
    /// Per input channel: pixels scaled to [0, 1] are normalized as (x - mean) / std.
    public var mean: [Float]
    public var std: [Float]
    /// How images (JPEG files) are brought to the input size; set from the training folder.
    public var imageFit = ImageFit.crop

    /// Limits on what one model may ask for: values per sample in any layer, parameters, and the
    /// working memory per sample (activations, gradients, im2col matrices), in floats.
    public static let maxActivationsPerSample = 1 << 26
    public static let maxParameters = 1 << 28
    /// (The working memory is a bound that sums every layer's scratch as if none were shared:
    /// DenseNet-121 with its batch norms at 3×224×224 counts more than 2^28 floats, though its
    /// memory plan holds far less; `maxBatch` and the memory limit bound what is taken.)
    public static let maxWorkspacePerSample = 1 << 30
    /// The most floats of working memory one batch may plan (16 GiB).
    public static let maxWorkspacePerBatch = 1 << 32

    /// Floats of working memory per sample, for training (an upper bound).
    public let workspacePerSample: Int
    /// `predict`'s normalized input, kept between calls like the layers' buffers.
    var predictionInput = Workspace()
    /// Values per sample of the network's largest activation (its input, or a layer's output).
    private(set) lazy var largestActivation: Int = namedLayers.reduce(inputShape.count) { max($0, $1.layer.outputShape.count) }

    /// Builds the network and initializes it from `seed` (He for layers followed by ReLU, Glorot
    /// otherwise; biases zero).
    public convenience init(architecture: Architecture, seed: UInt64) throws {
        try self.init(architecture: architecture)
        var rng = Random(seed: seed)
        initialize(rng: &rng)
    }

    /// Builds the network with zero weights (for loading).
    public convenience init(architecture: Architecture) throws {
        try self.init(architecture: architecture, fusing: true)
    }

    /// `fusing: false` keeps every layer's own forward and backward (the tests' reference for the
    /// fused ones). The layers are built from shapes alone; their parameters are allocated only
    /// after the whole network's sizes have been checked against the limits (`allocate: false`
    /// leaves that to `allocateParameters()`, for a loader that first checks its file).
    /// `planning: false` gives every layer buffers of its own (the tests' reference for the plan).
    init(architecture: Architecture, fusing: Bool, planning: Bool? = nil, allocate: Bool = true) throws {
        self.architecture = architecture
        var layers: [Layer] = []
        var shape = architecture.input
        let (inputCount, inputOverflow) = shape.c.multipliedReportingOverflow(by: shape.h * shape.w)
        guard !inputOverflow, inputCount <= Model.maxActivationsPerSample else {
            throw CNNError(.invalidArgument, "architecture: input \(shape) has more than \(Model.maxActivationsPerSample) values")
        }
        var totalParameters = 0
        var workspace = 2 * inputCount
        for (index, spec) in architecture.layers.enumerated() {
            let layer = try Model.makeLayer(spec, input: shape, index: index)
            shape = layer.outputShape
            try Model.account(layer, index: index, workspace: &workspace)
            totalParameters += layer.parameters.reduce(0) { $0 + $1.count }
            guard totalParameters <= Model.maxParameters else {
                throw CNNError(.invalidArgument, "architecture: more than \(Model.maxParameters) parameters at layer \(index) (\(spec.text))")
            }
            layers.append(layer)
        }
        guard shape.flat else {
            throw CNNError(.invalidArgument, "architecture: the network must end with a vector of class scores (dense, or flatten), but its output is \(shape)")
        }
        if fusing { Model.fuse(layers) }
        self.layers = layers
        plansMemory = planning ?? fusing
        workspacePerSample = workspace
        parameterFloats = layers.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.allocationCount } }
        classNames = (0..<shape.c).map { String($0) }
        mean = [Float](repeating: 0, count: architecture.input.c)
        std = [Float](repeating: 1, count: architecture.input.c)
        planMemory()
        if allocate { try allocateParameters() }
    }

    /// Adds a layer's working memory per sample (and its sequences' layers', for a block) to
    /// `workspace`, checking every size against the limits before anything is allocated.
    private static func account(_ layer: Layer, index: Int, workspace: inout Int) throws {
        let spec = layer.spec
        if let block = layer as? Block {
            for (_, sequence) in block.sequences { for inner in sequence { try account(inner, index: index, workspace: &workspace) } }
        }
        do {
            let shape = layer.outputShape
            let (c1, o1) = shape.c.multipliedReportingOverflow(by: shape.h)
            let (c2, o2) = c1.multipliedReportingOverflow(by: shape.w)
            guard !o1, !o2, c2 <= Model.maxActivationsPerSample, c2 > 0 else {
                throw CNNError(.invalidArgument, "architecture: layer \(index) (\(spec.text)) outputs \(shape), more than \(Model.maxActivationsPerSample) values per sample")
            }
            // Output and input gradient, plus a conv layer's im2col matrix and transposed gradient.
            workspace += 3 * c2
            if let conv = layer as? Conv2D {
                let (col, o3) = conv.geometry.colRows.multipliedReportingOverflow(by: conv.geometry.colCols)
                guard !o3, col <= Model.maxWorkspacePerSample else {
                    throw CNNError(.invalidArgument, "architecture: layer \(index) (\(spec.text)) needs an im2col matrix of more than \(Model.maxWorkspacePerSample) values per sample")
                }
                workspace += col + conv.geometry.paddedCount
                // Winograd's per-task memory (forward, or the input gradient's convolution of dy),
                // counted per sample since there are at most max(batch, 2) tasks.
                let g = conv.geometry
                if g.winograd {
                    // And the weight gradient's (at most two tasks: counted per sample, as the rest).
                    let oc = conv.outputShape.c
                    workspace += g.winogradTaskCount(outChannels: oc) + WinogradGradientSlot(g, outChannels: oc).count
                }
                if let back = g.inputGradientWinograd(outChannels: conv.outputShape.c) {
                    workspace += back.winogradTaskCount(outChannels: g.c)
                }
            }
            if let conv = layer as? GroupedConv2D, conv.runsChannelsLast {
                // The samples' input and output pixels channels last (backward), and a bordered
                // block of channels per task (forward; DepthwiseChannelsLast.swift).
                workspace += conv.geometry.channelsLastCount + conv.geometry.channelsLastBlockCount
            } else if let conv = layer as? GroupedConv2D, let plan = conv.depthwisePlan {
                // Each task's bordered input (or dy) plane, at most max(2, batch) of them,
                // and the weight gradient's padded dy plane.
                workspace += max(plan.scratchCount + plan.paddedOutputCount, conv.depthwiseGradientPlan?.scratchCount ?? 0)
            }
            guard workspace <= Model.maxWorkspacePerSample else {
                throw CNNError(.invalidArgument, "architecture: the network needs more than \(Model.maxWorkspacePerSample) floats of working memory per sample at layer \(index) (\(spec.text))")
            }
        }
    }

    /// Fuses neighbours of one sequence, and of every sequence inside its blocks.
    private static func fuse(_ layers: [Layer]) {
        for layer in layers {
            if let block = layer as? Block { for (_, sequence) in block.sequences { fuse(sequence) } }
        }
        // A ReLU or ReLU6 right after a convolution is applied in the convolution's output write
        // (an imported network's folded batch norms leave them there); a ReLU right before max
        // pooling has its backward mask applied by the pooling's backward.
        for (layer, next) in zip(layers, layers.dropFirst()) {
            if layer is Conv2D || layer is GroupedConv2D, let act = next as? Activation, Clamp(act.kind) != .none {
                let clamp = Clamp(act.kind)
                (layer as? Conv2D)?.fusedActivation = clamp
                (layer as? GroupedConv2D)?.fusedActivation = clamp
                act.fusedIntoPrevious = true
            }
            if let act = layer as? Activation, act.kind == .relu, let pool = next as? MaxPool2D {
                act.maskedByNext = true
                pool.masksNonPositive = true
            }
        }
        // A ReLU or ReLU6 right after a batch norm is applied by the norm (forward and mask).
        for (layer, next) in zip(layers, layers.dropFirst()) {
            if let norm = layer as? BatchNorm, let act = next as? Activation, Clamp(act.kind) != .none {
                norm.activation = act.kind
                act.appliedByNorm = true
            }
        }
        // Batch norm right after a convolution, and a ReLU or ReLU6 after it, are folded into the
        // convolution at inference (see NormFolding); so is a SiLU after either.
        for (i, layer) in layers.enumerated() where i + 1 < layers.count && (layer is Conv2D || layer is GroupedConv2D) {
            let norm = layers[i + 1] as? BatchNorm
            let after = layers.dropFirst(i + (norm == nil ? 1 : 2)).first as? Activation
            let silu = after?.kind == .silu && norm?.activation == nil ? after : nil
            silu?.fusedAtInference = true
            (layer as? Conv2D)?.inferenceActivation = silu == nil ? .none : .silu
            (layer as? GroupedConv2D)?.inferenceActivation = silu == nil ? .none : .silu
            guard let norm else { continue }
            let folding = NormFolding(norm: norm, then: silu?.kind)
            (layer as? Conv2D)?.folding = folding
            (layer as? GroupedConv2D)?.folding = folding
            norm.foldedIntoPrevious = true
        }
        // 2×2 max pooling right after a convolution (and its fused ReLU) is done by the
        // convolution as it writes its output: the full-size output never goes to memory. (Not
        // after a ReLU6: the pooling's backward could not apply its mask at 6; nor after Winograd
        // on an odd output size, whose tiles are not the pooling's windows.)
        for (i, layer) in layers.enumerated() {
            guard let conv = layer as? Conv2D, conv.fusedActivation != .relu6 else { continue }
            let g = conv.geometry
            guard !g.winograd || g.oh % 2 == 0 && g.ow % 2 == 0 else { continue }
            let next = i + (conv.fusedActivation == .relu ? 2 : 1)
            if next < layers.count, let pool = layers[next] as? MaxPool2D, pool.isTwoByTwo {
                conv.pooling = pool
                pool.fusedIntoConv = true
            }
        }
        // A residual block whose body ends with a convolution (and a batch norm folded into it)
        // has that convolution write the sum at inference, with the ReLU, ReLU6 or SiLU after
        // the block applied (which then passes its input through at inference, as a SiLU after
        // a convolution does).
        for (i, layer) in layers.enumerated() {
            guard let block = layer as? Residual, let conv = block.lastConvolution else { continue }
            block.sumsInLastConvolution = conv
            guard i + 1 < layers.count, let act = layers[i + 1] as? Activation, Clamp.atInference(act.kind) != .none else { continue }
            block.sumActivation = Clamp.atInference(act.kind)
            act.fusedAtInference = true
        }
        // A squeeze-and-excitation right before a 1×1 convolution (stride 1, no padding, no
        // pooling fused): at inference its gates scale the convolution's input as it is packed
        // (see `Conv2D.gatedBy`). Every inference path of such a convolution multiplies its input
        // as it is.
        for (layer, next) in zip(layers, layers.dropFirst()) {
            guard let se = layer as? SqueezeExcite, let conv = next as? Conv2D, conv.pooling == nil else { continue }
            let g = conv.geometry
            guard g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 else { continue }
            se.scalesNext = true
            conv.gatedBy = se
        }
    }

    /// Whether the layers' buffers are planned (see MemoryPlan), or each layer's own.
    private var plansMemory = false
    /// Training: the top-level blocks keep nothing of their layers until backward, which runs them
    /// forward again (gradient checkpointing, see MemoryPlanner): the same results with less memory
    /// held, for a second forward of the blocks. Set by training from `TrainingSettings.recomputeBlocks`.
    public internal(set) var recomputesBlocks = false {
        didSet { if recomputesBlocks != oldValue { planMemory() } }
    }

    private func planMemory() {
        guard plansMemory else { return }
        var planner = MemoryPlanner(recomputingBlocks: recomputesBlocks)
        planner.plan(layers)
        memorySlots = Array(planner.pairs.values)
        sharedSlots = Array(planner.sharedSlots.values)
        inputReaders = planner.inputReaders
    }

    /// The buffers the layers' sequences take turns on (see MemoryPlan).
    private var memorySlots: [SlotPair] = []
    /// The buffers recomputed blocks keep their layers' outputs in by turns (see MemoryPlan).
    private var sharedSlots: [SharedSlot] = []
    /// The convolutions that read the network's input itself (see `forward`).
    private var inputReaders: [Conv2D] = []

    /// Floats of working memory held now: the layers' own outputs and input gradients and the
    /// shared buffers (not the convolutions' own scratch and kept copies).
    var bufferFloats: Int {
        let shared = memorySlots.reduce(0) { $0 + $1.floats } + sharedSlots.reduce(0) { $0 + $1.floats }
        return (namedLayers.map(\.layer) + Model.blocks(layers)).reduce(shared) {
            $0 + (($1 as? PlannedLayer)?.buffers.floats ?? 0)
        }
    }

    /// Times every layer's forward with `clock` (nil: no timing), blocks' inner layers too.
    func setClock(_ clock: LayerClock?) {
        self.clock = clock
        for case let block as Block in Model.blocks(layers) { block.clock = clock }
    }

    private static func blocks(_ layers: [Layer]) -> [Layer] {
        layers.flatMap { layer -> [Layer] in
            guard let block = layer as? Block else { return [] }
            return [layer] + block.sequences.flatMap { blocks($0.layers) }
        }
    }

    /// Floats the parameters take (values, and gradients of the trained ones).
    public let parameterFloats: Int

    /// Allocates every parameter, after checking their total against the memory limit.
    func allocateParameters() throws {
        try Memory.check(parameterFloats * 4, for: "the model's parameters and their gradients (\(parameterCount) trainable values)")
        try Memory.check((parameterFloats + workspacePerSample) * 4, for: "the model with the working memory of one sample")
        for (name, p) in namedParameters { try p.allocate(fullName: name) }
        guard gradientBlock.count == 0 else { return }
        // One block, in the order backward completes them (the top-level layers from the last,
        // each one's tensors from the last), each tensor on a 64-byte boundary: distributed
        // training sums consecutive ranges of it across processes where they lie, with no copies.
        let total = gradientOrder.reduce(0) { $0 + Model.gradientStride($1.count) }
        useGradientBlock(try FloatBuffer(count: total, for: "the gradients of the model's \(parameterCount) trainable values"))
    }

    private var gradientOrder: [Parameter] { layers.reversed().flatMap { $0.parameters.reversed() }.filter(\.trainable) }

    /// Moves the gradients into `block` (as large as `gradientBlock`, or the first one): their
    /// values are copied over and every trained parameter's gradient becomes its part of it.
    /// Distributed training puts them where the other ranks can read them (`SharedGradients`).
    func useGradientBlock(_ block: FloatBuffer) {
        block.copy(from: gradientBlock)
        gradientBlock = block
        var offset = 0
        for p in gradientOrder {
            p.attachGradient(FloatBuffer(partOf: block, offset: offset, count: p.count))
            offset += Model.gradientStride(p.count)
        }
    }

    /// The floats a tensor's gradient takes in `gradientBlock` (its count, rounded up to 16).
    static func gradientStride(_ count: Int) -> Int { (count + 15) / 16 * 16 }

    /// Every trained parameter's gradient (see `allocateParameters`); the gaps between them stay 0.
    private(set) var gradientBlock = FloatBuffer(count: 0)

    /// An independent copy: same architecture, weights, statistics, names and normalization.
    public func copy() throws -> Model {
        let m = try Model(architecture: architecture)
        try m.assign(from: self)
        return m
    }

    /// Takes another model's weights, statistics, names and normalization (same architecture).
    public func assign(from other: Model) throws {
        guard other.architecture == architecture else {
            throw CNNError(.shapeMismatch, "the architecture \(other.architecture.text) is not this model's \(architecture.text)")
        }
        classNames = other.classNames
        mean = other.mean
        std = other.std
        imageFit = other.imageFit
        takeTensors(from: other)
    }

    /// Copies another model's tensors, and batch norm's counters, into this one's, in model-file
    /// order, except the parameters in `skipping` (the caller has checked that the layers match).
    private func takeTensors(from other: Model, skipping: Set<ObjectIdentifier> = []) {
        for (a, b) in zip(other.namedParameters, namedParameters) where !skipping.contains(ObjectIdentifier(b.parameter)) {
            b.parameter.value.copy(from: a.parameter.value)
            b.parameter.version += 1
        }
        for (a, b) in zip(other.namedLayers, namedLayers) {
            if let x = a.layer as? BatchNorm, let y = b.layer as? BatchNorm { y.batchesTracked = x.batchesTracked }
        }
    }

    public convenience init(architecture text: String, seed: UInt64) throws {
        try self.init(architecture: Architecture(parsing: text), seed: seed)
    }

    public var inputShape: Shape { architecture.input }

    /// The largest batch whose working memory stays within `maxWorkspacePerBatch` and, with the
    /// parameters, within the memory limit.
    public var maxBatch: Int {
        let floats = min(Model.maxWorkspacePerBatch, Memory.limit / 4 - parameterFloats)
        return max(1, floats / max(workspacePerSample, 1))
    }
    public var numClasses: Int { layers.last?.outputShape.c ?? 0 }

    /// The tensors of the model file, named as in PyTorch's `nn.Sequential` state dict.
    public var namedParameters: [(name: String, parameter: Parameter)] {
        namedLayers.flatMap { prefix, layer in layer.parameters.map { (prefix + $0.name, $0) } }
    }

    /// The layers that hold no others, in order, each with the prefix of its tensors' names: "3."
    /// at the top, "3.body.0." inside a block (PyTorch's module paths).
    public var namedLayers: [(prefix: String, layer: Layer)] {
        func walk(_ layers: [Layer], _ prefix: String) -> [(prefix: String, layer: Layer)] {
            layers.enumerated().flatMap { i, layer -> [(prefix: String, layer: Layer)] in
                guard let block = layer as? Block else { return [("\(prefix)\(i).", layer)] }
                return block.sequences.flatMap { walk($0.layers, "\(prefix)\(i).\($0.name).") }
            }
        }
        return walk(layers, "")
    }

    /// The number of trainable values (PyTorch's `sum(p.numel() for p in model.parameters())`).
    public var parameterCount: Int {
        namedParameters.reduce(0) { $0 + ($1.parameter.trainable ? $1.parameter.count : 0) }
    }

    /// Forward FLOPs per sample.
    public var flops: Int { layers.reduce(0) { $0 + $1.flops } }

    /// Fine-tuning: the first `frozenLayers` layers of the top sequence are not trained. In training
    /// they run as at inference (batch norm on its running statistics, no dropout) and backward
    /// stops before them: no weight gradients, no input gradients, no updates. Set by training
    /// from `TrainingSettings.freezeUntil`.
    public internal(set) var frozenLayers = 0
    /// The frozen layers' output, which the first trained layer's backward may read: copied out of
    /// the buffers the frozen layers (at inference) take turns on.
    private var frozenOutput = Workspace()
    /// Set while `layerTimes` measures the layers.
    private var clock: LayerClock?

    /// The parameters training updates (those of the layers not frozen).
    var trainedParameters: [(name: String, parameter: Parameter)] {
        let frozen = Set(layers.prefix(frozenLayers).flatMap(\.parameters).map(ObjectIdentifier.init))
        return namedParameters.filter { $0.parameter.trainable && !frozen.contains(ObjectIdentifier($0.parameter)) }
    }

    /// Runs the network on `batch` samples of `x` (B, C, H, W); returns the logits (B, classes).
    /// `inputKept`: in training, the caller leaves x unchanged until `backward` is done (the
    /// training loop's batch), so that a first convolution reads it again instead of keeping a
    /// copy of its own.
    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random,
                        inputKept: Bool = false) -> FloatBuffer {
        for conv in inputReaders { conv.readsKeptInput = training && inputKept }
        var h = x
        for (i, layer) in layers.enumerated() {
            let asTraining = training && i < frozenLayers && i + 2 >= frozenLayers && fusedAcrossFreeze(i)
            // Fusions made at inference only, across the freeze: the last frozen layer, a
            // squeeze-and-excitation whose gates only an inference convolution would apply, runs
            // as in training (gating its output); the first trained one, a SiLU that the frozen
            // convolution before it applied in its write, runs as at inference (passing it through:
            // nothing needs its input gradient).
            let gatesTrained = training && i + 1 == frozenLayers && (layer as? SqueezeExcite)?.scalesNext == true
            let appliedFrozen = training && i == frozenLayers && i > 0 && (layer as? Activation)?.fusedAtInference == true
            let asTrained = training && (i >= frozenLayers || asTraining || gatesTrained) && !appliedFrozen
            if let clock {
                h = clock.time(layer) { layer.forward(h, batch: batch, training: asTrained, rng: &rng) }
            } else {
                h = layer.forward(h, batch: batch, training: asTrained, rng: &rng)
            }
            if training && i + 1 == frozenLayers {
                // What the frozen layers leave: pooled already when a convolution among them pools
                // as it writes for a trained pooling layer.
                let pool = trainedPooling(ofFrozen: i) ?? (i > 0 ? trainedPooling(ofFrozen: i - 1) : nil)
                let count = batch * (pool?.outputShape ?? layer.outputShape).count
                let kept = frozenOutput.reserve(count)
                kept.pointer.update(from: h.pointer, count: count)
                h = kept
            }
        }
        return h
    }

    /// Frozen layer `i` (one of the last two) is a convolution fused with a trained layer: the
    /// batch norm after it, which it applies folded in at inference, or the 2×2 pooling it does as
    /// it writes (see `fuse`). It then runs as in training (the same values): the norm gets its
    /// output unfolded, the pooling its maxima's indices.
    private func fusedAcrossFreeze(_ i: Int) -> Bool {
        if trainedPooling(ofFrozen: i) != nil { return true }
        return i + 1 == frozenLayers && layers[i + 1] is BatchNorm && (layers[i] is Conv2D || layers[i] is GroupedConv2D)
    }

    /// The pooling frozen convolution `i` does as it writes, when that pooling layer trains.
    private func trainedPooling(ofFrozen i: Int) -> MaxPool2D? {
        guard let pool = (layers[i] as? Conv2D)?.pooling, layers[frozenLayers...].contains(where: { $0 === pool }) else { return nil }
        return pool
    }

    /// Backpropagates the gradient of the loss with respect to the logits: the forward, in reverse
    /// (down to the first layer that is not frozen). `afterLayer` is told each top-level layer
    /// whose backward is done (its parameters' gradients are then final).
    public func backward(_ dLogits: FloatBuffer, batch: Int, afterLayer: ((Int) -> Void)? = nil) {
        var g = dLogits
        var i = layers.count - 1
        while i >= frozenLayers {
            let dx = layers[i].backward(g, batch: batch, needInputGradient: i > frozenLayers)
            afterLayer?(i)
            guard let dx else { return }
            g = dx
            i -= 1
        }
    }

    /// Sets the layers training leaves alone (see `frozenLayers`); at least the last layer trains.
    public func freeze(until layer: Int) throws {
        guard layer >= 0, layer < layers.count else {
            throw CNNError(.invalidArgument, "freeze until layer \(layer): the network has layers 0 to \(layers.count - 1), and at least the last one must train")
        }
        frozenLayers = layer
    }

    /// A copy of this model whose last layer, a dense layer, is replaced by a new one for `classes`
    /// outputs, initialized from `seed` as a new model's would be (the class names become 0, 1, ...
    /// until training names them). Every other tensor, the normalization and the image fit are kept.
    public func replacingHead(classes: Int, seed: UInt64) throws -> Model {
        guard case .dense(_, let bias)? = architecture.layers.last?.kind else {
            throw CNNError(.invalidArgument, "the network's last layer is \(architecture.layers.last?.text ?? "missing"), not a dense layer to replace")
        }
        guard classes >= 1, classes <= Architecture.maxDimension else {
            throw CNNError(.invalidArgument, "a new head needs 1 to \(Architecture.maxDimension) classes, not \(classes)")
        }
        var a = architecture
        a.layers[a.layers.count - 1] = LayerSpec(kind: .dense(out: classes, bias: bias))
        let m = try Model(architecture: a, seed: seed)
        m.takeTensors(from: self, skipping: Set(m.layers.last!.parameters.map(ObjectIdentifier.init)))
        m.mean = mean
        m.std = std
        m.imageFit = imageFit
        return m
    }

    /// The gradient buffers of the trainable parameters (listed once: a training step allocates nothing).
    public private(set) lazy var gradients: [FloatBuffer] = namedParameters.compactMap { $0.parameter.grad }

    public func zeroGradients() { gradientBlock.fill(0) }

    // MARK: Building and initialization

    static func makeLayer(_ spec: LayerSpec, input: Shape, index: Int) throws -> Layer {
        func fail(_ what: String) -> CNNError {
            CNNError(.invalidArgument, "architecture: layer \(index) (\(spec.text)) on input \(input): \(what)")
        }
        /// A pooling window as the parser allows it (an imported file's comes here unchecked).
        func checkWindow(_ k: Pair, _ s: Pair, _ p: Pair) throws {
            guard k.h >= 1, k.w >= 1, s.h >= 1, s.w >= 1, p.h >= 0, p.w >= 0, 2 * p.h <= k.h, 2 * p.w <= k.w else {
                throw fail("the window and stride must be at least 1, and the padding from 0 to half the window")
            }
        }
        switch spec.kind {
        case let .conv(out, k, s, p, bias, groups):
            guard !input.flat else { throw fail("conv needs an image input (C,H,W), not a vector") }
            // The parser checks these; an imported file's layers come here without it.
            guard out >= 1, groups >= 1, k.h >= 1, k.w >= 1, s.h >= 1, s.w >= 1, p.h >= 0, p.w >= 0 else {
                throw fail("out, groups, kernel and stride must be at least 1 and padding at least 0")
            }
            guard input.h + 2 * p.h >= k.h, input.w + 2 * p.w >= k.w else {
                throw fail("the kernel \(k) is larger than the padded input")
            }
            guard input.c % groups == 0 else {
                throw fail("the input's \(input.c) channels are not a multiple of groups (\(groups))")
            }
            // Checked before the weights are allocated.
            let (a, o1) = out.multipliedReportingOverflow(by: input.c / groups)
            let (b, o2) = a.multipliedReportingOverflow(by: k.h)
            let (weights, o3) = b.multipliedReportingOverflow(by: k.w)
            guard !o1, !o2, !o3, weights <= maxParameters else { throw fail("too many weights") }
            let (rows, o4) = input.c.multipliedReportingOverflow(by: k.h * k.w)
            guard !o4, rows <= maxWorkspacePerSample else { throw fail("the im2col matrix is too large") }
            if groups > 1 {
                return GroupedConv2D(spec: spec, input: input, outChannels: out, groups: groups, kernel: (k.h, k.w),
                                     stride: (s.h, s.w), padding: (p.h, p.w), bias: bias)
            }
            return Conv2D(spec: spec, input: input, outChannels: out, kernel: (k.h, k.w),
                          stride: (s.h, s.w), padding: (p.h, p.w), bias: bias)
        case let .maxpool(k, s, p, ceil):
            guard !input.flat else { throw fail("pooling needs an image input (C,H,W), not a vector") }
            try checkWindow(k, s, p)
            guard input.h + 2 * p.h >= k.h, input.w + 2 * p.w >= k.w else { throw fail("the window \(k) is larger than the input (with its padding)") }
            return MaxPool2D(spec: spec, input: input, kernel: (k.h, k.w), stride: (s.h, s.w), padding: (p.h, p.w), ceil: ceil)
        case let .avgpool(k, s, p, countPad):
            guard !input.flat else { throw fail("pooling needs an image input (C,H,W), not a vector") }
            try checkWindow(k, s, p)
            guard input.h + 2 * p.h >= k.h, input.w + 2 * p.w >= k.w else { throw fail("the window \(k) is larger than the input (with its padding)") }
            return AvgPool2D(spec: spec, input: input, kernel: (k.h, k.w), stride: (s.h, s.w), padding: (p.h, p.w), countPad: countPad)
        case .globalAvgPool:
            guard !input.flat else { throw fail("globalavgpool needs an image input (C,H,W), not a vector") }
            return AvgPool2D(spec: spec, input: input, kernel: (input.h, input.w), stride: (input.h, input.w))
        case let .zeroPad(p):
            guard !input.flat else { throw fail("zeropad needs an image input (C,H,W), not a vector") }
            guard [p.top, p.left, p.bottom, p.right].allSatisfy({ $0 >= 0 && $0 <= Architecture.maxDimension }) else {
                throw fail("each side's padding must be from 0 to \(Architecture.maxDimension)")
            }
            // Each side is at most maxDimension (the parser, the importer): no overflow here.
            guard input.h + p.top + p.bottom <= Architecture.maxDimension, input.w + p.left + p.right <= Architecture.maxDimension else {
                throw fail("the padded image is larger than \(Architecture.maxDimension) in height or width")
            }
            return ZeroPad2D(spec: spec, input: input, padding: p)
        case .flatten:
            return Flatten(spec: spec, input: input)
        case let .dense(out, bias):
            guard input.flat else { throw fail("dense needs a vector input; add flatten before it") }
            let (_, overflow) = out.multipliedReportingOverflow(by: input.c)
            guard !overflow, out * input.c <= maxParameters else { throw fail("too many weights") }
            return Dense(spec: spec, input: input, outputs: out, bias: bias)
        case .activation(let kind):
            return Activation(spec: spec, input: input, kind: kind)
        case .dropout(let p):
            return Dropout(spec: spec, input: input, p: p)
        case let .batchnorm(eps, momentum):
            return BatchNorm(spec: spec, input: input, eps: eps, momentum: momentum)
        case let .squeezeExcite(squeeze, act, gate):
            guard !input.flat else { throw fail("se needs an image input (C,H,W), not a vector") }
            let (weights, overflow) = squeeze.multipliedReportingOverflow(by: input.c)
            guard !overflow, weights <= maxParameters / 2 else { throw fail("too many weights") }
            return SqueezeExcite(spec: spec, input: input, squeeze: squeeze, act: act, gate: gate)
        case let .residual(bodySpecs, shortcutSpecs):
            let body = try sequence(bodySpecs, input: input, index: index)
            let shortcut = try sequence(shortcutSpecs ?? [], input: input, index: index)
            let a = body.last?.outputShape ?? input, b = shortcut.last?.outputShape ?? input
            guard a == b else {
                throw fail("the body's output \(a) and the \(shortcutSpecs == nil ? "input" : "shortcut's output") \(b) must have one shape to be added" +
                           (shortcutSpecs == nil ? " (a body that changes the shape needs a shortcut: residual[BODY | conv(...) batchnorm])" : ""))
            }
            return Residual(spec: spec, input: input, body: body, shortcut: shortcut)
        case let .concat(branchSpecs):
            let branches = try branchSpecs.map { try sequence($0, input: input, index: index) }
            let shapes = branches.map { $0.last?.outputShape ?? input }
            if branches.contains(where: \.isEmpty), let other = shapes.first(where: { $0.h != input.h || $0.w != input.w }) {
                throw fail("an empty branch passes the input \(input), another branch gives \(other)")
            }
            guard shapes.allSatisfy({ !$0.flat && $0.h == shapes[0].h && $0.w == shapes[0].w }) else {
                throw fail("the branches give \(shapes.map(\.description).joined(separator: ", ")): concatenating along channels needs images of one height and width")
            }
            let channels = shapes.reduce(0) { $0 + $1.c }
            guard channels <= Architecture.maxDimension else { throw fail("more than \(Architecture.maxDimension) channels") }
            return Concat(spec: spec, input: input, branches: branches)
        }
    }

    /// The layers of a block's sequence, each on the previous one's output.
    private static func sequence(_ specs: [LayerSpec], input: Shape, index: Int) throws -> [Layer] {
        var shape = input
        return try specs.map { spec in
            let layer = try makeLayer(spec, input: shape, index: index)
            shape = layer.outputShape
            return layer
        }
    }

    /// He (Kaiming) normal init for conv/dense layers followed by ReLU or LeakyReLU (looking past
    /// batch norm, dropout, pooling and flatten), Glorot uniform otherwise; biases start at zero.
    public func initialize(rng: inout Random) {
        Model.initialize(layers, after: [], rng: &rng)
    }

    /// Initializes a sequence; `after` is what follows it (the layers after its block), where the
    /// activation that decides the initialization may be.
    private static func initialize(_ layers: [Layer], after: [Layer], rng: inout Random) {
        for (i, layer) in layers.enumerated() {
            let weight: Parameter, fanIn: Int, fanOut: Int
            if let block = layer as? Block {
                for (_, sequence) in block.sequences { initialize(sequence, after: Array(layers[(i + 1)...]) + after, rng: &rng) }
                continue
            }
            if let se = layer as? SqueezeExcite {
                se.initialize(rng: &rng)
                continue
            }
            if let conv = layer as? Conv2D {
                weight = conv.weight
                let k = conv.geometry.kh * conv.geometry.kw
                fanIn = conv.geometry.c * k
                fanOut = conv.outputShape.c * k
            } else if let conv = layer as? GroupedConv2D {
                // As PyTorch counts them, from the weight's shape (OC, C / groups, KH, KW).
                weight = conv.weight
                let k = conv.geometry.kh * conv.geometry.kw
                fanIn = conv.geometry.c / conv.groups * k
                fanOut = conv.outputShape.c * k
            } else if let dense = layer as? Dense {
                weight = dense.weight
                fanIn = dense.inputShape.count
                fanOut = dense.outputShape.count
            } else {
                continue
            }
            var gain: Float? = nil
            for next in Array(layers[(i + 1)...]) + after {
                if let a = next as? Activation {
                    // He initialization for ReLU and the activations shaped like it (as torchvision's
                    // MobileNets and EfficientNets do), Glorot otherwise.
                    switch a.kind {
                    case .relu, .relu6, .hardSwish, .silu, .gelu: gain = 2
                    default: break
                    }
                    if case .leakyRelu(let alpha) = a.kind { gain = 2 / (1 + alpha * alpha) }
                    break
                }
                if next is BatchNorm || next is Dropout || next is MaxPool2D || next is AvgPool2D || next is Flatten { continue }
                break
            }
            let w = weight.value
            if let gain {
                let std = (gain / Float(fanIn)).squareRoot()
                for j in 0..<w.count { w[j] = rng.normal() * std }
            } else {
                let limit = (6 / Float(fanIn + fanOut)).squareRoot()
                for j in 0..<w.count { w[j] = (rng.uniform() * 2 - 1) * limit }
            }
            weight.version += 1
            for p in layer.parameters where p.name == "bias" { p.value.fill(0); p.version += 1 }
        }
    }
}
