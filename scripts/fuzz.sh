#!/usr/bin/env bash
# Builds the libFuzzer + AddressSanitizer harnesses of the library's parsers (Tests/fuzz) and runs
# each for FUZZ_SECONDS (default 60) on its corpus, seeded from Tests/fuzz/seeds/<harness>.
#
#   scripts/fuzz.sh [HARNESS...]        architecture, model, idx, jpeg, png, onnx, training (default: all)
#   FUZZ_SECONDS=600 FUZZ_JOBS=2 scripts/fuzz.sh jpeg
#   FUZZ_PARALLEL=1 scripts/fuzz.sh     one harness at a time (default: one per core)
#   FUZZ_LEVEL=avx512 scripts/fuzz.sh training     the engine at a kernel level (see below)
#
# The engine's sources are compiled as one module with the harnesses (swiftc -sanitize=fuzzer,address)
# and the C shims with clang -fsanitize=fuzzer-no-link,address. An input that traps, leaks, reads or
# writes out of bounds, allocates more than -malloc_limit_mb in one call or grows the process past
# -rss_limit_mb is a finding: libFuzzer stops and writes it to build/fuzz/crash-<harness>-*; replay
# it with build/fuzz/fuzz-<harness> FILE, then add it to Tests/fuzz/regressions/<harness>/ (every
# file there is replayed at each run, before fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
# FUZZ_LEVEL=avx2 or avx512: the engine compiled for that kernel level (8- or 16-wide vectors,
# fused multiply-add), in a build folder of its own, so that those kernels run under
# AddressSanitizer too (on a CPU that has the level); the default is the baseline level.
case ${FUZZ_LEVEL:-baseline} in
    baseline) OUT=build/fuzz; level_flags=() ;;
    avx2) OUT=build/fuzz-avx2; level_flags=(-target-cpu haswell -D CNN_FMA) ;;
    avx512) OUT=build/fuzz-avx512; level_flags=(-target-cpu skylake-avx512 -D CNN_FMA -D CNN_AVX512) ;;
    *) echo "unknown FUZZ_LEVEL '$FUZZ_LEVEL' (baseline, avx2, avx512)"; exit 2 ;;
