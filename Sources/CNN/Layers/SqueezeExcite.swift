/// Squeeze-and-excitation (Hu et al. 2018; torchvision's `SqueezeExcitation`): each channel is
/// scaled by a gate computed from the whole image's channel means,
///
///     s = mean over H, W of x          (C)
///     h = act(fc1 · s + b1)            (S), fc1 a 1×1 convolution C -> S
///     g = gate(fc2 · h + b2)           (C), fc2 a 1×1 convolution S -> C
///     y = x · g                        per channel
///
/// The tensors are named as torchvision's module names them: `fc1.weight` (S, C, 1, 1),
/// `fc1.bias`, `fc2.weight` (C, S, 1, 1), `fc2.bias`. The vectors are a few hundred floats a
/// sample: the products are plain loops; the scaling of x and its gradient run per channel plane
/// on every thread.
public final class SqueezeExcite: Layer, PlannedLayer {
    public let spec: LayerSpec
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let squeeze: Int
    public let act: ActivationKind
    public let gate: ActivationKind
    let fc1Weight: Parameter, fc1Bias: Parameter, fc2Weight: Parameter, fc2Bias: Parameter
    private var saved: FloatBuffer?
    // Per sample, kept for backward: the means s (C), fc1's output a (S) and act(a) (S), fc2's
    // output z (C), the gate g (C).
    private var means = Workspace(), hidden = Workspace(), gateInput = Workspace(), gates = Workspace()
    let buffers = LayerBuffers()  // output and input gradient (see MemoryPlan)
    private var vectorGrads = Workspace()  // dg and ds (C each), dh (S), per sample
    /// Set by the model when a 1×1 convolution follows: at inference forward computes the gates
    /// only and passes x through, and the convolution scales its input channels by them as it
    /// packs them (`gatesForNext`), so the gated copy of x is never written.
    var scalesNext = false

    /// The last inference's gates (batch × C), for the convolution after it.
    var gatesForNext: UnsafePointer<Float> { UnsafePointer(gates.buffer.pointer) }

    init(spec: LayerSpec, input: Shape, squeeze: Int, act: ActivationKind, gate: ActivationKind) {
        self.spec = spec
        inputShape = input
        self.squeeze = squeeze
        self.act = act
        self.gate = gate
        fc1Weight = Parameter(name: "fc1.weight", shape: [squeeze, input.c, 1, 1], trainable: true)
        fc1Bias = Parameter(name: "fc1.bias", shape: [squeeze], trainable: true)
        fc2Weight = Parameter(name: "fc2.weight", shape: [input.c, squeeze, 1, 1], trainable: true)
        fc2Bias = Parameter(name: "fc2.bias", shape: [input.c], trainable: true)
    }

    public var parameters: [Parameter] { [fc1Weight, fc1Bias, fc2Weight, fc2Bias] }
    public var flops: Int { 2 * inputShape.count + 4 * inputShape.c * squeeze }

    /// fc1 by He initialization when its activation is ReLU-like (Glorot otherwise), fc2 by
    /// Glorot; biases zero.
    func initialize(rng: inout Random) {
        let c = inputShape.c, s = squeeze
        let w1 = fc1Weight.value, w2 = fc2Weight.value
        switch act {
        case .relu, .relu6, .hardSwish, .silu, .gelu:
            let std = (2 / Float(c)).squareRoot()
            for j in 0..<w1.count { w1[j] = rng.normal() * std }
        default:
            let limit = (6 / Float(c + s)).squareRoot()
            for j in 0..<w1.count { w1[j] = (rng.uniform() * 2 - 1) * limit }
        }
        let limit = (6 / Float(c + s)).squareRoot()
        for j in 0..<w2.count { w2[j] = (rng.uniform() * 2 - 1) * limit }
        for p in parameters {
            if p.name.hasSuffix("bias") { p.value.fill(0) }
            p.version += 1
        }
    }

