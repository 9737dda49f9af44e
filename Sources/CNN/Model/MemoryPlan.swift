/// Memory planned over the network (the convolutions also share their scratch): a layer's output and input gradient live in buffers of its
/// own only when something reads them later; every other one lives in one of two buffers that the
/// layers of a sequence take turns on.
///
/// In training, a layer's output is kept (its own buffer) when backward reads it: the layer itself
/// (sigmoid keeps y), or the next layer that writes an output (past those that pass their input
/// through) keeps its input (a dense layer, a grouped convolution, a batch norm, an activation
/// that keeps x). A convolution keeps its own bordered copy or im2col matrix, pooling its indices:
/// their inputs are not kept, so a batch norm's output and an activation's before a convolution
/// need no memory of their own. At inference only the network's output is kept.
/// Input gradients are used once, by the layer before, and always take turns. A convolution whose
/// input is such a kept output (the ReLU after a residual block keeps its output) reads it in
/// backward instead of keeping a copy (`Conv2D.readsKeptInput`); one right after a batch norm has
/// the norm recompute its output from its kept input (`Conv2D.inputNorm`).
///
/// The two buffers of a sequence serve its forward and its backward (what backward reads is never
/// in them). Sequences that can be alive together (the top level, a block's body and its shortcut,
/// the branches of a concatenation, the blocks inside those) have their own pair; sequences at the
/// same depth and position in different blocks share one.
final class SlotPair {
    private var a = Workspace(), b = Workspace()

    /// `count` floats in whichever buffer does not hold `other`, the one live value of the sequence.
    func take(_ count: Int, avoiding other: FloatBuffer) -> FloatBuffer {
        a.buffer !== other ? a.reserve(count) : b.reserve(count)
    }

    /// Floats held.
    var floats: Int { a.buffer.count + b.buffer.count }
}

/// What a layer's backward (in training) reads of its forward: planned over by the model.
struct BackwardReads {
    /// Forward returns its input (a flatten, a ReLU applied by the layer before): writes nothing.
    var passesThrough = false
    /// Backward reads the buffer forward received.
    var input = true
    /// Backward reads the buffer forward returned.
    var output = false

    static let nothing = BackwardReads(input: false)
    static let input = BackwardReads()
    static let passingThrough = BackwardReads(passesThrough: true, input: false)
}

/// One buffer that the layers at one place of recomputed blocks (see `Recomputation`) keep their
/// outputs in by turns: only the block being run forward or backward has its values there.
final class SharedSlot {
    var workspace = Workspace()
    /// Floats held.
    var floats: Int { workspace.buffer.count }
}

/// A layer's output and input-gradient buffers: its own, or its sequence's pair once the model has
/// planned them (`plan`). A layer on its own (the layer tests) keeps both, as before planning.
final class LayerBuffers {
    private var ownOutput = Workspace(), ownGradient = Workspace()
    private var pair: SlotPair?
    private var shared: SharedSlot?
    private var keptInTraining = true, keptAtInference = true

    /// `shared`: where a kept output lives when the layer is inside a recomputed block.
    func plan(_ pair: SlotPair, keptInTraining: Bool, keptAtInference: Bool, shared: SharedSlot? = nil) {
        self.pair = pair
        self.keptInTraining = keptInTraining
        self.keptAtInference = keptAtInference
        self.shared = shared
        // A new plan (training with or without recomputation) frees what the old one kept.
        if shared != nil || (!keptInTraining && !keptAtInference) { ownOutput = Workspace() }
        ownGradient = Workspace()
    }

    /// Where forward on `input` writes `count` floats.
    func output(_ count: Int, input: FloatBuffer, training: Bool) -> FloatBuffer {
        if let pair, !(training ? keptInTraining : keptAtInference) { return pair.take(count, avoiding: input) }
        if training, let shared { return shared.workspace.reserve(count) }
        return ownOutput.reserve(count)
    }

    /// Where backward from `dy` writes the input gradient, `count` floats.
    func inputGradient(_ count: Int, dy: FloatBuffer) -> FloatBuffer {
        if let pair { return pair.take(count, avoiding: dy) }
        return ownGradient.reserve(count)
    }

    /// Floats held of its own.
    var floats: Int { ownOutput.buffer.count + ownGradient.buffer.count }
}

/// Assigns every layer of the network its buffers (see SlotPair).
///
/// With `recomputingBlocks`, the top-level blocks (residual, concatenation) keep nothing of their
/// inner layers until backward: each runs forward again from its kept input just before its
/// backward (`Recomputation`), so the outputs its layers keep live in buffers that every top-level
/// block shares, place by place (`SharedSlot`). What stays from forward to backward is then the
/// blocks' inputs and the top-level layers' kept outputs, at the cost of a second forward of the
/// blocks (gradient checkpointing, with each block a segment).
struct MemoryPlanner {
    /// The pairs, by depth and position among the sequences of a block.
    private(set) var pairs: [[Int]: SlotPair] = [:]
    /// The kept outputs of recomputed blocks' layers, by place (see `plan`).
    private(set) var sharedSlots: [[Int]: SharedSlot] = [:]
    /// Whether top-level blocks are recomputed in backward.
    let recomputingBlocks: Bool

