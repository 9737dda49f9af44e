// B = batch, C = input channels, OC = output channels, H×W input, OH×OW output, KH×KW kernel.
// CKK = C·KH·KW (rows of the im2col matrix), P = OH·OW (its columns).

/// 2-D convolution (cross-correlation, as in PyTorch) with stride, zero padding and optional bias.
public final class Conv2D: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (OC, C, KH, KW)
    public let bias: Parameter?    // (OC)
    let geometry: ConvGeometry
    /// Set by the model when a ReLU or ReLU6 follows: the output write adds the bias and applies
    /// it (the activation layer then passes its input through, keeping it for its backward: the
    /// output is positive, or inside (0, 6), where the input is).
    var fusedActivation = Clamp.none
    /// Set by the model when a SiLU follows (after the batch norm if any): applied in the output
    /// write at inference only (the activation layer then passes its input through).
    var inferenceActivation = Clamp.none
    /// Set by the model for a 1×1 convolution after a squeeze-and-excitation: at inference it
    /// multiplies its input channels by that layer's gates as it packs them (the gate's multiply,
    /// the same bits), and the squeeze-and-excitation passes its input through.
    var gatedBy: SqueezeExcite?
    /// Set by the model when 2×2 max pooling (stride 2) follows, after the ReLU if any: the
    /// convolution returns the pooled output (OC, OH / 2, OW / 2) and, in training, writes the
    /// pooling's indices of the maxima; the full-size output never leaves its task's cache. The
    /// pooling passes the output through and runs backward as usual.
    var pooling: MaxPool2D?
    /// Set by the model when batch norm follows: folded into the weights at inference.
    var folding: NormFolding?
    /// Set by a residual block around its forward at inference when this convolution ends its
    /// body (`Residual.sumsInLastConvolution`): the output goes to the block's buffer with the
    /// shortcut added and the activation after the block applied, as the output is written.
    var residualSum: ResidualSum?
    /// Winograd with pooling, in training: each tile's top-left output index in the plane, OH·OW,
    /// the pooling's index of a maximum there (tileColumns entries). Fixed by the geometry, so
    /// built on first use.
    private lazy var tileCorners: IndexWorkspace = {
        let g = geometry, corners = IndexWorkspace(), table = corners.reserve(g.tileColumns)
        for t in 0..<g.tileColumns { table[t] = Int32(truncatingIfNeeded: 2 * (t / g.tilesW) * g.ow + 2 * (t % g.tilesW)) }
        return corners
    }()

    // Kept by forward for backward: the im2col matrix of every sample, (B, CKK, P) (Winograd
    // layers keep each sample's zero-bordered input in `padded` instead), unless the input is
    // kept (`readsKeptInput`).
    private var col = Workspace()
    /// The output (B, OC, OH, OW), or (B, OC, OH / 2, OW / 2) when pooling, and the input gradient.
    let buffers = LayerBuffers()
    private var padded = Workspace()     // stride 1: each sample zero-bordered (paddedCount floats)
    private var winogradU = Workspace()  // 3×3, stride 1: the transformed weights, 16 or 36 × (OC, C)
    private var winogradUVersion = -1
    private var winogradUPanels = Workspace()  // pooled inference: Uᵀ as the GEMM's panels (see Winograd.swift)
    private var winogradUPanelsVersion = -1
    /// Winograd's per-task slots and the weight gradient's transposed dy: used within one call,
    /// so the model's plan gives every convolution the same one.
    var scratch = ConvScratch()
    private var unpooled = Workspace()   // im2col with pooling: each task's full-size output; Yᵀ
    private var weightPanels = Workspace()  // one image on few positions: Wᵀ as the GEMM's panels
    private var weightPanelsVersion = -1
    private var winogradUBackward = Workspace()  // the input gradient's: 16 or 36 × (C, OC)
    private var dwT = Workspace()        // (CKK, OC): the weight gradient of one step, transposed

    /// Its own bordered copy of the input or im2col matrix, or an input kept anyway.
    var backwardReads: BackwardReads { .nothing }
    /// Set by the model's memory plan when the input is a layer's kept output (unchanged until this
    /// layer's backward, as the output of the ReLU after a residual block): training then keeps
    /// no copy of it and backward lowers each sample again, a task's part into its own slot (the
    /// same values: the same bits). Not for the product over the batch's pixels or the weight
    /// gradient by dot products, which read their kept columns (`lowersInBackward`).
    var readsKeptInput = false
    /// Set by the model's memory plan when a batch norm (and the ReLU it applies) comes right
    /// before: when the input is that norm's training output, backward has the norm recompute
    /// each sample's channels from its kept input instead of this layer keeping a copy.
    var inputNorm: BatchNorm?
    /// Set by a residual block for one backward of its shortcut (see `Residual.backward`): the
    /// input gradient is added into this buffer, the body's, instead of written to one of its own.
    var addsInputGradient: FloatBuffer?

    /// Whether backward can add its input gradient into a given buffer (`addsInputGradient`):
    /// strides that no window overlaps, so that each input gets at most one value added to it,
    /// exactly the sum the block would make after. A stride rules out the product over the batch
    /// and Winograd: backward takes the col2im path.
    var canAddInputGradient: Bool {
        let g = geometry
        return (g.sh > 1 || g.sw > 1) && g.kh <= g.sh && g.kw <= g.sw
    }

    /// What backward lowers again, when forward kept no copy.
    private var lowering = LoweredInput.none
    /// Whether the last forward kept no copy of its input for backward (see `readsKeptInput`).
    var lowersInputAgain: Bool { !lowering.isNone }

    init(spec: LayerSpec, input: Shape, outChannels: Int, kernel: (Int, Int), stride: (Int, Int),
         padding: (Int, Int), bias hasBias: Bool) {
        self.spec = spec
        inputShape = input
        geometry = ConvGeometry(c: input.c, h: input.h, w: input.w, kh: kernel.0, kw: kernel.1,
                                sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1)
        outputShape = Shape(c: outChannels, h: geometry.oh, w: geometry.ow)
        weight = Parameter(name: "weight", shape: [outChannels, input.c, kernel.0, kernel.1], trainable: true)
        bias = hasBias ? Parameter(name: "bias", shape: [outChannels], trainable: true) : nil
    }

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }
    public var flops: Int { 2 * outputShape.count * geometry.colRows }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols
        let inCount = inputShape.count
        let pool = pooling != nil
        let outCount = pool ? oc * (g.oh / 2) * (g.ow / 2) : outputShape.count
        // Training keeps the pooling's indices; a ReLU before it masks non-positive maxima.
        let indices = training ? pooling.map { $0.indices(count: batch * outCount) } : nil
        let mask = pooling?.masksNonPositive ?? false
        let sum = training ? nil : residualSum
        let y = sum?.output ?? buffers.output(batch * outCount, input: x, training: training)
        // Training keeps a bordered copy or the im2col matrices, or backward lowers x again.
        lowering = .none
        if training && lowersInBackward(batch) {
            if readsKeptInput {
                lowering = .kept(x)
            } else if let norm = inputNorm, norm.wroteInTraining(x) {
                lowering = .norm(norm)
            }
        }
        let keepsCopy = training && lowering.isNone
        // Inference through a folded batch norm uses the folded weights (and the ReLU after it).
        let folded = training ? nil : folding?.folded(weight: weight, bias: bias)
        let w = folded?.weight ?? UnsafePointer(weight.value.pointer)
        let b = folded?.bias ?? bias.map { UnsafePointer($0.value.pointer) }
        let weightKey = folded == nil ? weight.version : folding?.key ?? 0
        // The output write's activation: a ReLU or ReLU6 right after, or the folded norm's.
        // A residual sum's: its activation, after the shortcut (`addend` floats past the output).
        let clamp: Clamp = sum?.clamp ?? (fusedActivation != .none ? fusedActivation : folded?.clamp ?? (training ? .none : inferenceActivation))
        let xp = x.pointer, yp = y.pointer
        let addend = sum.map { yp.distance(to: UnsafeMutablePointer(mutating: $0.addend)) }
        let strideOne = g.sh == 1 && g.sw == 1
        // The gates of the squeeze-and-excitation before (C per sample), at inference.
        let gates = training ? nil : gatedBy?.gatesForNext
        if g.winograd {
            let corners = indices == nil ? nil : UnsafePointer(tileCorners.pointer)
            let pooled = pool ? WinogradPooling(indices: indices, corners: corners, mask: mask) : nil
            // Pooled inference multiplies by tiles (M_ξᵀ = V_ξᵀ U_ξᵀ), with Uᵀ kept as panels; the
            // rest by output channels, with U.
            var panels: UnsafePointer<Float>? = nil
            if pool && !training {
                let count = 16 * (oc + gemmNR - 1) / gemmNR * gemmNR * g.c
                if winogradUPanelsVersion != weightKey || winogradUPanels.buffer.count < count {
                    winogradWeights(w, oc: oc, c: g.c, layout: .panels, into: winogradUPanels.reserve(count).pointer)
                    winogradUPanelsVersion = weightKey
                }
                panels = UnsafePointer(winogradUPanels.buffer.pointer)
            } else {
                // F(4×4)'s 36 matrices or F(2×2)'s 16, for the scheme the convolution runs.
                let f4 = g.runsWinograd4(pooled: pool), count = (f4 ? 36 : 16) * oc * g.c
                if winogradUVersion != weightKey || winogradU.buffer.count < count {
                    winogradWeights(w, oc: oc, c: g.c, f4: f4, inputGradient: false, into: winogradU.reserve(count).pointer)
                    winogradUVersion = weightKey
                }
            }
            winogradConvolution(xp, g, u: winogradU.buffer.pointer, uPanels: panels, outChannels: oc, bias: b, clamp: clamp,
                                addend: addend, pooling: pooled, batch: batch, into: yp,
                                keeping: keepsCopy ? self.padded.reserve(batch * g.paddedCount).pointer : nil)
            return y
        }
        if pool && !training && g.directPooling {
            // Inference through a first layer (few channels): direct, with the pooling fused (see
            // DirectConvolution.swift). One image on several threads: the output channels are
            // split in two, each task bordering the image into its own slot.
            let split = batch == 1 && oc >= 2 && ThreadPool.shared.threads > 1
            let tasks = split ? 2 : min(batch, max(2, ThreadPool.shared.threads)), half = min(oc, halfInBlocks(oc, of: directBlock))
            let stage = self.col.reserve(tasks * directStageCount).pointer
            let padded = self.padded.reserve(tasks * g.paddedCount).pointer
            eachSample(batch, tasks: tasks, split: split) { n, task in
                let own = padded + task * g.paddedCount
                padInput(xp + n * inCount, g, own, readable: (batch - n) * inCount)
                directConvPooled(own, g, weights: w, bias: b, clamp: clamp, channels: split ? part(task, of: oc, cut: half) : 0..<oc,
                                 stage: stage + task * directStageCount, yp + n * outCount)
            }
            return y
        }
        if !pool && g.multipliesBatch(batch) {
            // Small planes through a 1×1 convolution: one product over the batch's pixels, read
            // from and written to the samples' planes (GemmSamples.swift). Training multiplies
            // the columns it gathers for backward (one matrix), the rest the planes themselves.
            let columns = batch * p
            var source = SampleColumns.planes(p, sampleStride: inCount), pixels = UnsafePointer(xp)
            if training {
                let xg = self.col.reserve(batch * ckk * p).pointer
                let parts = min(batch, max(2, ThreadPool.shared.threads))
                ThreadPool.shared.parallelFor(parts) { task in
                    for n in stride(from: task, to: batch, by: parts) {
                        for k in 0..<ckk { copyRow(xg + k * columns + n * p, xp + n * inCount + k * p, p, exact: true) }
                    }
                }
                (source, pixels) = (.matrix(ld: columns), UnsafePointer(xg))
            }
            // Tasks of four panels, claimed as the threads come free; fewer than two a thread (a
            // batch of 2×2 planes: 128 columns) also split the output channels.
            let chunk = 4 * gemmNR, chunks = (columns + chunk - 1) / chunk, threads = ThreadPool.shared.threads
            let rowParts = chunks >= 2 * threads ? 1 : min((oc + gemmMR - 1) / gemmMR, (2 * threads + chunks - 1) / chunks)
            let rowPart = ((oc + rowParts - 1) / rowParts + gemmMR - 1) / gemmMR * gemmMR
            ThreadPool.shared.parallelFor(chunks * rowParts) { t in
                let j0 = t / rowParts * chunk, i0 = t % rowParts * rowPart
                gemmSamples(i0: i0, i1: min(oc, i0 + rowPart), j0: j0, j1: min(columns, j0 + chunk), k: ckk, a: w, aRow: ckk,
                            aCol: 1, b: pixels, source, c: yp, .planes(p, sampleStride: outCount), rowBias: b, clamp: clamp,
                            bRowScale: gates, addend: addend)
            }
            return y
        }
        // Training keeps every sample's im2col matrix for backward. Inference needs one matrix at
        // a time: each of `slots` tasks lowers its samples into its own slot, which stays in its
        // core's cache instead of streaming the whole batch's matrices through memory.
        // Pooled inference, one image on several threads: the output channels are split in two
        // (whole register blocks), each task lowering the image into its own slot. (Not in
        // training, where a sample's slot is its own: two tasks would lower into the same one.)
        // The same for one image through any convolution whose columns are not split below (few
        // positions, a stride): otherwise such a layer would run on one thread.
        let rowSplit = !training && batch == 1 && oc >= 2 * gemmMR && ThreadPool.shared.threads > 1
        // Columns are split at a panel (output rows, with a stride), reading half of the input
        // each. (Choosing whichever split is closer to even, as for 14 × 14 = 196 positions in
        // 4 + 3 panels, measured no faster on MobileNetV2.)
        let columnSplit = batch == 1 && !training && p >= 4 * gemmNR && ThreadPool.shared.threads > 1
        let poolSplit = pool && rowSplit
        // The output channels of task 0 or 1 when they are split (`rowCut`).
        let channelCut = rowCut(oc)
        let tasks = rowSplit ? 2 : min(batch, max(2, ThreadPool.shared.threads))
        let slots = keepsCopy ? batch : tasks
        let col = self.col.reserve(slots * ckk * p).pointer
        // Without a copy to keep, the product lowers its panels from the bordered input itself
        // (LoweredPanels.swift), at stride 2 too.
        let lowersPanels = !keepsCopy && g.lowersPanels
        let padded = strideOne || lowersPanels ? self.padded.reserve(max(2, slots) * g.paddedCount).pointer : nil
        /// Sample n's output positions `columns` through the lowered panels, bordered in `padded`'s slot.
        func convolvePanels(_ n: Int, slot: Int, columns: Range<Int>) {
            guard let padded else { return }   // (reserved whenever lowersPanels)
            let own = padded + slot * g.paddedCount
            padInput(xp + n * inCount, g, own, readable: (batch - n) * inCount,
                     rows: columns == 0..<p ? nil : g.paddedRows(columns: columns))
            convolveLoweredPanels(own, g, weights: w, outChannels: oc, columns: columns, bias: b, clamp: clamp, addend: addend,
                                  into: yp + n * outCount)
        }
        func lower(_ n: Int, into slot: Int) {
            if strideOne, let padded {
                padInput(xp + n * inCount, g, padded + slot * g.paddedCount, readable: (batch - n) * inCount)
                im2colPadded(padded + slot * g.paddedCount, g, col + slot * ckk * p)
            } else {
                im2col(xp + n * inCount, g, col + slot * ckk * p)
            }
        }
        if pool {
            // Each task writes its images' full-size outputs into its own scratch and pools them
            // from there, while they are in its core's cache.
            let pooled = (g.oh / 2) * (g.ow / 2)
            let full = unpooled.reserve(tasks * oc * p).pointer
            eachSample(batch, tasks: tasks, split: poolSplit) { n, task in
                let rows = poolSplit ? part(task, of: oc, cut: channelCut) : 0..<oc
                let own = full + task * oc * p
                let slot = keepsCopy ? n : task
                lower(n, into: slot)
                gemmTile(i0: rows.lowerBound, i1: rows.upperBound, j0: 0, j1: p, k: ckk, a: w, aRow: ckk, aCol: 1,
                         b: col + slot * ckk * p, ldb: p, c: own, ldc: p, accumulate: false, rowBias: b, clamp: clamp)
                for o in rows {
                    let out = n * outCount + o * pooled
                    maxPool2x2Plane(own + o * p, h: g.oh, w: g.ow, yp + out, oh: g.oh / 2, ow: g.ow / 2,
                                    argmax: indices.map { $0 + out }, mask: mask)
                }
            }
            return y
        }
        // A 1×1 convolution at stride 1 without padding: in inference its im2col matrix is the
        // input itself (C rows of H·W), multiplied as it is.
        let pointwise = !training && g.kh == 1 && g.kw == 1 && strideOne && g.ph == 0 && g.pw == 0
        if rowSplit && !columnSplit && gates == nil && oc % gemmNR == 0 && p >= gemmMR {
            transposedProduct(xp, w: w, weightKey: weightKey, bias: b, clamp: clamp, addend: addend, lowered: !pointwise, into: yp)
            return y
        }
        if pointwise && columnSplit && !(rowSplit && oc >= 2 * ckk && rowSplitIsEvener(rows: oc, columns: p)) {
            let split = (p / 2 + gemmNR - 1) / gemmNR * gemmNR
            ThreadPool.shared.parallelFor(2) { t in
                let columns = t == 0 ? 0..<split : split..<p
                gemmTile(i0: 0, i1: oc, j0: columns.lowerBound, j1: columns.upperBound, k: ckk, a: w, aRow: ckk, aCol: 1,
                         b: xp, ldb: p, c: yp, ldc: p, accumulate: false, rowBias: b, clamp: clamp, bRowScale: gates, addend: addend)
            }
            return y
        }
        if pointwise && rowSplit {
            ThreadPool.shared.parallelFor(2) { t in
                let rows = part(t, of: oc, cut: channelCut)
                gemmTile(i0: rows.lowerBound, i1: rows.upperBound, j0: 0, j1: p, k: ckk, a: w, aRow: ckk, aCol: 1,
                         b: xp, ldb: p, c: yp, ldc: p, accumulate: false, rowBias: b, clamp: clamp, bRowScale: gates, addend: addend)
            }
            return y
        }
        if pointwise {
            ThreadPool.shared.parallelItems(batch, slots: tasks) { n, _ in
                gemm(m: oc, n: p, k: ckk, a: w, aRow: ckk, aCol: 1, b: xp + n * inCount, ldb: p, c: yp + n * outCount,
                     ldc: p, accumulate: false, rowBias: b, clamp: clamp, bRowScale: gates.map { $0 + n * ckk }, addend: addend)
            }
            return y
        }
        if strideOne && columnSplit, let padded {
            // One image (a latency-bound prediction): its output positions are split in two at a
            // panel boundary, and each task lowers and multiplies its own columns, so the im2col
            // matrix never moves between cores. Every element is computed as in a batch.
            let split = (p / 2 + gemmNR - 1) / gemmNR * gemmNR
            ThreadPool.shared.parallelFor(2) { t in
                let own = padded + t * g.paddedCount, columns = t == 0 ? 0..<split : split..<p
                if lowersPanels { return convolvePanels(0, slot: t, columns: columns) }
                padInput(xp, g, own, readable: inCount, rows: g.paddedRows(columns: columns))
                im2colPadded(own, g, col, columns: columns)
                gemmTile(i0: 0, i1: oc, j0: columns.lowerBound, j1: columns.upperBound, k: ckk, a: w, aRow: ckk, aCol: 1,
                         b: col, ldb: p, c: yp, ldc: p, accumulate: false, rowBias: b, clamp: clamp, addend: addend)
            }
            return y
        }
        if !strideOne && columnSplit {
            // The same with a stride: the tasks lower and multiply half of the output rows each.
            ThreadPool.shared.parallelFor(2) { t in
                let outputRows = part(t, of: g.oh, cut: g.oh / 2)
                if lowersPanels { return convolvePanels(0, slot: t, columns: outputRows.lowerBound * g.ow..<outputRows.upperBound * g.ow) }
                im2col(xp, g, col, rows: outputRows)
                gemmTile(i0: 0, i1: oc, j0: outputRows.lowerBound * g.ow, j1: outputRows.upperBound * g.ow, k: ckk, a: w,
                         aRow: ckk, aCol: 1, b: col, ldb: p, c: yp, ldc: p, accumulate: false, rowBias: b, clamp: clamp, addend: addend)
            }
            return y
        }
        if rowSplit {
            // One image on few positions: each task lowers it into its own slot and multiplies
            // half of the output channels.
            ThreadPool.shared.parallelFor(2) { t in
                lower(0, into: t)
                let rows = part(t, of: oc, cut: channelCut)
                gemmTile(i0: rows.lowerBound, i1: rows.upperBound, j0: 0, j1: p, k: ckk, a: w, aRow: ckk, aCol: 1,
                         b: col + t * ckk * p, ldb: p, c: yp, ldc: p, accumulate: false, rowBias: b, clamp: clamp, addend: addend)
            }
            return y
        }
        // Each sample is lowered and multiplied by one task, so each output element is written by
        // one task, computed the same way whatever the batch or the slots. (Training keeps each
        // sample's matrix in its own slot.)
        ThreadPool.shared.parallelItems(batch, slots: tasks) { n, task in
            if lowersPanels {
                convolvePanels(n, slot: task, columns: 0..<p)
                return
            }
            let slot = keepsCopy ? n : task
            lower(n, into: slot)
            gemm(m: oc, n: p, k: ckk, a: w, aRow: ckk, aCol: 1, b: col + slot * ckk * p, ldb: p, c: yp + n * outCount,
                 ldc: p, accumulate: false, rowBias: b, clamp: clamp, addend: addend)
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols
        let outCount = outputShape.count
        let dyp = dy.pointer
        // The bias gradient sums each channel of dy in vector lanes (a fixed order).
        if let db = bias?.grad?.pointer {
            parallelChunks(oc, chunk: 8) { o0, o1 in
                for o in o0..<o1 {
                    var acc = V()
                    var tail: Float = 0
                    for n in 0..<batch {
                        let row = dyp + n * outCount + o * p
                        var i = 0
                        while i + V.scalarCount <= p {
                            acc += UnsafeRawPointer(row + i).loadUnaligned(as: V.self)
                            i += V.scalarCount
                        }
                        while i < p { tail += row[i]; i += 1 }
                    }
                    db[o] += acc.sum() + tail
                }
            }
        }
        if g.multipliesBatch(batch) {
            return backwardOverBatch(dy, batch: batch, needInputGradient: needInputGradient)
        }
        if let dw = weight.grad?.pointer {
            if g.winograd {
                weightGradientByWinograd(dy, batch: batch, into: dw)
            } else if gradientByDots {
                weightGradientByDots(dy, batch: batch, into: dw)
            } else {
                weightGradientByProduct(dy, batch: batch, into: dw)
            }
        }
        guard needInputGradient else { return nil }
        let inCount = inputShape.count
        let adding = addsInputGradient
        let dx = adding ?? buffers.inputGradient(batch * inCount, dy: dy)
        // For 3×3 at stride 1, dx is a convolution of dy: by Winograd when it applies, no col2im.
        if adding == nil, let back = g.inputGradientWinograd(outChannels: oc) {
            let f4 = back.runsWinograd4(pooled: false)
            let u = winogradUBackward.reserve((f4 ? 36 : 16) * oc * g.c).pointer
            winogradWeights(weight.value.pointer, oc: oc, c: g.c, f4: f4, inputGradient: true, into: u)
            winogradConvolution(dyp, back, u: u, outChannels: g.c, bias: nil, clamp: .none, batch: batch,
                                into: dx.pointer, keeping: nil)
            return dx
        }
        // dx_n = col2im(Wᵀ (CKK, OC) · dy_n (OC, P)), each task's samples through its own slot: the
        // im2col matrices are no longer needed, so their memory holds the slots. (After a
        // Winograd forward, which made none, with fewer than 8 output channels, so that dy's
        // convolution is not Winograd; or with the input kept: reserved here.)
        let slots = min(batch, max(2, ThreadPool.shared.threads))
        let dcols = self.col.reserve(slots * ckk * p).pointer
        let w = weight.value.pointer, dxp = dx.pointer
        let padded = g.sh == 1 && g.sw == 1 ? self.padded.reserve(slots * g.paddedCount).pointer : nil
        ThreadPool.shared.parallelItems(batch, slots: slots) { n, slot in
            let dcol = dcols + slot * ckk * p
            gemm(m: ckk, n: p, k: oc, a: w, aRow: 1, aCol: ckk, b: dyp + n * outCount, ldb: p,
                 c: dcol, ldc: p, accumulate: false)
            let dxn = dxp + n * inCount
            if adding == nil { dxn.update(repeating: 0, count: inCount) }
            if let padded {
                col2imPadded(dcol, g, padded + slot * g.paddedCount, dxn)
            } else {
                col2im(dcol, g, dxn)
            }
        }
        return dx
    }

    /// The weight gradient by dot products: only for a first layer's few rows (a 1×1 expansion,
    /// 24 → 144 channels, by dots took 15 % of MobileNetV2's training, twice the packed product).
    private var gradientByDots: Bool {
        let g = geometry
        return !g.winograd && g.colRows < outputShape.c && g.colRows < 32
    }

    /// Whether backward can lower the input again instead of reading a kept copy (see
    /// `readsKeptInput`).
    private func lowersInBackward(_ batch: Int) -> Bool { !geometry.multipliesBatch(batch) && !gradientByDots }

    /// Backward of the product over the batch's pixels (`ConvGeometry.multipliesBatch`): dy as one
    /// (B·P, OC) matrix, each sample's (OC, P) transposed into its P rows; then dWᵀ (C, OC) =
    /// X (C, B·P) · dyᵀ, and dxᵀ (B·P, C) = dyᵀ · W (OC, C) in the kept columns' memory (no longer
    /// needed), each sample's P rows transposed back into its (C, P) planes.
    private func backwardOverBatch(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        let c = geometry.c, oc = outputShape.c, p = geometry.colCols, rows = batch * p
        let inCount = inputShape.count
        let xg = col.buffer.pointer, dw = weight.grad?.pointer
        guard dw != nil || needInputGradient else { return nil }
        let dyT = transposedGradient(dy, batch: batch)
        if let dw {
            let dwt = dwT.reserve(c * oc).pointer
            gemm(m: c, n: oc, k: rows, a: xg, aRow: rows, aCol: 1, b: dyT, ldb: oc, c: dwt, ldc: oc, accumulate: false, parallel: true)
            addTransposed(dwt, into: dw)
        }
        guard needInputGradient else { return nil }
        gemm(m: rows, n: c, k: oc, a: dyT, aRow: oc, aCol: 1, b: weight.value.pointer, ldb: c, c: xg, ldc: c,
             accumulate: false, parallel: true)
        let dx = buffers.inputGradient(batch * inCount, dy: dy), dxp = dx.pointer
        ThreadPool.shared.parallelFor(batch) { n in
            transpose(xg + n * inCount, rows: p, cols: c, into: dxp + n * inCount)
        }
        return dx
    }

    // dW (OC, CKK) += Σ_n dy_n (OC, P) · col_n (CKK, P)ᵀ, two ways; in both, every task sums the
    // samples in order over a fixed part of dW, so the result does not depend on the thread count.

    /// Few im2col rows (the first layer, C = 1: CKK = 9): dy and col both run along P, so every
    /// element is a dot product (gemmNT), with no packing. OC is cut into 4 parts.
    private func weightGradientByDots(_ dy: FloatBuffer, batch: Int, into dw: UnsafeMutablePointer<Float>) {
        let oc = outputShape.c, ckk = geometry.colRows, p = geometry.colCols, outCount = outputShape.count
        let col = self.col.buffer.pointer, dyp = dy.pointer
        let part = (oc + 15) / 16 * 4
        ThreadPool.shared.parallelFor((oc + part - 1) / part) { t in
            let o0 = t * part, o1 = min(oc, o0 + part)
            for n in 0..<batch {
                gemmNT(i0: o0, i1: o1, j0: 0, j1: ckk, k: p, a: dyp + n * outCount, lda: p,
                       b: col + n * ckk * p, ldb: p, c: dw, ldc: ckk)
            }
        }
    }

    /// Many rows: dy is transposed to (P, OC) sample by sample (a register transpose, far cheaper
    /// than gathering it while packing), then dWᵀ (CKK, OC) = Σ_n col_n · dyᵀ_n runs on the packed
    /// GEMM, in two fixed halves of the CKK rows, and is added into dW once.
    private func weightGradientByProduct(_ dy: FloatBuffer, batch: Int, into dw: UnsafeMutablePointer<Float>) {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols, outCount = outputShape.count
        let col = self.col.buffer.pointer, inCount = inputShape.count, taps = g.kh * g.kw
        let lowering = self.lowering
        // dy transposed a chunk of samples at a time (see dyChunkFloats).
        let chunk = min(batch, max(1, Conv2D.dyChunkFloats / outCount))
        let dyT = scratch.transposed.reserve(chunk * outCount).pointer
        let dwt = dwT.reserve(ckk * oc).pointer
        dwt.update(repeating: 0, count: ckk * oc)
        let half = ((ckk + 1) / 2 + 7) / 8 * 8
        // Without a kept copy, each task lowers the channels of its rows into its own slot.
        let slots = lowering.isNone ? nil : scratch.lowered.reserve(2 * (ckk * p + inCount)).pointer
        for first in stride(from: 0, to: batch, by: chunk) {
            let samples = first..<min(batch, first + chunk)
            transposeSamples(dy, samples, into: dyT)
            ThreadPool.shared.parallelFor(ckk > half ? 2 : 1) { t in
                let r0 = t * half, r1 = min(ckk, r0 + half)
                let c0 = r0 / taps, c1 = min(g.c, (r1 + taps - 1) / taps)
                var part = g
                part.c = c1 - c0
                for n in samples {
                    let a: UnsafePointer<Float>
                    if let slots {
                        let own = slots + t * (ckk * p + inCount)
                        let x = lowering.sample(n, channels: c0..<c1, batch: batch, shape: inputShape, temp: own + ckk * p)
                        im2col(x.pointer + c0 * g.h * g.w, part, own + c0 * taps * p)
                        a = UnsafePointer(own)
                    } else {
                        a = UnsafePointer(col + n * ckk * p)
                    }
                    gemmTile(i0: r0, i1: r1, j0: 0, j1: oc, k: p, a: a, aRow: p, aCol: 1,
                             b: dyT + (n - first) * outCount, ldb: oc, c: dwt, ldc: oc, accumulate: true)
                }
            }
        }
        addTransposed(dwt, into: dw)
    }

    /// The weight gradients take dy transposed a chunk of samples at a time, in the shared scratch:
    /// about 2 MB (whole batches made it one of the largest buffers training holds; 8 MB chunks
    /// ran no faster). Each sample is still summed in order.
    static let dyChunkFloats = 1 << 19

    /// dy as (B, P, OC): each sample's (OC, P) transposed into its P rows, in the shared scratch.
    private func transposedGradient(_ dy: FloatBuffer, batch: Int) -> UnsafeMutablePointer<Float> {
        let dyT = scratch.transposed.reserve(batch * outputShape.count).pointer
        transposeSamples(dy, 0..<batch, into: dyT)
        return dyT
    }

    /// Samples `samples` of dy, each (OC, P) transposed into its P rows of `dyT`.
    private func transposeSamples(_ dy: FloatBuffer, _ samples: Range<Int>, into dyT: UnsafeMutablePointer<Float>) {
        let oc = outputShape.c, p = geometry.colCols, outCount = outputShape.count, dyp = dy.pointer
        let first = samples.lowerBound
        ThreadPool.shared.parallelFor(samples.count) { i in
            transpose(dyp + (first + i) * outCount, rows: oc, cols: p, into: dyT + i * outCount)
        }
    }

    /// dW (OC, CKK) += dWᵀ (CKK, OC).
    private func addTransposed(_ dwt: UnsafePointer<Float>, into dw: UnsafeMutablePointer<Float>) {
        let oc = outputShape.c, ckk = geometry.colRows
        for o in 0..<oc {
            for j in 0..<ckk { dw[o * ckk + j] += dwt[j * oc + o] }
        }
    }

    /// Winograd layers, by the transform (see winogradGradientTiles). The batch is cut in two
    /// fixed halves, whatever the threads: each task transforms its samples one by one, dy into
    /// dM's tiles and the kept (or again bordered) input into V, in its own slot (in its core's
    /// cache), and adds the 16 products dUᵀ_ξ (C, OC) += V_ξ (C, tiles) · dMᵀ_ξ (tiles, OC) into its
    /// own sum, in sample order; then dU = the first half's sum + the second's, and dW += Gᵀ dU G.
    private func weightGradientByWinograd(_ dy: FloatBuffer, batch: Int, into dw: UnsafeMutablePointer<Float>) {
        let g = geometry, oc = outputShape.c, c = g.c, p = g.colCols, outCount = outputShape.count
        let row = winogradGradientRow(oc), xiStride = g.winogradGradientStride(oc), vStride = g.winogradVStride
        let lowering = self.lowering, layout = WinogradGradientSlot(g, outChannels: oc)
        let parts = min(batch, 2), cut = (batch + 1) / 2, sums = 16 * c * oc
        let work = scratch.slots.reserve(parts * layout.count).pointer
        let kept = self.padded.buffer.pointer, dyp = dy.pointer
        ThreadPool.shared.parallelFor(parts) { task in
            let slot = work + task * layout.count, sum = slot + layout.sums
            let dyT = slot, dm = slot + layout.dm, v = slot + layout.v
            sum.update(repeating: 0, count: sums)
            for n in part(task, of: batch, cut: cut) {
                transpose(dyp + n * outCount, rows: oc, cols: p, into: dyT)
                winogradGradientTiles(dyT, g, oc: oc, into: dm)
                let x: UnsafePointer<Float>
                if lowering.isNone {
                    x = UnsafePointer(kept + n * g.paddedCount)
                } else {
                    let bordered = slot + layout.bordered
                    let input = lowering.sample(n, channels: 0..<c, batch: batch, shape: inputShape, temp: bordered + g.paddedCount)
                    padInput(input.pointer, g, bordered, readable: input.readable)
                    x = UnsafePointer(bordered)
                }
                winogradInput(x, g, v)
                for xi in 0..<16 {
                    gemmTile(i0: 0, i1: c, j0: 0, j1: oc, k: g.tiles, a: v + xi * vStride, aRow: g.tileColumns, aCol: 1,
                             b: dm + xi * xiStride, ldb: row, bInPlace: true, c: sum + xi * c * oc, ldc: oc, accumulate: true)
                }
            }
        }
        let du = work + layout.sums
        if parts == 2 {
            let other = UnsafePointer(work + layout.count + layout.sums)
            for i in 0..<sums { du[i] += other[i] }
        }
        winogradGradientWeights(du, oc: oc, c: c, into: dw)
    }

    /// One image on few positions (P < 4 panels: a 7×7 plane fills 49 of a product's 64 columns),
    /// on two threads: Yᵀ (P, OC) = colᵀ · Wᵀ, the positions as the rows (whole register blocks
    /// but one row) and the output channels as the columns (whole panels of Wᵀ, packed once per
    /// weight version), then transposed into y. Each element is summed as in Y = W · col (the
    /// bias first: C starts as it; then the K blocks in order), so the bits are the other paths'.
    /// The im2col matrix (unless `lowered` is false: a 1×1 convolution's is x) is lowered by both
    /// tasks, half of the input channels each.
    private func transposedProduct(_ xp: UnsafeMutablePointer<Float>, w: UnsafePointer<Float>, weightKey: Int,
                                   bias: UnsafePointer<Float>?, clamp: Clamp, addend: Int?, lowered: Bool,
                                   into yp: UnsafeMutablePointer<Float>) {
        let g = geometry, oc = outputShape.c, ckk = g.colRows, p = g.colCols, nr = gemmNR
        if weightPanelsVersion != weightKey || weightPanels.buffer.count < oc * ckk {
            packTransposedPanels(w, rows: oc, k: ckk, into: weightPanels.reserve(oc * ckk).pointer)
            weightPanelsVersion = weightKey
        }
        let panels = UnsafePointer(weightPanels.buffer.pointer)
        let yt = unpooled.reserve(p * oc).pointer
        var a = UnsafePointer(xp)
        if lowered {
            let col = self.col.reserve(ckk * p).pointer
            ThreadPool.shared.parallelFor(2) { t in
                let channels = part(t, of: g.c, cut: g.c / 2)
                var own = g
                own.c = channels.count
                im2col(xp + channels.lowerBound * g.h * g.w, own, col + channels.lowerBound * g.kh * g.kw * p)
            }
            a = UnsafePointer(col)
        }
        // The sum of an addend comes before the clamp: both as y is written.
        let cut = (oc / nr + 1) / 2 * nr
        ThreadPool.shared.parallelFor(2) { t in
            let columns = part(t, of: oc, cut: cut)
            if let bias {
                for j in 0..<p { (yt + j * oc + columns.lowerBound).update(from: bias + columns.lowerBound, count: columns.count) }
            }
            gemmTile(i0: 0, i1: p, j0: columns.lowerBound, j1: columns.upperBound, k: ckk, a: a, aRow: 1, aCol: p,
                     b: panels, ldb: nr, panelStride: ckk * nr, c: yt, ldc: oc, accumulate: bias != nil,
                     clamp: addend == nil ? clamp : .none)
        }
        guard let addend else { return transpose(yt, rows: p, cols: oc, into: yp) }
        ThreadPool.shared.parallelFor(2) { t in
            for o in part(t, of: oc, cut: cut) {
                let dst = yp + o * p
                for j in 0..<p { dst[j] = clamp.apply(yt[j * oc + o] + dst[j + addend]) }
            }
        }
    }

    /// The 3×3 stride-1 convolution of `input` (batch × g.c × g.h × g.w) with transformed weights u
    /// into `output` (batch × outChannels × g.oh × g.ow), by Winograd (see Winograd.swift). Each
    /// task takes its samples one by one through its own slot (zero-bordered input, transformed
    /// input, products), which stays in its core's cache; in training, each sample's zero-bordered
    /// input is written to `keeping` instead, kept for the weight gradient. One image on several
    /// threads: the output channels are split in two (whole register blocks), each task
    /// transforming the input itself. With `pooling`, the output is 2×2 max-pooled as it is
    /// written (OH / 2 × OW / 2: one value per tile).
    private func winogradConvolution(_ input: UnsafePointer<Float>, _ g: ConvGeometry, u: UnsafePointer<Float>,
                                     uPanels: UnsafePointer<Float>? = nil, outChannels oc: Int, bias: UnsafePointer<Float>?,
                                     clamp: Clamp, addend: Int? = nil, pooling: WinogradPooling? = nil, batch: Int,
                                     into output: UnsafeMutablePointer<Float>, keeping kept: UnsafeMutablePointer<Float>?) {
        let c = g.c, t = g.tileColumns, nr = gemmNR
        let inCount = g.c * g.h * g.w, outCount = oc * (pooling != nil ? g.tiles : g.oh * g.ow)
        // F(4×4) where it applies (Winograd4.swift; `u` holds its 36 matrices), else F(2×2).
        let f4 = g.runsWinograd4(pooled: pooling != nil)
        let vCount = 16 * g.winogradVStride, slotSize = f4 ? g.winograd4SlotCount(outChannels: oc) : g.winogradSlotCount(outChannels: oc)
        let mStride = g.winogradMStride(outChannels: oc), columns = g.winogradProductColumns
        // Pooled inference multiplies by tiles: M_ξᵀ (tiles, OC) = V_ξᵀ · U_ξᵀ, the tiles as the
        // rows (V_ξ read transposed, no packing) and Uᵀ as panels. The columns of V_ξ past the
        // tiles (up to a quarter of them: 49 tiles in 64) are then not multiplied, and each
        // product is summed over the channels in the same order: the same bits.
        let byTiles = uPanels != nil && pooling != nil && pooling?.indices == nil
        // One image on two threads: its rows of tiles cut in two (`unpooledTileRowCut`), or else
        // the output channels (`rowCut`; at a panel when by tiles), each task transforming the
        // input itself.
        let tileRowCut = pooling != nil ? nil : g.unpooledTileRowCut
        let half = byTiles ? halfInBlocks(oc, of: nr) : rowCut(oc)
        let split = batch == 1 && kept == nil && (tileRowCut != nil || half < oc) && ThreadPool.shared.threads > 1
        // Two samples to a task, sharing the products (`winogradPairsSamples`).
        let paired = !f4 && pooling == nil && batch > 1 && g.winogradPairsSamples
        let items = paired ? (batch + 1) / 2 : batch
        let slots = split ? 2 : min(items, max(2, ThreadPool.shared.threads))
        let slotFloats = paired ? g.winogradPairedSlotCount(outChannels: oc) : slotSize
        let base = scratch.slots.reserve(slots * slotFloats).pointer
        // Samples `samples` (one or two) in the columns of the same products, N apart.
        func runPaired(_ samples: Range<Int>, slot: Int) {
            let n = V.scalarCount, t2 = g.pairedTileColumns
            let vStride = g.winogradVStride(columns: t2), mStride = g.winogradMStride(outChannels: oc, columns: t2)
            let own = base + slot * slotFloats, v = own + g.paddedCount, m = v + 16 * vStride
            for (i, sample) in samples.enumerated() {
                let padded = kept.map { $0 + sample * g.paddedCount } ?? own
                padInput(input + sample * inCount, g, padded, readable: (batch - sample) * inCount)
                winogradInput(padded, g, v + i * n, columns: t2)
            }
            for xi in 0..<16 {
                gemmTile(i0: 0, i1: oc, j0: 0, j1: samples.count * n, k: c, a: u + xi * oc * c, aRow: c, aCol: 1,
                         b: v + xi * vStride, ldb: t2, bInPlace: true, c: m + xi * mStride, ldc: t2, accumulate: false)
            }
            for (i, sample) in samples.enumerated() {
                winogradOutput(m + i * n, g, oc: oc, channels: 0..<oc, bias: bias, clamp: clamp, addend: addend, columns: t2,
                               output + sample * outCount)
            }
        }
        if paired {
            ThreadPool.shared.parallelItems(items, slots: slots) { pair, slot in
                runPaired(2 * pair..<min(batch, 2 * pair + 2), slot: slot)
            }
            return
        }
        func run(_ sample: Int, slot: Int, rows: Range<Int>, tileRows: Range<Int>? = nil) {
            let own = base + slot * slotSize, v = own + g.paddedCount, m = v + vCount
            let padded = kept.map { $0 + sample * g.paddedCount } ?? own
            if f4 {
                // A range of rows of tiles reads its 4 rows each and the 2 after them.
                padInput(input + sample * inCount, g, padded, readable: (batch - sample) * inCount,
                         rows: tileRows.map { 4 * $0.lowerBound..<4 * $0.upperBound + 2 })
                let tiles = tileRows.map { $0.lowerBound * g.tiles4Stride..<$0.upperBound * g.tiles4Stride }
                let t4 = g.tile4Columns, vStride = g.winograd4VStride, m = v + 36 * vStride, mStride = g.winograd4MStride(outChannels: oc)
                winograd4Input(padded, g, v, tiles: tiles)
                // The groups of N tiles from the range's first (a whole panel: `winograd4TileRowCut`).
                let j0 = tiles?.lowerBound ?? 0, j1 = j0 + ((tiles?.count ?? g.tiles4) + V.scalarCount - 1) / V.scalarCount * V.scalarCount
                for xi in 0..<36 {
                    gemmTile(i0: rows.lowerBound, i1: rows.upperBound, j0: j0, j1: j1, k: c, a: u + xi * oc * c, aRow: c, aCol: 1,
                             b: v + xi * vStride, ldb: t4, bInPlace: true, c: m + xi * mStride, ldc: t4, accumulate: false)
                }
                winograd4Output(m, g, oc: oc, channels: rows, bias: bias, clamp: clamp, addend: addend, tiles: tiles, output + sample * outCount)
                return
            }
            // Rows of V (and of the products by tiles) per row of tiles.
            var tileRow = g.tilesW
            if byTiles && g.winogradSmallInput {
                winogradInputSmall(input + sample * inCount, g, readable: (batch - sample) * inCount, first: sample == 0, v)
                tileRow = V.scalarCount / 2
            } else {
                padInput(input + sample * inCount, g, padded, readable: (batch - sample) * inCount,
                         rows: tileRows.map { 2 * $0.lowerBound..<2 * $0.upperBound + 2 })
                winogradInput(padded, g, v, tileRows: tileRows)
            }
            if byTiles, let uPanels {
                let rowCount = tileRow == g.tilesW ? g.tiles : g.tilesH * tileRow, tStride = rowCount * oc + V.scalarCount
                let panelCount = (oc + nr - 1) / nr
                for xi in 0..<16 {
                    gemmTile(i0: 0, i1: rowCount, j0: rows.lowerBound, j1: rows.upperBound, k: c, a: v + xi * g.winogradVStride,
                             aRow: 1, aCol: t, b: uPanels + xi * panelCount * c * nr, ldb: nr, panelStride: c * nr,
                             c: m + xi * tStride, ldc: oc, accumulate: false)
                }
                winogradOutputPooledByTiles(m, g, tileRow: tileRow, ldm: oc, stride: tStride, channels: rows, bias: bias, clamp: clamp,
                                            scratch: m + 16 * mStride, output + sample * outCount)
                return
            }
            // The columns of the rows of tiles (whole vectors past the last).
            let j0 = (tileRows?.lowerBound ?? 0) * g.tilesW
            let j1 = tileRows.map { $0.upperBound < g.tilesH ? $0.upperBound * g.tilesW : columns } ?? columns
            for xi in 0..<16 {
                gemmTile(i0: rows.lowerBound, i1: rows.upperBound, j0: j0, j1: j1, k: c, a: u + xi * oc * c, aRow: c, aCol: 1,
                         b: v + xi * g.winogradVStride, ldb: t, bInPlace: true, c: m + xi * mStride, ldc: t, accumulate: false)
            }
            if let pooling {
                winogradOutputPooled(m, g, oc: oc, channels: rows, bias: bias, clamp: clamp, pooling, sample * outCount, output)
            } else {
                winogradOutput(m, g, oc: oc, channels: rows, bias: bias, clamp: clamp, addend: addend, tileRows: tileRows,
                               output + sample * outCount)
            }
        }
        eachSample(batch, tasks: slots, split: split) { sample, slot in
            let tileRows = split ? tileRowCut.map { part(slot, of: f4 ? g.tiles4H : g.tilesH, cut: $0) } : nil
            run(sample, slot: slot, rows: split && tileRows == nil ? part(slot, of: oc, cut: half) : 0..<oc, tileRows: tileRows)
        }
    }
}