    public func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer {
        let c = inputShape.c, s = squeeze, hw = inputShape.h * inputShape.w
        let xp = x.pointer, y = scalesNext && !training ? x : buffers.output(batch * inputShape.count, input: x, training: training)
        let yp = y.pointer
        let m = means.reserve(batch * c).pointer, a = hidden.reserve(2 * batch * s).pointer, h = a + batch * s
        let z = gateInput.reserve(batch * c).pointer, g = gates.reserve(batch * c).pointer
        let w1 = fc1Weight.value.pointer, b1 = fc1Bias.value.pointer
        let w2 = fc2Weight.value.pointer, b2 = fc2Bias.value.pointer
        let scale = 1 / Float(hw)
        parallelChunks(batch * c, chunk: max(1, 16384 / hw)) { lo, hi in
            for plane in lo..<hi {
                let src = xp + plane * hw
                m[plane] = sum(src, hw) * scale
            }
        }
        for n in 0..<batch {
            let mn = m + n * c, an = a + n * s, hn = h + n * s, zn = z + n * c, gn = g + n * c
            // Vector dot products: the scalar sums were one chain of additions per output, a
            // tenth of a millisecond for EfficientNet-B0's 1,152 channels.
            for r in 0..<s {
                let acc = b1[r] + dot(c, w1 + r * c, mn)
                an[r] = acc
                hn[r] = Activation.value(act, acc)
            }
            for k in 0..<c {
                let acc = b2[k] + dot(s, w2 + k * s, hn)
                zn[k] = acc
                gn[k] = Activation.value(gate, acc)
            }
        }
        saved = x
        if scalesNext && !training { return x }
        parallelChunks(batch * c, chunk: max(1, 16384 / hw)) { lo, hi in
            for plane in lo..<hi {
                let src = xp + plane * hw, dst = yp + plane * hw, gate = g[plane]
                for i in 0..<hw { dst[i] = src[i] * gate }
            }
        }
        return y
    }

    public func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer? {
        guard let xp = saved?.pointer else { return nil }
        let c = inputShape.c, s = squeeze, hw = inputShape.h * inputShape.w
        let dyp = dy.pointer
        let m = means.buffer.pointer, a = hidden.buffer.pointer, h = a + batch * s, z = gateInput.buffer.pointer, g = gates.buffer.pointer
        let w1 = fc1Weight.value.pointer, w2 = fc2Weight.value.pointer
        let vectors = vectorGrads.reserve(batch * (2 * c + s)).pointer
        let dz = vectors, ds = vectors + batch * c, da = vectors + 2 * batch * c
        // dg = Σ dy·x over each plane, then through the gate: dz = dg · gate'(z).
        parallelChunks(batch * c, chunk: max(1, 16384 / hw)) { lo, hi in
            for plane in lo..<hi {
                let src = xp + plane * hw, d = dyp + plane * hw
                dz[plane] = dot(hw, d, src) * Activation.derivative(gate, z[plane])
            }
        }
        let dw1 = fc1Weight.grad?.pointer, db1 = fc1Bias.grad?.pointer
        let dw2 = fc2Weight.grad?.pointer, db2 = fc2Bias.grad?.pointer
        for n in 0..<batch {
            let dzn = dz + n * c, an = a + n * s, hn = h + n * s, dan = da + n * s, mn = m + n * c, dsn = ds + n * c
            // fc2: its gradients, and dh = fc2ᵀ dz, then da = dh · act'(a).
            for k in 0..<c {
                db2?[k] += dzn[k]
                if let dw2 { for r in 0..<s { dw2[k * s + r] += dzn[k] * hn[r] } }
            }
            for r in 0..<s {
                var acc: Float = 0
                for k in 0..<c { acc += w2[k * s + r] * dzn[k] }
                dan[r] = acc * Activation.derivative(act, an[r])
            }
            // fc1: its gradients, and ds = fc1ᵀ da.
            for r in 0..<s {
                db1?[r] += dan[r]
                if let dw1 { for k in 0..<c { dw1[r * c + k] += dan[r] * mn[k] } }
            }
            for k in 0..<c {
                var acc: Float = 0
                for r in 0..<s { acc += w1[r * c + k] * dan[r] }
                dsn[k] = acc
            }
        }
        guard needInputGradient else { return nil }
        // dx = dy · g + ds / (H·W): the scaling's gradient and the mean's.
        let dx = buffers.inputGradient(batch * inputShape.count, dy: dy), dxp = dx.pointer
        let scale = 1 / Float(hw)
        parallelChunks(batch * c, chunk: max(1, 16384 / hw)) { lo, hi in
            for plane in lo..<hi {
                let d = dyp + plane * hw, dst = dxp + plane * hw, gate = g[plane], mean = ds[plane] * scale
                for i in 0..<hw { dst[i] = d[i] * gate + mean }
            }
        }
        return dx
    }
}
