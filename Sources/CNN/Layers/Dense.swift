// B = batch, I = input features, O = output features.

/// Fully connected layer: y = W x + b, W is (O, I) as in PyTorch's nn.Linear.
public final class Dense: Layer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public let outputShape: Shape
    public let weight: Parameter   // (O, I)
    public let bias: Parameter?    // (O)

    private var input: FloatBuffer?       // kept for backward: x (B, I)
    private var output = Workspace()      // (B, O)
    private var inputGrad = Workspace()   // (B, I)
    private var weightT = Workspace()     // Wᵀ (I, O), rebuilt when the weights change
    private var weightTVersion = -1

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
        let i = inputShape.count, o = outputShape.count
        if weightTVersion != weight.version || weightT.buffer.count < i * o {
            transpose(weight.value.pointer, rows: o, cols: i, into: weightT.reserve(i * o).pointer)
            weightTVersion = weight.version
        }
        let y = output.reserve(batch * o)
        for n in 0..<batch {
            if let b = bias { (y.pointer + n * o).update(from: b.value.pointer, count: o) }
            else { (y.pointer + n * o).update(repeating: 0, count: o) }
        }
        gemm(m: batch, n: o, k: i, a: x.pointer, aRow: i, aCol: 1, b: weightT.buffer.pointer, ldb: o,
             c: y.pointer, ldc: o, accumulate: true, parallel: true)
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
        let dx = inputGrad.reserve(batch * i)
        gemm(m: batch, n: i, k: o, a: dy.pointer, aRow: o, aCol: 1, b: weight.value.pointer, ldb: i,
             c: dx.pointer, ldc: i, accumulate: false, parallel: true)
        return dx
    }
}