extension ConvGeometry {
    /// A 1×1 convolution at stride 1 without padding over planes that fill the product's panels
    /// badly (P = 4 of 32 columns, or 16, or 49 of 64: a MobileNet's last stages) multiplies the
    /// batch's pixels as one matrix (C, B·P) instead of each sample's (C, P).
    func multipliesBatch(_ batch: Int) -> Bool {
        let p = colCols, columns = (p + gemmNR - 1) / gemmNR * gemmNR
        return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && batch > 1 && 8 * (columns - p) >= columns
    }
}

/// What a convolution's backward lowers again when its forward kept no copy of the input (see
/// `Conv2D.readsKeptInput`, `Conv2D.inputNorm`).
enum LoweredInput {
    case none
    /// The input itself, a kept output.
    case kept(FloatBuffer)
    /// The output of this batch norm's last forward, recomputed.
    case norm(BatchNorm)

    var isNone: Bool {
        if case .none = self { return true }
        return false
    }

    /// Sample n of the input (shape `shape`), where backward reads its channels `channels`: where
    /// the sample starts, and the floats readable from there. A norm's output is recomputed into
    /// `temp` (a sample's floats, the caller task's own), those channels only, at their places.
    func sample(_ n: Int, channels: Range<Int>, batch: Int, shape: Shape, temp: UnsafeMutablePointer<Float>)
        -> (pointer: UnsafePointer<Float>, readable: Int) {
        switch self {
        case .kept(let x):
            return (UnsafePointer(x.pointer + n * shape.count), (batch - n) * shape.count)
        case .norm(let norm):
            norm.recomputeOutput(sample: n, channels: channels, into: temp)
            return (UnsafePointer(temp), channels.upperBound * shape.h * shape.w)
        case .none:
            return (UnsafePointer(temp), 0)   // (not asked: forward kept a copy)
        }
    }
}