esac
SECONDS_EACH=${FUZZ_SECONDS:-60}
ALL=(architecture model idx jpeg png onnx training)
HARNESSES=("$@")
[[ ${#HARNESSES[@]} -eq 0 ]] && HARNESSES=("${ALL[@]}")
mkdir -p "$OUT"

# FUZZ_DEPS=1: libjpeg-turbo and zlib are built from Debian's source packages with the same
# instrumentation, so that coverage guides the fuzzer through their code too (needs deb-src
# entries, cmake; a few minutes once). Otherwise the system's libraries are linked uninstrumented.
# libpng is always the system's (uninstrumented): the shim around it is instrumented.
libs=(-ljpeg -lz)
if [[ ${FUZZ_DEPS:-0} == 1 ]]; then
    deps=$PWD/$OUT/deps
    if [[ ! -f $deps/lib/libjpeg.a || ! -f $deps/lib/libz.a ]]; then
        echo "building instrumented libjpeg-turbo and zlib in $deps"
        rm -rf "$deps" && mkdir -p "$deps/src"
        (cd "$deps/src" && apt-get source -qq libjpeg-turbo zlib >/dev/null 2>&1) || {
            echo "apt-get source failed: add deb-src entries (Types: deb-src) to /etc/apt/sources.list.d"; exit 1; }
        flags="-O1 -g -fsanitize=fuzzer-no-link,address"
        (cd "$deps/src"/zlib-*/ && CC=clang CFLAGS="$flags" ./configure --static --prefix="$deps" >/dev/null && make -s -j2 install >/dev/null)
        cmake -S "$deps/src"/libjpeg-turbo-*/ -B "$deps/build-jpeg" -DCMAKE_C_COMPILER=clang -DCMAKE_C_FLAGS="$flags" \
            -DENABLE_SHARED=0 -DWITH_SIMD=0 -DWITH_TURBOJPEG=0 -DCMAKE_INSTALL_PREFIX="$deps" -DCMAKE_INSTALL_DEFAULT_LIBDIR=lib >/dev/null
        cmake --build "$deps/build-jpeg" -j2 --target install >/dev/null
    fi
    libs=("$deps/lib/libjpeg.a" "$deps/lib/libz.a")
fi
stamp=$OUT/cnn-fuzz.libs
sources=$(find Sources/CNN -name '*.swift' | sort)
if [[ ! -x $OUT/cnn-fuzz || "$(cat $stamp 2>/dev/null)" != "${libs[*]}" ||
      -n $(find Sources/CNN Sources/CJPEGShim Sources/CPNGShim Sources/CCPUID Tests/fuzz -newer $OUT/cnn-fuzz -type f | head -1) ]]; then
    echo "building $OUT/cnn-fuzz (${libs[*]})"
    clang -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CJPEGShim/include \
        -c Sources/CJPEGShim/cnnjpeg.c -o $OUT/cnnjpeg.o
    clang -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CPNGShim/include \
        -c Sources/CPNGShim/cnnpng.c -o $OUT/cnnpng.o
    clang -O1 -g -fsanitize=address -I Sources/CCPUID/include -c Sources/CCPUID/cpuid.c -o $OUT/cpuid.o
    # shellcheck disable=SC2086
    swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name CNN -use-ld=lld ${level_flags[@]+"${level_flags[@]}"} \
        -I Tests/fuzz -I Sources/CZlib -I Sources/CLibJPEG -I Sources/CLibPNG $sources Tests/fuzz/Harnesses.swift \
        $OUT/cnnjpeg.o $OUT/cnnpng.o $OUT/cpuid.o -lpng16 "${libs[@]}" -o $OUT/cnn-fuzz
    echo "${libs[*]}" > $stamp
fi
for h in "${ALL[@]}"; do ln -sf cnn-fuzz "$OUT/fuzz-$h"; done

for h in "${HARNESSES[@]}"; do
    [[ " ${ALL[*]} " == *" $h "* ]] || { echo "unknown harness '$h' (${ALL[*]})"; exit 2; }
done
# One harness: its regressions, then FUZZ_SECONDS of fuzzing; its report in $OUT/fuzz-$h.report,
# and $OUT/fuzz-$h.finding when it found something.
fuzz_one() {
    local h=$1 log=$OUT/fuzz-$1.log
    rm -f "$OUT/fuzz-$h.finding"
    options=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1
             -artifact_prefix="$OUT/crash-$h-")
    [[ -f Tests/fuzz/$h.dict ]] && options+=(-dict="Tests/fuzz/$h.dict")
    if [[ -d Tests/fuzz/regressions/$h ]]; then
        echo "== fuzz-$h: regressions"
        "$OUT/fuzz-$h" "${options[@]}" Tests/fuzz/regressions/$h/* 2>&1 | tail -2
    fi
    mkdir -p "$OUT/corpus-$h"
    echo "== fuzz-$h: ${SECONDS_EACH} s"
    if ! "$OUT/fuzz-$h" "${options[@]}" -max_total_time="$SECONDS_EACH" ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} \
            "$OUT/corpus-$h" "Tests/fuzz/seeds/$h" > "$log" 2>&1; then
        touch "$OUT/fuzz-$h.finding"
        grep -E -A30 "ERROR|==[0-9]+==" "$log" | head -60 || true
        echo "fuzz-$h: FINDING (log: $log)"
        return
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" | tr '\n' ' '
    grep -E "DONE|INITED" "$log" | tail -1 | grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+" || true
}
# FUZZ_PARALLEL harnesses at a time (default: one per core; each libFuzzer process is one thread),
# their reports printed in order.
parallel=${FUZZ_PARALLEL:-$(nproc)}
for h in "${HARNESSES[@]}"; do
    while (( $(jobs -rp | wc -l) >= parallel )); do wait -n || true; done
    # (A harness whose script fails on the way counts as a finding too.)
    { fuzz_one "$h" || touch "$OUT/fuzz-$h.finding"; } > "$OUT/fuzz-$h.report" 2>&1 &
done
wait
found=0
for h in "${HARNESSES[@]}"; do
    cat "$OUT/fuzz-$h.report"
    [[ -f $OUT/fuzz-$h.finding ]] && found=1
done
exit $found
