// The SIMD helpers every kernel uses: the vector type of the kernel level this copy of the engine
// is compiled for, multiply-add, unaligned loads and stores, and ReLU as the layers compute it.
// Build flags (see Package.swift): CNN_AVX512 selects 16-wide vectors, CNN_FMA fused multiply-adds
// (without a target CPU, Swift would call libm's fmaf for addingProduct instead).

import CCPUID

#if CNN_AVX512
typealias V = SIMD16<Float>
#else
typealias V = SIMD8<Float>
#endif
typealias V16 = SIMD16<Float>

/// v, computed but unseen by the optimizer (cnncpu_opaque8): a barrier between arithmetic and the
/// lane shuffles after it, which LLVM would otherwise merge (see Winograd4.swift). No instruction.
@_transparent
func opaque(_ v: V) -> V {
    #if CNN_AVX512
    return cnncpu_opaque16(v)
    #else
    return cnncpu_opaque8(v)
    #endif
}

/// Row r of a matrix whose rows are `rowStride` apart, as a pointer of its own (cnncpu_opaque_pointer):
/// the register blocks' rows of A, each stepped along independently. No instruction.
@_transparent
func rowPointer(_ a: UnsafePointer<Float>, _ r: Int, _ rowStride: Int) -> UnsafePointer<Float> {
    cnncpu_opaque_pointer(a + r * rowStride)
}

@inline(__always)
func fmadd(_ acc: V, _ a: V, _ b: V) -> V {
    #if CNN_FMA
    return acc.addingProduct(a, b)
    #else
    return acc + a * b
    #endif
}

@inline(__always)
func fmadd(_ acc: Float, _ a: Float, _ b: Float) -> Float {
    #if CNN_FMA
    return acc.addingProduct(a, b)
    #else
    return acc + a * b
    #endif
}

/// V.scalarCount floats from `p`, which need not be aligned.
@inline(__always)
func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

@inline(__always)
func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

/// Half a vector's lanes in Double.
#if CNN_AVX512
typealias VD = SIMD8<Double>
#else
typealias VD = SIMD4<Double>
#endif

/// The lanes of v in Double, the first half's and the second's. Lane by lane: SIMD's own
/// conversion was left a generic call in some loops (this way it is vcvtps2pd).
@inline(__always)
func widened(_ v: V) -> (VD, VD) {
    var low = VD(), high = VD()
    for i in 0..<VD.scalarCount {
        low[i] = Double(v[i])
        high[i] = Double(v[VD.scalarCount + i])
    }
    return (low, high)
}

/// p[i] += Double(v[i]) for every lane.
@inline(__always)
func addWidened(_ v: V, into p: UnsafeMutablePointer<Double>) {
    let (low, high) = widened(v), raw = UnsafeMutableRawPointer(p), half = MemoryLayout<VD>.size
    raw.storeBytes(of: raw.loadUnaligned(as: VD.self) + low, as: VD.self)
    raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: half, as: VD.self) + high, toByteOffset: half, as: VD.self)
}

/// max(x, 0) as the ReLU layer computes it (NaN stays NaN, so divergence is still seen).
@inline(__always)
func relu(_ x: V) -> V { x.replacing(with: 0, where: x .< 0) }

/// relu(_:) under another name, for functions whose `relu` parameter hides it (the engine cannot
/// name itself as `CNN.relu`: it is compiled as several modules, one per kernel level).
@inline(__always)
func rectify(_ x: V) -> V { relu(x) }

@inline(__always)
func reluIf(_ apply: Bool, _ x: Float) -> Float { apply && x < 0 ? 0 : x }

/// The activation a convolution applies as it writes its output: none, ReLU, or ReLU6 (a batch
/// norm and the ReLU or ReLU6 after it folded in at inference), or SiLU at inference only. The
/// same operations, so the same bits, as the activation layers.
enum Clamp {
    case none, relu, relu6, silu

    /// The clamp that activation `kind` is in training and at inference (.none for any other, or
    /// for none).
    init(_ kind: ActivationKind?) {
        self = kind == .relu ? .relu : kind == .relu6 ? .relu6 : .none
    }