    /// The scratch every convolution shares.
    let convScratch = ConvScratch()

    /// The convolutions that read the network's input itself (before any layer writes an output):
    /// whether it stays until backward is the caller's to say (`Model.forward(..., inputKept:)`).
    private(set) var inputReaders: [Conv2D] = []

    init(recomputingBlocks: Bool = false) {
        self.recomputingBlocks = recomputingBlocks
    }

    mutating func plan(_ layers: [Layer]) {
        // The network's input is the caller's: not counted on to stay until backward.
        plan(layers, key: [0], place: nil, inputKept: false, writer: nil, networkInput: true)
    }

    private mutating func pair(_ key: [Int]) -> SlotPair {
        if let p = pairs[key] { return p }
        let p = SlotPair()
        pairs[key] = p
        return p
    }

    private mutating func sharedSlot(_ place: [Int]) -> SharedSlot {
        if let s = sharedSlots[place] { return s }
        let s = SharedSlot()
        sharedSlots[place] = s
        return s
    }

    /// `key`: the sequence's pair (key [0] is the top level); `place`: inside a recomputed block,
    /// the sequence's place in it (the path of sequence and layer indices from the block down,
    /// the same for every top-level block), else nil. `inputKept`: whether what the sequence
    /// receives in training stays unchanged until its backward (a layer's own kept output), so
    /// that a convolution reading it need not copy it; `writer`: the layer that wrote it (nil:
    /// unknown); `networkInput`: whether it is the network's input.
    private mutating func plan(_ layers: [Layer], key: [Int], place: [Int]?, inputKept: Bool, writer: Layer?,
                               networkInput: Bool) {
        let topLevel = key == [0]
        let pair = self.pair(key)
        var (inputKept, writer, networkInput) = (inputKept, writer, networkInput)
        for (i, layer) in layers.enumerated() {
            if let block = layer as? Block {
                // A block on the network's input is not recomputed: that input is the caller's.
                let recomputed = recomputingBlocks && topLevel && inputKept
                block.recomputation = recomputed ? Recomputation(block.sequences.map(\.layers)) : nil
                (block as? Residual)?.sumsIntoBody = layers[..<i].last { !MemoryPlanner.reads($0).passesThrough }
                    .map { !($0 is Block) } ?? false
                for (b, sequence) in block.sequences.enumerated() {
                    plan(sequence.layers, key: key + [b], place: recomputed ? [b] : place.map { $0 + [i, b] },
                         inputKept: inputKept, writer: writer, networkInput: networkInput)
                }
            }
            if let conv = layer as? Conv2D {
                conv.scratch = convScratch
                conv.readsKeptInput = inputKept
                conv.inputNorm = writer as? BatchNorm
                if networkInput { inputReaders.append(conv) }
            }
            guard let buffers = (layer as? PlannedLayer)?.buffers else {
                (inputKept, writer, networkInput) = (false, nil, false)
                continue
            }
            // Training: kept when backward reads it (the layer, or a layer after it up to the next
            // writer, or the network at the top level; a recomputed block reads its input).
            let rest = layers[(i + 1)...]
            let kept = MemoryPlanner.reads(layer).output
                || (MemoryPlanner.readsInput(rest, recomputedBlocks: recomputingBlocks && topLevel) ?? topLevel)
            // Inference: only the network's output, which is what the last layer that can write one
            // writes (every layer after it may pass its input through at inference).
            let last = topLevel && rest.allSatisfy(MemoryPlanner.mayPassThroughAtInference)
            buffers.plan(pair, keptInTraining: kept, keptAtInference: last,
                         shared: kept ? place.map { sharedSlot($0 + [i]) } : nil)
            // A layer that passes its input through (in training, exactly those that say so)
            // hands the next one what it received; any other its output.
            if !MemoryPlanner.reads(layer).passesThrough { (inputKept, writer, networkInput) = (kept, layer, false) }
        }
    }

    /// Whether backward reads what the first of `layers` gets in forward: it or the layers after it
    /// up to the first that writes an output (nil when every one passes it through).
    /// `recomputedBlocks`: a block among them runs forward again from its input in backward.
    static func readsInput(_ layers: ArraySlice<Layer>, recomputedBlocks: Bool = false) -> Bool? {
        for layer in layers {
            if readsInput(layer) || (recomputedBlocks && layer is Block) { return true }
            if !reads(layer).passesThrough { return false }
        }
        return nil
    }

    /// Whether backward reads `layer`'s input (a block: what its sequences' first layers read).
    static func readsInput(_ layer: Layer) -> Bool {
        guard let block = layer as? Block else { return reads(layer).input }
        return block.sequences.contains { readsInput($0.layers[...]) ?? false }
    }

    /// What backward reads (all it could, for a layer that does not say).
    static func reads(_ layer: Layer) -> BackwardReads {
        (layer as? PlannedLayer)?.backwardReads ?? BackwardReads(input: true, output: true)
    }

    private static func mayPassThroughAtInference(_ layer: Layer) -> Bool {
        layer is Flatten || layer is Activation || layer is MaxPool2D || layer is Dropout || layer is BatchNorm
    }
}
