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
    /// Random erasing (Zhong et al. 2017, torchvision's RandomErasing) with this probability: a
    /// rectangle of 2-33 % of the image, aspect ratio 0.3-3.3, is filled with the image's mean
    /// per channel (about 0 once normalized, like torchvision's value=0 after Normalize).
    public var erase: Float = 0
    public init() {}

    public var isIdentity: Bool { !flip && translate == 0 && brightness == 0 && contrast == 0 && erase == 0 }

    public func validate() throws {
        guard translate >= 0, translate <= 1024 else { throw CNNError(.invalidArgument, "translate must be from 0 to 1024 pixels, not \(translate)") }
        guard brightness.isFinite, brightness >= 0, brightness <= 1 else { throw CNNError(.invalidArgument, "brightness must be in [0, 1]") }
        guard contrast.isFinite, contrast >= 0, contrast <= 1 else { throw CNNError(.invalidArgument, "contrast must be in [0, 1]") }
        guard erase.isFinite, erase >= 0, erase <= 1 else { throw CNNError(.invalidArgument, "erase must be a probability in [0, 1]") }
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
        if erase > 0 { self.erase(x, shape: shape, rng: &rng) }
    }

    /// Random erasing, torchvision's way: up to 10 tries at a rectangle that fits. Its numbers are
    /// drawn after the others (so runs without it are unchanged), always 41 of them.
    private func erase(_ x: UnsafeMutablePointer<Float>, shape: Shape, rng: inout Random) {
        let h = shape.h, w = shape.w, area = Float(h * w)
        let apply = rng.uniform() < erase
        var box: (y: Int, x: Int, h: Int, w: Int)? = nil
        for _ in 0..<10 {
            let target = area * (0.02 + rng.uniform() * (0.33 - 0.02))
            let aspect = _expf(_logf(0.3) + rng.uniform() * (_logf(3.3) - _logf(0.3)))
            let u = rng.uniform(), v = rng.uniform()
            let eh = Int((target * aspect).squareRoot().rounded()), ew = Int((target / aspect).squareRoot().rounded())
            if box == nil, eh >= 1, ew >= 1, eh < h, ew < w {
                box = (min(h - eh, Int(u * Float(h - eh + 1))), min(w - ew, Int(v * Float(w - ew + 1))), eh, ew)
            }
        }
        guard apply, let box else { return }
        for c in 0..<shape.c {
            let plane = x + c * h * w
            var mean: Float = 0
            for i in 0..<(h * w) { mean += plane[i] }
            mean /= area
            for yy in box.y..<(box.y + box.h) { (plane + yy * w + box.x).update(repeating: mean, count: box.w) }
        }
    }
}