/// Memory a convolution uses only within a call (see `Conv2D.scratch`).
final class ConvScratch {
    var slots = Workspace()       // Winograd: each task's bordered input, transformed input, products; its weight gradient's
                                  // slots and sums
    var transposed = Workspace()  // the weight gradient's dy transposed, (B, P, OC)
    var lowered = Workspace()     // the weight gradient's: each task's sample lowered again (readsKeptInput)
}

/// Where `rows` are cut for two tasks: half of them, rounded up to whole blocks
/// (panels, blocks of the direct kernel, pairs of rows for `rowCut`).
private func halfInBlocks(_ rows: Int, of block: Int) -> Int { (rows / 2 + block - 1) / block * block }

/// Where a product's rows (output channels) are cut for two tasks: half of them, rounded up to an
/// even count. Rows past a part's whole register blocks run in blocks of 4 and 2 (`remainderRows`),
/// so equal halves balance better than a cut at a whole block: 16 channels on AVX2's 6-row blocks
/// as 8 + 8 (6 + 2 each) instead of 12 + 4. (The same cut as before wherever MR divides the half:
/// 16, 32 or 64 channels with AVX-512's 8 rows.)
private func rowCut(_ rows: Int) -> Int { halfInBlocks(rows, of: 2) }

/// Whether a product of `rows` × `columns` on two threads leaves less work to the busier one
/// split by rows (register blocks of MR; rows past them, in blocks of 4, 2 and 1, about half as fast) than by
/// columns (panels; a last one at most V.scalarCount wide costs half of one). A 14×14 plane's 196
/// columns cut at a panel make 128 + 68 (four panels against two and a half), its rows halve
/// evenly: a quarter less on the busier thread.
private func rowSplitIsEvener(rows: Int, columns: Int) -> Bool {
    func panels(_ n: Int) -> Int {
        let rest = n % gemmNR
        return n / gemmNR * gemmNR + (rest == 0 ? 0 : rest <= V.scalarCount ? V.scalarCount : gemmNR)
    }
    func blocks(_ n: Int) -> Int { n / gemmMR * gemmMR + 2 * (n % gemmMR) }
    let cutRows = rowCut(rows), cutColumns = halfInBlocks(columns, of: gemmNR)
    let byRows = max(blocks(cutRows), blocks(rows - cutRows)) * panels(columns)
    let byColumns = blocks(rows) * max(panels(cutColumns), panels(columns - cutColumns))
    return byRows < byColumns
}

/// Runs `body(sample, task)` over a batch: with `split`, its one image on two tasks, each doing its
/// own part of it; otherwise the samples handed out to `tasks` tasks (`parallelItems`).
private func eachSample(_ batch: Int, tasks: Int, split: Bool, _ body: (_ sample: Int, _ task: Int) -> Void) {
    if split {
        ThreadPool.shared.parallelFor(2) { task in body(0, task) }
    } else {
        ThreadPool.shared.parallelItems(batch, slots: tasks, body)
    }
}

/// Task 0's or task 1's part of 0..<count, cut at `cut`.
private func part(_ task: Int, of count: Int, cut: Int) -> Range<Int> { task == 0 ? 0..<cut : cut..<count }
