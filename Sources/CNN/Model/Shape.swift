/// The shape of one sample (the batch dimension is kept apart): channels, height, width.
/// `flat` marks the output of `flatten` or `dense`, a vector of `c` features (`h == w == 1`).
public struct Shape: Equatable, CustomStringConvertible, Sendable {
    public var c: Int
    public var h: Int
    public var w: Int
    public var flat: Bool

    public init(c: Int, h: Int, w: Int) {
        self.c = c; self.h = h; self.w = w; flat = false
    }

    public init(features: Int) {
        c = features; h = 1; w = 1; flat = true
    }

    public var count: Int { c * h * w }
    public var description: String { flat ? "[\(c)]" : "[\(c), \(h), \(w)]" }
}
