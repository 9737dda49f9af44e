// B = batch, I = input features, O = output features.

/// Fully connected layer: y = W x + b, W is (O, I) as in PyTorch's nn.Linear.
public final class Dense: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (O, I)
    public let bias: Parameter?    // (O)

    private var input: FloatBuffer?       // kept for backward: x (B, I)
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    // Wᵀ (I, O) as the GEMM's packed panels, rebuilt when the weights change: NR columns of O
    // each (the last zero-padded), I rows of NR. The product reads them in place (no packing),
    // and each panel is one contiguous stream: at batch 1 a core's share of the weights (two
    // panels of 128) then stays in its L2, where rows of Wᵀ split in halves filled only half of
    // the cache's sets.
    private var weightPanels = Workspace()
    private var weightPanelsVersion = -1

    init(spec: LayerSpec, input: Shape, outputs: Int, bias hasBias: Bool) {
        self.spec = spec
        inputShape = input
        outputShape = Shape(features: outputs)
        weight = Parameter(name: "weight", shape: [outputs, input.count], trainable: true)
        bias = hasBias ? Parameter(name: "bias", shape: [outputs], trainable: true) : nil
    }

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }
    public var flops: Int { 2 * inputShape.count * outputShape.count }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let i = inputShape.count, o = outputShape.count, nr = gemmNR, panels = (o + nr - 1) / nr
        if weightPanelsVersion != weight.version || weightPanels.buffer.count < panels * i * nr {
            let wp = weightPanels.reserve(panels * i * nr).pointer
            for q in 0..<panels {
                let width = min(nr, o - q * nr)
                if width < nr { (wp + q * i * nr).update(repeating: 0, count: i * nr) }
                transpose(weight.value.pointer + q * nr * i, rows: width, cols: i, into: wp + q * i * nr, ldo: nr)
            }
            weightPanelsVersion = weight.version
        }
        let y = buffers.output(batch * o, input: x, training: training)
        for n in 0..<batch {
            if let b = bias { (y.pointer + n * o).update(from: b.value.pointer, count: o) }
            else { (y.pointer + n * o).update(repeating: 0, count: o) }
        }
        // Tasks: blocks of up to 64 rows (samples) × one panel, or × two panels for a few rows,
        // which stream both at once (see gemmTile); on the pool when the product is worth it.
        let rowBlocks = (batch + 63) / 64, rows = (batch + rowBlocks - 1) / rowBlocks
        let perTask = batch < gemmMR ? 2 : 1, groups = (panels + perTask - 1) / perTask
        let xp = x.pointer, yp = y.pointer, wp = weightPanels.buffer.pointer
        func task(_ t: Int) {
            let r0 = (t / groups) * rows, j0 = (t % groups) * perTask * nr
            gemmTile(i0: r0, i1: min(batch, r0 + rows), j0: j0, j1: min(o, j0 + perTask * nr), k: i, a: xp, aRow: i, aCol: 1,
                     b: wp, ldb: nr, panelStride: i * nr, c: yp, ldc: o, accumulate: true)
        }
        if batch * o * i >= 1 << 17 {
            ThreadPool.shared.parallelFor(rowBlocks * groups, task)
        } else {
            for t in 0..<rowBlocks * groups { task(t) }
        }
        input = x
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let i = inputShape.count, o = outputShape.count
        guard let x = input else { return nil }
        if let db = bias?.grad?.pointer {
            for j in 0..<o {
                var s: Float = 0
                for n in 0..<batch { s += dy.pointer[n * o + j] }
                db[j] += s
            }
        }
        // dW (O, I) += dyᵀ (O, B) · x (B, I)
        if let dw = weight.grad?.pointer {
            gemm(m: o, n: i, k: batch, a: dy.pointer, aRow: 1, aCol: o, b: x.pointer, ldb: i,
                 c: dw, ldc: i, accumulate: true, parallel: true)
        }
        guard needInputGradient else { return nil }
        // dx (B, I) = dy (B, O) · W (O, I)
        let dx = buffers.inputGradient(batch * i, dy: dy)
        gemm(m: batch, n: i, k: o, a: dy.pointer, aRow: o, aCol: 1, b: weight.value.pointer, ldb: i,
             c: dx.pointer, ldc: i, accumulate: false, parallel: true)
        return dx
    }
}
