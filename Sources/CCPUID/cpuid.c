/* CPUID and XGETBV, the way every runtime-dispatching library reads them (MLAS, oneDNN, OpenBLAS):
 * a feature counts only when the CPU has it and, for the vector registers, the OS saves them. */
#define _GNU_SOURCE
#include "cnncpuid.h"
#include <sched.h>
#include <unistd.h>
#include <cpuid.h>
#include <string.h>

/* XCR0: which register states the OS saves on a context switch (valid only when OSXSAVE is set).
 * Inline assembly, so no -mxsave is needed to build this file. */
static unsigned long long xcr0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

struct feature { const char *name; unsigned level; int leaf; char reg; unsigned bit; };

/* leaf 1 = CPUID(1), 7 = CPUID(7, 0), 0x80000001 = extended features. */
static const struct feature features[] = {
    {"sse3", CNNCPU_V2, 1, 'c', 0},    {"ssse3", CNNCPU_V2, 1, 'c', 9},
    {"sse4.1", CNNCPU_V2, 1, 'c', 19}, {"sse4.2", CNNCPU_V2, 1, 'c', 20},
    {"popcnt", CNNCPU_V2, 1, 'c', 23}, {"cx16", CNNCPU_V2, 1, 'c', 13},
    {"lahf", CNNCPU_V2, 0x80000001, 'c', 0},
    {"avx", CNNCPU_V3, 1, 'c', 28},    {"fma", CNNCPU_V3, 1, 'c', 12},
    {"f16c", CNNCPU_V3, 1, 'c', 29},   {"movbe", CNNCPU_V3, 1, 'c', 22},
    {"osxsave", CNNCPU_V3, 1, 'c', 27},
    {"avx2", CNNCPU_V3, 7, 'b', 5},    {"bmi1", CNNCPU_V3, 7, 'b', 3},
    {"bmi2", CNNCPU_V3, 7, 'b', 8},    {"lzcnt", CNNCPU_V3, 0x80000001, 'c', 5},
    {"avx512f", CNNCPU_V4, 7, 'b', 16}, {"avx512dq", CNNCPU_V4, 7, 'b', 17},
    {"avx512cd", CNNCPU_V4, 7, 'b', 28}, {"avx512bw", CNNCPU_V4, 7, 'b', 30},
    {"avx512vl", CNNCPU_V4, 7, 'b', 31},
};

static int has(const struct feature *f) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (f->leaf == 7) {
        if (__get_cpuid_max(0, 0) < 7) return 0;
        __cpuid_count(7, 0, a, b, c, d);
    } else if (!__get_cpuid((unsigned)f->leaf, &a, &b, &c, &d)) {
        return 0;
    }
    unsigned r = f->reg == 'b' ? b : f->reg == 'c' ? c : d;
    return (r >> f->bit) & 1;
}

/* The OS state a level needs: XMM and YMM (bits 1, 2) for v3; opmask, ZMM0-15 upper halves and
 * ZMM16-31 (bits 5, 6, 7) as well for v4. Read only when the CPU has OSXSAVE. */
static int os_saves(unsigned level) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return 0;
    unsigned long long need = level == CNNCPU_V4 ? 0xE6 : 0x06;
    return (xcr0() & need) == need;
}

static const char *os_state_name(unsigned level) {
    return level == CNNCPU_V4 ? "os-zmm-state" : "os-ymm-state";
}

void cnncpu_missing(unsigned level, char *buffer, unsigned size) {
    if (!buffer || size == 0) return;
    buffer[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i <= sizeof features / sizeof features[0]; i++) {
        const char *name = 0;
        if (i < sizeof features / sizeof features[0]) {
            if (features[i].level > level || has(&features[i])) continue;
            name = features[i].name;
        } else if (level >= CNNCPU_V3 && !os_saves(level)) {
            name = os_state_name(level);
        } else {
            continue;
        }
        size_t n = strlen(name) + (used ? 1 : 0);
        if (used + n + 1 > size) break;
        if (used) buffer[used++] = ' ';
        memcpy(buffer + used, name, strlen(name) + 1);
        used += strlen(name);
    }
}

unsigned cnncpu_levels(void) {
    unsigned levels = 0;
    char missing[256];
    for (unsigned level = CNNCPU_V2; level <= CNNCPU_V4; level <<= 1) {
        cnncpu_missing(level, missing, sizeof missing);
        if (missing[0]) break;
        levels |= level;
    }
    return levels;
}

int cnncpu_affinity_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}
