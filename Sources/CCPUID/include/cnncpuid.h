/* What the processor and the operating system support, read once from CPUID and XGETBV: the facts
 * the kernel dispatch (Sources/CNNDispatch) needs to know which compiled copy of the engine may run. */
#ifndef CNN_CPUID_H
#define CNN_CPUID_H

enum {
    CNNCPU_V2 = 1 << 0,      /* x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF */
    CNNCPU_V3 = 1 << 1,      /* x86-64-v3: AVX, AVX2, FMA, F16C, BMI1, BMI2, LZCNT, MOVBE, and the OS saves YMM */
    CNNCPU_V4 = 1 << 2,      /* x86-64-v4: AVX-512 F, BW, CD, DQ, VL, and the OS saves the ZMM and mask state */
};

/* The CNNCPU_* levels this processor and OS support; each implies the ones below it. */
unsigned cnncpu_levels(void);

/* The names of the features the level lacks, separated by spaces ("" when it has them all):
 * written into buffer (at most size bytes, NUL-terminated). */
void cnncpu_missing(unsigned level, char *buffer, unsigned size);

/* The CPUs this process may run on (its affinity mask, as nproc counts them); at least 1. */
int cnncpu_affinity_count(void);

/* Asks the processor to bring the cache line holding p into its caches (a hint: it never faults,
 * whatever p). Inline, so that Swift's calls compile to the one instruction. */
static inline void cnncpu_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/* x itself, through an empty asm statement that takes and gives back its register: what comes out
 * is opaque to the compiler, so that it cannot merge the shuffles after it with the arithmetic
 * before it (LLVM rebuilt F(4×4)'s output transform around such merged shuffles in 128-bit
 * halves, spilling, at half the speed). Swift sees the vectors as SIMD8<Float> and SIMD16<Float>;
 * without AVX (AVX-512) there is no such register and x is returned as it is. */
typedef float cnncpu_float8 __attribute__((vector_size(32)));
typedef float cnncpu_float16 __attribute__((vector_size(64)));
static inline cnncpu_float8 cnncpu_opaque8(cnncpu_float8 x) {
#ifdef __AVX__
    __asm__("" : "+x"(x));
#endif
    return x;
}
static inline cnncpu_float16 cnncpu_opaque16(cnncpu_float16 x) {
#ifdef __AVX512F__
    __asm__("" : "+v"(x));
#endif
    return x;
}

/* p itself, through an empty asm statement: the compiler cannot tell how it relates to the
 * pointer it came from. The GEMM's register blocks read each row of A through its own pointer;
 * seen as a + r * aRow, LLVM reached row r by adding aRow to row r - 1, a chain of 7 dependent adds
 * in each step of the 8-row block (8 multiply-adds: half of its speed). */
static inline const float *cnncpu_opaque_pointer(const float *p) {
    __asm__("" : "+r"(p));
    return p;
}

#endif
