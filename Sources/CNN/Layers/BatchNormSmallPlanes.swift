// Batch norm over planes of 1, 2 or 4 values: after a dense layer, and in the last stages of a
// MobileNet or EfficientNet at small inputs (4×4 and 2×2). BatchNorm.swift's loops go a plane at a
// time, and on planes this small they spend their time on each plane's bookkeeping, not on its
// values (6.7 ns a value at 2×2 against 0.7 ns at 16×16, training forward and backward). Here a
// group of V.scalarCount channels goes together, one vector lane per channel:
// - the sums deinterleave the group's planes (value k of every plane into one vector:
//   `narrowColumns`) and add a plane's values in order from zero, then the plane's sum into the
//   channel's Double total in sample order, exactly as DoubleSums adds a plane shorter than its
//   8-lane runs;
// - the element-wise passes read the group's planes as they lie, with their channels' parameters
//   written out once per call, one per value (`spread`), and read as the planes are.
// Every value sees the same arithmetic as in the per-plane loops, so the results are the same bits
// (KernelTests.batchNormSmallPlanes compares them). The sums are specialized for s = 1, 2, 4, so
// that the shuffles' lane indices are constants (one vpermt2ps each on AVX-512).

extension BatchNorm {
    /// Channels in a group: one per vector lane.
    static var group: Int { V.scalarCount }

    /// The end of the channels in c0..<c1 that go in groups, for planes of s values: c0 when planes
    /// of s values go a plane at a time.
    func groupedEnd(_ c0: Int, _ c1: Int, planes s: Int) -> Int {
        guard groupsSmallPlanes, s == 1 || s == 2 || s == 4 else { return c0 }
        return c0 + (c1 - c0) / BatchNorm.group * BatchNorm.group
    }

    /// Adds each channel's plane sums over the batch (of the values, or with `mean` of their squared
    /// distances from it) for the groups of channels in `range`, in sample order. The totals must
    /// be zero before (each channel's sum is made in registers and added to its zero total).
    static func groupSums(_ x: UnsafePointer<Float>, batch: Int, channels c: Int, plane s: Int, _ range: Range<Int>,
                          minus mean: UnsafePointer<Float>?, into sums: UnsafeMutablePointer<DoubleSums>) {
        switch s {
        case 1: groupSums(x, batch, c, 1, range, mean, sums)
        case 2: groupSums(x, batch, c, 2, range, mean, sums)
        default: groupSums(x, batch, c, 4, range, mean, sums)
        }
    }

    @inline(__always)
    private static func groupSums(_ x: UnsafePointer<Float>, _ batch: Int, _ c: Int, _ s: Int, _ range: Range<Int>,
                                  _ mean: UnsafePointer<Float>?, _ sums: UnsafeMutablePointer<DoubleSums>) {
        for g in stride(from: range.lowerBound, to: range.upperBound, by: group) {
            let m = mean.map { load($0 + g) } ?? V()
            var total = Totals()
            for n in 0..<batch {
                let v = narrowColumns(x + (n * c + g) * s, s)
                // Value k's term: the value, or its squared distance from the mean.
                @inline(__always) func term(_ v: V) -> V { mean != nil ? (v - m) * (v - m) : v }
                var t = V() + term(v.0)
                if s > 1 { t += term(v.1) }
                if s > 2 { t += term(v.2); t += term(v.3) }
                total.add(t)
            }
            total.add(to: sums + g)
        }
    }

