// The SIMD helpers every kernel uses: the vector type of the kernel level this copy of the engine
// is compiled for, multiply-add, unaligned loads and stores, and ReLU as the layers compute it.
// Build flags (see Package.swift): CNN_AVX512 selects 16-wide vectors, CNN_FMA fused multiply-adds
// (without a target CPU, Swift would call libm's fmaf for addingProduct instead).

#if CNN_AVX512
typealias V = SIMD16<Float>
/// Two vectors' worth, split into even and odd lanes by `evenHalf` / `oddHalf`.
typealias VPair = SIMD32<Float>
#else
typealias V = SIMD8<Float>
typealias VPair = SIMD16<Float>
#endif
typealias V16 = SIMD16<Float>

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

/// max(x, 0) as the ReLU layer computes it (NaN stays NaN, so divergence is still seen).
@inline(__always)
func relu(_ x: V) -> V { x.replacing(with: 0, where: x .< 0) }

/// relu(_:) under another name, for functions whose `relu` parameter hides it (the engine cannot
/// name itself as `CNN.relu`: it is compiled as several modules, one per kernel level).
@inline(__always)
func rectify(_ x: V) -> V { relu(x) }

@inline(__always)
func reluIf(_ apply: Bool, _ x: Float) -> Float { apply && x < 0 ? 0 : x }
