/// Random changes to training images, drawn from the run's seed (never applied at evaluation).
public struct Augmentation: Equatable, Sendable {
    /// Mirror left-right with probability 1/2.
    public var flip = false
    /// Pad by this many pixels (black) and crop back at a random offset: a random translation.
    public var translate = 0
    /// Add a uniform random offset in ±brightness to every pixel ([0, 1] scale).
    public var brightness: Float = 0
    /// Scale the distance to the image's mean by a uniform random factor in 1 ± contrast.
    public var contrast: Float = 0
    public init() {}

    public var isIdentity: Bool { !flip && translate == 0 && brightness == 0 && contrast == 0 }

    public func validate() throws {
        guard translate >= 0, translate <= 1024 else { throw CNNError(.invalidArgument, "translate must be from 0 to 1024 pixels, not \(translate)") }
        guard brightness.isFinite, brightness >= 0, brightness <= 1 else { throw CNNError(.invalidArgument, "brightness must be in [0, 1]") }
        guard contrast.isFinite, contrast >= 0, contrast <= 1 else { throw CNNError(.invalidArgument, "contrast must be in [0, 1]") }
    }

    /// Applies the augmentation to one (C, H, W) sample in the [0, 1] scale, in place.
    /// `scratch` holds at least shape.count floats.
    func apply(_ x: UnsafeMutablePointer<Float>, shape: Shape, rng: inout Random, scratch: inout [Float]) {
        let c = shape.c, h = shape.h, w = shape.w, count = shape.count
        // Draw every number first, in a fixed order, whatever is enabled later.
        let doFlip = rng.below(2) == 1
        let dx = translate > 0 ? rng.below(2 * translate + 1) - translate : 0
        let dy = translate > 0 ? rng.below(2 * translate + 1) - translate : 0
        let b = (rng.uniform() * 2 - 1) * brightness
        let k = 1 + (rng.uniform() * 2 - 1) * contrast
        if (flip && doFlip) || dx != 0 || dy != 0 {
            scratch.withUnsafeMutableBufferPointer { s in
                let src = s.baseAddress!
                src.update(from: x, count: count)
                for ch in 0..<c {
                    for y in 0..<h {
                        let sy = y + dy
                        for xx in 0..<w {
                            var sx = xx + dx
                            if flip && doFlip { sx = w - 1 - xx + dx }
                            x[(ch * h + y) * w + xx] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[(ch * h + sy) * w + sx] : 0
                        }
                    }
                }
            }
        }
        if brightness > 0 || contrast > 0 {
            var mean: Float = 0
            for i in 0..<count { mean += x[i] }
            mean /= Float(count)
            for i in 0..<count { x[i] = min(1, max(0, (x[i] - mean) * k + mean + b)) }
        }
    }
}
