#!/usr/bin/env bash
# The default build on other x86-64 CPUs. qemu-user runs it as an AVX2 CPU (Haswell) and as an
# SSE4.2 CPU (Nehalem): the C example trains briefly, saves, reloads and predicts test images and
# JPEG files; `cnn predict` classifies JPEGs with that model; each reports the level it runs on,
# and a CNN_CPU asking for more than the CPU has is refused with a message, never honoured.
# The two CPUs run side by side, a few minutes (emulation is slow: 400 training images, two epochs).
#   Tests/portable/run.sh [LIBDIR] [CNN] [EXAMPLE]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=$(cd "${1:-$ROOT/build/lib}" && pwd)
CNN=$(realpath "${2:-$ROOT/.build/release/cnn}")
EXAMPLE=$(realpath "${3:-$ROOT/build/bin/example}")
JPEGS=("$ROOT/data/fashion-mnist-jpeg/test/Bag/018.jpg" "$ROOT/data/fashion-mnist-jpeg/test/Sneaker/009.jpg")
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 not found: apt-get install qemu-user"; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [[ -n ${2:-} ]] && echo "$2" | head -20 | sed 's/^/     /'; }

# A 400-image training set and a 100-image test set, cut from the sample (IDX, gzip).
python3 - "$ROOT/data/fashion-mnist-sample" "$T" <<'PY'
import gzip, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for kind, n in (("train", 400), ("t10k", 100)):
    images = gzip.open(f"{src}/{kind}-images-idx3-ubyte.gz").read()
    labels = gzip.open(f"{src}/{kind}-labels-idx1-ubyte.gz").read()
    gzip.open(f"{dst}/{kind}-images-idx3-ubyte.gz", "wb").write(images[:4] + struct.pack(">I", n) + images[8:16] + images[16:16 + n * 784])
    gzip.open(f"{dst}/{kind}-labels-idx1-ubyte.gz", "wb").write(labels[:4] + struct.pack(">I", n) + labels[8:8 + n])
shutil.copy(f"{src}/classes.txt", dst)
PY

quiet() { grep -v "TCG doesn't support requested feature"; }
# One CPU's checks; the two CPUs run at the same time (each emulated process is mostly one busy
# thread), each writing its report to $T/CPU.report.
check_cpu() {
    local cpu=$1 level=$2 passed=0 failed=0
    run() { qemu-x86_64 -cpu "$cpu" -E LD_LIBRARY_PATH="$LIB" "$@" 2> >(quiet >&2); }
    mkdir -p "$T/$cpu" && cd "$T/$cpu" || exit 1
    start=$SECONDS
    if run "$EXAMPLE" "$T/train-images-idx3-ubyte.gz" "$T/t10k-images-idx3-ubyte.gz" 2 "${JPEGS[@]}" >out 2>err; then
        grep -q "kernels: $level;" out && ok "$cpu: the C example runs on the $level kernels" || fail "$cpu: level" "$(head -1 out)"
        accuracy=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' out | tail -1)
        python3 -c "import sys; assert float(sys.argv[1]) > 0.4" "${accuracy:-0}" \
            && ok "$cpu: trained, test accuracy $accuracy (chance is 0.1)" || fail "$cpu: test accuracy $accuracy" "$(cat out)"
        [[ $(grep -c "^test image" out) -eq 5 && $(grep -c "\.jpg: " out) -eq 2 ]] \
            && ok "$cpu: saved, reloaded, predicted 5 test images and 2 JPEG files" || fail "$cpu: predictions" "$(cat out)"
    else
        fail "$cpu: the C example" "$(cat out err)"
    fi
    run "$CNN" --version >version 2>&1 && grep -q "kernels: $level;" version && ok "$cpu: $(cat version)" || fail "$cpu: cnn --version" "$(cat version)"
    # The tool and the library, on the same level and model, give the same classes and probabilities.
    if run "$CNN" predict --model example.safetensors "${JPEGS[@]}" >predict 2>&1 && [[ $(wc -l <predict) -eq 2 ]] \
       && diff <(grep "\.jpg: " out | sed 's/.*\.jpg: //') <(sed 's/.*\.jpg: //; s/.*\.jpg *//' predict) >/dev/null; then
        ok "$cpu: cnn predict on the JPEGs agrees with the C library: $(sed 's|.*/||' predict | tr '\n' ' ')"
    else
        fail "$cpu: cnn predict" "$(cat predict)"
    fi
    CNN_CPU=avx512 run "$CNN" --version >refused 2>&1
    rc=$?
    [[ $rc -eq 1 ]] && grep -q "avx512f" refused && ok "$cpu: CNN_CPU=avx512 refused: $(cat refused)" || fail "$cpu: CNN_CPU=avx512 (exit $rc)" "$(cat refused)"
    CNN_CPU=avx512 run "$EXAMPLE" "$T/train-images-idx3-ubyte.gz" "$T/t10k-images-idx3-ubyte.gz" >refused 2>&1
    rc=$?
    [[ $rc -ne 0 && $rc -lt 128 ]] && grep -q "kernels: none" refused && grep -q "cnn_model_create: CNN_CPU=avx512 .*avx512f" refused \
        && ok "$cpu: the library refuses CNN_CPU=avx512 with a status and the reason" || fail "$cpu: library with CNN_CPU=avx512 (exit $rc)" "$(cat refused)"
    echo "     ($cpu: $((SECONDS - start)) s)"
    echo "$passed $failed" > "$T/$cpu.counts"
}
check_cpu Haswell avx2 > "$T/Haswell.report" 2>&1 &
check_cpu Nehalem baseline > "$T/Nehalem.report" 2>&1 &
wait
for cpu in Haswell Nehalem; do
    cat "$T/$cpu.report"
    read -r p f < "$T/$cpu.counts" 2>/dev/null || { p=0; f=1; echo "FAIL $cpu: no result"; }
    passed=$((passed + p)); failed=$((failed + f))
done
echo "$passed passed, $failed failed"
((failed == 0))