    /// Backward's sums of dy and dy · x̂ (DoubleSums.add(_:timesNormalized:...)) for the groups of
    /// channels in `range`, with `mask` (γ, β, ReLU6) for a fused activation. The totals must be
    /// zero before.
    static func groupGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, batch: Int, channels c: Int, plane s: Int,
                                  _ range: Range<Int>, mean: UnsafePointer<Float>, inv: UnsafePointer<Float>,
                                  mask: (UnsafePointer<Float>, UnsafePointer<Float>, Bool)?,
                                  _ sumDy: UnsafeMutablePointer<DoubleSums>, _ sumDyXhat: UnsafeMutablePointer<DoubleSums>) {
        switch s {
        case 1: groupGradientSums(dy, x, batch, c, 1, range, mean, inv, mask, sumDy, sumDyXhat)
        case 2: groupGradientSums(dy, x, batch, c, 2, range, mean, inv, mask, sumDy, sumDyXhat)
        default: groupGradientSums(dy, x, batch, c, 4, range, mean, inv, mask, sumDy, sumDyXhat)
        }
    }

    @inline(__always)
    private static func groupGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ batch: Int, _ c: Int, _ s: Int,
                                          _ range: Range<Int>, _ mean: UnsafePointer<Float>, _ inv: UnsafePointer<Float>,
                                          _ mask: (UnsafePointer<Float>, UnsafePointer<Float>, Bool)?,
                                          _ sumDy: UnsafeMutablePointer<DoubleSums>, _ sumDyXhat: UnsafeMutablePointer<DoubleSums>) {
        for g in stride(from: range.lowerBound, to: range.upperBound, by: group) {
            let m = load(mean + g), iv = load(inv + g)
            let gamma = mask.map { load($0.0 + g) } ?? V(), beta = mask.map { load($0.1 + g) } ?? V()
            let six = mask?.2 ?? false
            var totalDy = Totals(), totalDyXhat = Totals()
            for n in 0..<batch {
                let offset = (n * c + g) * s
                let d = narrowColumns(dy + offset, s), xs = narrowColumns(x + offset, s)
                var a = V(), b = V()
                // Value k's terms: dy (0 where a fused activation passed none) and dy · x̂.
                @inline(__always) func add(_ dyv: V, _ xv: V) {
                    let xh = (xv - m) * iv
                    let gv = mask != nil ? passed(dyv, xh: xh, gamma: gamma, beta: beta, six: six) : dyv
                    a += gv
                    b += gv * xh
                }
                add(d.0, xs.0)
                if s > 1 { add(d.1, xs.1) }
                if s > 2 { add(d.2, xs.2); add(d.3, xs.3) }
                totalDy.add(a)
                totalDyXhat.add(b)
            }
            totalDy.add(to: sumDy + g)
            totalDyXhat.add(to: sumDyXhat + g)
        }
    }

    /// Writes each channel's value in `range` once per value of its plane of s values, at
    /// spread[ch·s + k] (the element-wise passes read them as they read the planes).
    static func spread(_ values: UnsafePointer<Float>, plane s: Int, _ range: Range<Int>, into spread: UnsafeMutablePointer<Float>) {
        for ch in range {
            for k in 0..<s { spread[ch * s + k] = values[ch] }
        }
    }

    /// y = γ x̂ + β (then the fused ReLU or ReLU6) for the groups of channels in `range`, as
    /// `normalize`, with the mean, 1/σ, γ and β spread by `spread`, each array after the other
    /// (c·s floats each).
    static func groupNormalize(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels c: Int, plane s: Int,
                               _ range: Range<Int>, spread p: UnsafePointer<Float>, activation: Bool, six: Bool) {
        let cs = c * s
        withClamp(activation: activation, six: six) { clamp in
            for i in stride(from: range.lowerBound * s, to: range.upperBound * s, by: group) {
                let m = load(p + i), iv = load(p + cs + i), ga = load(p + 2 * cs + i), be = load(p + 3 * cs + i)
                for n in 0..<batch {
                    let o = n * cs + i
                    store(clamp.apply(ga * ((load(x + o) - m) * iv) + be), y + o)
                }
            }
        }
    }

    /// dx = k · (g - meanDy - x̂ · meanDyXhat) for the groups of channels in `range`, as
    /// `inputGradient`, with the mean, 1/σ, k, meanDy, meanDyXhat, and for `mask` (ReLU6) γ and β,
    /// spread by `spread`, each array after the other (c·s floats each).
    static func groupInputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                   batch: Int, channels c: Int, plane s: Int, _ range: Range<Int>,
                                   spread p: UnsafePointer<Float>, mask six: Bool?) {
        let cs = c * s
        for i in stride(from: range.lowerBound * s, to: range.upperBound * s, by: group) {
            let m = load(p + i), iv = load(p + cs + i), k = load(p + 2 * cs + i)
            let meanDy = load(p + 3 * cs + i), meanDyXhat = load(p + 4 * cs + i)
            let gamma = six != nil ? load(p + 5 * cs + i) : V(), beta = six != nil ? load(p + 6 * cs + i) : V()
            for n in 0..<batch {
                let o = n * cs + i
                let xh = (load(x + o) - m) * iv
                var gv = load(dy + o)
                if let six { gv = passed(gv, xh: xh, gamma: gamma, beta: beta, six: six) }
                store(k * (gv - meanDy - xh * meanDyXhat), dx + o)
            }
        }
    }
}

/// A group's channel totals in Double, in registers: each lane's float sums added in order.
private struct Totals {
    var low = VD(), high = VD()

    @inline(__always)
    mutating func add(_ t: V) {
        let (l, h) = widened(t)
        low += l
        high += h
    }

    /// Adds each lane's total to its channel's zero total: 0 + t is t (the lanes start at +0 and
    /// never become -0), so the channel's total is the same sum DoubleSums makes term by term.
    @inline(__always)
    func add(to sums: UnsafeMutablePointer<DoubleSums>) {
        for l in 0..<VD.scalarCount {
            sums[l].add(total: low[l])
            sums[VD.scalarCount + l].add(total: high[l])
        }
    }
}
