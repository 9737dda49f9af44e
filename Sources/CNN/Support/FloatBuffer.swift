#if canImport(Glibc)
import Glibc
#endif

/// A fixed-size block of Float32 owned by one object, handed between layers by reference.
///
/// Layers exchange activations and gradients through these instead of `[Float]`: a Swift array
/// shared between the layer that writes it and the layer that keeps it for backward would be
/// copied on the next write (copy-on-write), an allocation in the hot loop. Memory is zeroed.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// What owns the memory when this buffer does not, kept alive by it: the buffer it is a part
    /// of (`init(partOf:offset:count:)`) or a mapping (`init(borrowing:count:owner:)`); nil when
    /// this buffer owns its memory.
    private let whole: AnyObject?

    /// A buffer whose size was planned and checked against the limits (workspaces): a refusal by
    /// the system here is fatal, as for any Swift allocation.
    public init(count: Int) {
        self.count = max(count, 0)
        whole = nil
        guard let raw = calloc(max(count, 1), MemoryLayout<Float>.stride) else {
            fatalError("SwiftCNN: the system refused \(count) floats of planned working memory")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// A large buffer (parameters, optimizer state, batches): over the memory limit or refused by
    /// the system, an `outOfMemory` error that names `what`.
    public init(count: Int, for what: String) throws {
        self.count = max(count, 0)
        whole = nil
        pointer = try Memory.allocate(count, of: Float.self, for: what)
    }

    /// `count` floats of `whole` from `offset` (the caller checks the range), sharing its memory.
    init(partOf whole: FloatBuffer, offset: Int, count: Int) {
        self.whole = whole
        self.count = count
        pointer = whole.pointer + offset
    }

    /// `count` floats at `pointer`, memory that `owner` holds (and releases when it goes).
    init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        whole = owner
        self.count = count
        self.pointer = pointer
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        for i in 0..<values.count { pointer[i] = values[i] }
    }

    deinit { if whole == nil { free(pointer) } }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

    public func copy(from other: FloatBuffer) {
        pointer.update(from: other.pointer, count: min(count, other.count))
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    /// True when every value is finite (no NaN, no infinity).
    public var allFinite: Bool {
        // NaN or inf times 0 is NaN; a vector of lanes at a time (the scalar chain of adds cost
        // 2 % of a training step, where the gradients are checked).
        var lanes = SIMD16<Float>()
        var i = 0
        while i + 16 <= count {
            lanes += UnsafeRawPointer(pointer + i).loadUnaligned(as: SIMD16<Float>.self) * 0
            i += 16
        }
        var sum = lanes.sum()
        while i < count { sum += pointer[i] * 0; i += 1 }
        return !sum.isNaN
    }
}

/// A buffer that grows to the largest size asked of it and is then reused (planned memory).
struct Workspace {
    private(set) var buffer = FloatBuffer(count: 0)
    mutating func reserve(_ count: Int) -> FloatBuffer {
        if buffer.count < count { buffer = FloatBuffer(count: count) }
        return buffer
    }
}

/// Values of another type planned like a Workspace: grown to the largest size asked of it, then
/// reused. The contents are whatever was last written.
final class ElementWorkspace<Element> {
    private(set) var pointer = UnsafeMutablePointer<Element>.allocate(capacity: 1)
    private var capacity = 1

    func reserve(_ count: Int) -> UnsafeMutablePointer<Element> {
        if capacity < count {
            pointer.deallocate()
            pointer = .allocate(capacity: count)
            capacity = count
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}

/// Int32 indices (max pooling's argmax).
typealias IndexWorkspace = ElementWorkspace<Int32>
/// Sums in Double (the channels-last depthwise weight gradient's).
typealias DoubleWorkspace = ElementWorkspace<Double>
