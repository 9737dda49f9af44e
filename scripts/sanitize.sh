#!/usr/bin/env bash
# The test suites under the sanitizers (`make sanitize`); any report fails the run.
#   - every Swift suite under AddressSanitizer (and LeakSanitizer);
#   - the threaded Swift tests (thread pool, loader threads, results with 1 and 2 threads) under
#     ThreadSanitizer;
#   - the C tests (bindings/c/tests.c: every function, 8 threads predicting at once, training while
#     other threads call, freed handles) against libcnn.so built with each sanitizer, the C side
#     compiled with the same one.
# hostile.c is left out: it caps its children's address space (RLIMIT_AS), which the sanitizers'
# shadow memory does not survive.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
DATA=data/fashion-mnist-sample
RUNTIME=$(dirname "$(dirname "$(command -v swiftc)")")/lib/swift/linux
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/Tests/lsan.supp:print_suppressions=0}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66}
THREADED='ThreadPoolTests|sameSeedSameWeightsWhateverTheThreads|denseProductIsIdenticalWithOneOrTwoThreads|predictionsDoNotDependOnBatchOrThreads|cachedStreamedAugmentedAndThreadedRunsAgree'

mkdir -p build
# Runs a command with its output in build/sanitize-NAME.log; on failure prints the log's end.
run() {
    local name=$1; shift
    if "$@" > "build/sanitize-$name.log" 2>&1; then
        tail -1 "build/sanitize-$name.log"
    else
        tail -80 "build/sanitize-$name.log"
        echo "sanitize: $name failed (build/sanitize-$name.log)"
        exit 1
    fi
}

# Everything is built for the baseline kernel level alone (CNN_KERNEL_LEVELS=baseline: a third of
# the compile time; the same sources) and optimized, as the library runs (unoptimized, the training
# tests took 6 minutes under ASan here, optimized 10 s). The suites and the library of each
# sanitizer share one build (same flags, same scratch path), made by `swift build --product`:
# `swift test` builds the engine with other parameters than `swift build` does, and building the
# library after it compiled the engine again (about 90 s per sanitizer); the test product leaves
# out the tool, which the suites do not use. The AVX2 kernels are checked by valgrind in make
# test-c (valgrind 3.19 cannot decode AVX-512).
flags() { echo -c release -Xswiftc -enable-testing -Xswiftc -g --sanitize=$1 --scratch-path .build-$1; }
# The two builds run side by side: each compiles the engine as one module, whose whole-module
# optimization runs on one core for much of the time.
echo "== building the Swift suites under AddressSanitizer and ThreadSanitizer"
CNN_KERNEL_LEVELS=baseline run build-address $SWIFT build $(flags address) --product SwiftCNNPackageTests &
address=$!
CNN_KERNEL_LEVELS=baseline run build-thread $SWIFT build $(flags thread) --product SwiftCNNPackageTests &
thread=$!
failed=0
wait $address || failed=1
wait $thread || failed=1
((failed == 0)) || exit 1
echo "== Swift suites, AddressSanitizer"
# --disable-xctest: XCTest (which runs no test here) leaks its own suite objects at exit.
CNN_KERNEL_LEVELS=baseline run swift-address $SWIFT test $(flags address) --skip-build --disable-xctest
echo "== threaded Swift tests, ThreadSanitizer"
CNN_KERNEL_LEVELS=baseline run swift-thread $SWIFT test $(flags thread) --skip-build --disable-xctest --filter "$THREADED"

for sanitizer in address thread; do
    echo "== C tests, libcnn.so with sanitizer=$sanitizer"
    CNN_KERNEL_LEVELS=baseline run lib-$sanitizer $SWIFT build $(flags $sanitizer) --product CNNC
    out=build/$sanitizer
    mkdir -p $out
    ln -sf "$PWD/.build-$sanitizer/release/libCNNC.so" $out/libcnn.so.0
    extra=()
    # The ThreadSanitizer runtime intercepts libdispatch, which the Swift runtime brings.
    [[ $sanitizer == thread ]] && extra=(-L"$RUNTIME" -ldispatch -lBlocksRuntime)
    clang -std=c99 -O1 -g -fsanitize=$sanitizer -fuse-ld=lld -Iinclude bindings/c/tests.c \
        -L$out -l:libcnn.so.0 "${extra[@]}" -Wl,-rpath,"$PWD/$out" -Wl,-rpath,"$RUNTIME" -lpthread -lm -o $out/c-tests
    run c-$sanitizer $out/c-tests $DATA
done
echo "sanitize: no reports"
