/// A tensor the model file stores: a trainable parameter (with its gradient) or a buffer such as
/// batch norm's running mean (no gradient).
public final class Parameter {
    /// The name within its layer, as in PyTorch: "weight", "bias", "running_mean", "running_var".
    public let name: String
    public let shape: [Int]
    public let count: Int
    public let trainable: Bool
    /// What the values start as (batch norm's scale and running variance start at 1).
    let initialValue: Float
    /// The values; empty until `allocate()`, which the model calls once it has checked the sizes
    /// of all its layers (a layer is built from shapes alone and takes no memory).
    public private(set) var value = FloatBuffer(count: 0)
    /// Gradient of the loss, summed by `backward`; nil for buffers that are not trained.
    public private(set) var grad: FloatBuffer?
    /// Bumped whenever `value` changes (optimizer step, load), so layers can cache derived data.
    public var version = 0

    init(name: String, shape: [Int], trainable: Bool, initialValue: Float = 0) {
        self.name = name
        self.shape = shape
        self.trainable = trainable
        self.initialValue = initialValue
        count = shape.reduce(1, *)
    }

    /// Floats this parameter takes once allocated (values, and the gradient when trained).
    var allocationCount: Int { trainable ? 2 * count : count }

    /// Takes the values' memory; `fullName` (the state-dict name) is for the error message. The
    /// gradient is a part of the model's block of gradients (`Model.allocateParameters`).
    func allocate(fullName: String) throws {
        guard value.count != count else { return }
        value = try FloatBuffer(count: count, for: "tensor \(fullName) of \(count) values")
        if initialValue != 0 { value.fill(initialValue) }
    }

    func attachGradient(_ g: FloatBuffer) { grad = g }
}

/// One layer of a sequential network, forward and backward side by side.
///
/// Buffers hold a whole batch, NCHW: `batch` samples of `inputShape.count` floats each.
/// `forward` keeps exactly what `backward` needs. `backward` adds (+=) into the gradients of the
/// layer's parameters and returns the gradient with respect to its input (or nil when the caller
/// says it is not needed, as for the first layer). The returned buffers belong to the layer and
/// stay valid until its next call.
public protocol Layer: AnyObject {
    var spec: LayerSpec { get }
    var inputShape: Shape { get }
    var outputShape: Shape { get }
    /// The tensors of the model file, in PyTorch's state-dict order.
    var parameters: [Parameter] { get }
    /// Forward floating-point operations per sample (a multiply-add counts 2).
    var flops: Int { get }
    func forward(_ x: FloatBuffer, batch: Int, training: Bool, rng: inout Random) -> FloatBuffer
    func backward(_ dy: FloatBuffer, batch: Int, needInputGradient: Bool) -> FloatBuffer?
}

extension Layer {
    public var parameters: [Parameter] { [] }
}

/// What the model's memory plan needs of a layer (every layer of the engine is one).
protocol PlannedLayer: Layer {
    /// Its output and input-gradient buffers (see MemoryPlan).
    var buffers: LayerBuffers { get }
    /// What its backward reads of its forward in training.
    var backwardReads: BackwardReads { get }
}

extension PlannedLayer {
    /// The input, unless the layer says otherwise.
    var backwardReads: BackwardReads { .input }
}

/// Runs `body(first, end)` over fixed chunks of `count` items, in parallel on the shared pool.
/// The chunking depends only on `count` and `chunk`, never on the number of threads.
@inline(__always)
func parallelChunks(_ count: Int, chunk: Int, _ body: (Int, Int) -> Void) {
    let chunk = max(1, chunk)
    let tasks = (count + chunk - 1) / chunk
    if tasks <= 1 {
        body(0, count)
        return
    }
    ThreadPool.shared.parallelFor(tasks) { t in body(t * chunk, min(count, (t + 1) * chunk)) }
}