    /// The clamp that activation `kind` is at inference: also SiLU, whose backward needs its input
    /// (the convolution's output, which a fused write would not keep), so training runs it alone.
    static func atInference(_ kind: ActivationKind?) -> Clamp {
        kind == .silu ? .silu : Clamp(kind)
    }

    @_transparent   // @inline(__always) left it out of line in the GEMM's output write
    func apply(_ x: V) -> V {
        switch self {
        case .none: return x
        case .relu: return rectify(x)
        case .relu6: return ReLU6Function.apply(x)
        case .silu: return SiLUFunction.apply(x)
        }
    }

    @_transparent
    func apply(_ x: Float) -> Float {
        switch self {
        case .none: return x
        case .relu: return reluIf(true, x)
        case .relu6: return x < 0 ? 0 : x > 6 ? 6 : x
        case .silu: return SiLUFunction.apply(V(repeating: x))[0]  // as the layer computes a tail
        }
    }
}

#if CNN_AVX512
typealias VInt = SIMD16<Int32>
#else
typealias VInt = SIMD8<Int32>
#endif

/// eˣ of every lane, within 3 ulp of the exact value (KernelTests.vectorExp; Cephes' expf:
/// x = n·ln 2 + r, |r| ≤ ln 2 / 2, eʳ by a degree-5 polynomial, 2ⁿ built in exponent bits). Above
/// 88.72 it is +inf, below -87.34 zero (where expf gives denormals), NaN stays NaN. The
/// activations use it instead of calling expf per element (SiLU with expf was 42 % of
/// EfficientNet-B0's inference); a tail shorter than a vector goes through it padded, so every
/// element is computed the same way wherever it falls.
@_transparent  // @inline(__always) left it a call from the activations' specialized loops
func exp(_ x: V) -> V {
    let hi: Float = 88.72283, lo: Float = -87.33654
    let xc = x.replacing(with: hi, where: x .> hi).replacing(with: lo, where: x .< lo)
    // n = round(x / ln 2): adding 1.5·2²³ rounds to an integer held in the low mantissa bits.
    let magic: Float = 12_582_912
    let t = fmadd(V(repeating: magic), xc, V(repeating: 1.44269504088896341))
    let n = t - magic
    // r = x - n·ln 2, ln 2 in two parts so that n·ln 2's first part is exact.
    let r = fmadd(fmadd(xc, n, V(repeating: -0.693359375)), n, V(repeating: 2.12194440e-4))
    var p = V(repeating: 1.9875691500e-4)
    p = fmadd(V(repeating: 1.3981999507e-3), p, r)
    p = fmadd(V(repeating: 8.3334519073e-3), p, r)
    p = fmadd(V(repeating: 4.1665795894e-2), p, r)
    p = fmadd(V(repeating: 1.6666665459e-1), p, r)
    p = fmadd(V(repeating: 5.0000001201e-1), p, r)
    let e = fmadd(r + 1, p, r * r)
    // 2ⁿ as 2^(n/2) · 2^(n - n/2), each a valid exponent for n in -126...128.
    let k = unsafeBitCast(t, to: VInt.self) &- 0x4B40_0000
    let half = k &>> 1
    let y = e * unsafeBitCast((half &+ 127) &<< 23, to: V.self) * unsafeBitCast((k &- half &+ 127) &<< 23, to: V.self)
    return y.replacing(with: .infinity, where: x .> hi).replacing(with: 0, where: x .< lo)
}

/// Σ_k a[k] · b[k]: whole vectors, then the rest one by one.
@inline(__always)
func dot(_ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> Float {
    let w = V.scalarCount
    var acc = V()
    var t = 0
    while t + w <= k {
        acc = fmadd(acc, load(a + t), load(b + t))
        t += w
    }
    var s = acc.sum()
    while t < k {
        s = fmadd(s, a[t], b[t])
        t += 1
    }
    return s
}

/// Σ p[i] over n values: whole vectors, then the rest one by one.
@inline(__always)
func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    let w = V.scalarCount
    var acc = V()
    var t = 0
    while t + w <= n { acc += load(p + t); t += w }
    var s = acc.sum()
    while t < n { s += p[t]; t += 1 }
    return s
}
