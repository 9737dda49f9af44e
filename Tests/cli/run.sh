#!/usr/bin/env bash
# Tests of the `cnn` tool as a user runs it: exit codes, one-line errors (never a crash or a
# stack trace), byte-identical models, files that numpy users can read. Ends with
# "N passed, N failed" and a non-zero exit on any failure.
set -uo pipefail
CNN=${1:-.build/release/cnn}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMPLE=$ROOT/data/fashion-mnist-sample
TRAIN=$SAMPLE/train-images-idx3-ubyte.gz
TEST=$SAMPLE/t10k-images-idx3-ubyte.gz
REF="input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
passed=0; failed=0

ok()   { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [[ -n ${2:-} ]] && echo "     $2"; }

# expect_error NAME CMD...: non-zero exit, exactly one line on stderr, no crash.
expect_error() {
    local name=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    local lines; lines=$(wc -l <"$T/err")
    if [[ $rc -ne 0 && $rc -lt 128 && $lines -eq 1 ]] && ! grep -qiE "fatal|backtrace|crash" "$T/err"; then
        ok "$name: $(cat "$T/err")"
    else
        fail "$name" "exit $rc, $lines stderr lines: $(head -c 400 "$T/err")"
    fi
}

train() { "$CNN" train --data "$TRAIN" --limit 600 --epochs 1 --batch-size 32 --momentum 0.9 --lr 0.01 --seed 7 --quiet "$@"; }

# Summary of the reference network.
if "$CNN" summary "$REF" >"$T/summary" && grep -q "421,642" "$T/summary"; then ok "summary counts 421,642 parameters"; else fail "summary" "$(cat "$T/summary")"; fi

# Training, determinism with 1 and 2 threads.
if train --spec "$REF" --out "$T/a.safetensors" --threads 1 && train --spec "$REF" --out "$T/b.safetensors" --threads 1 \
   && train --spec "$REF" --out "$T/c.safetensors" --threads 2; then
    ok "train runs"
    cmp -s "$T/a.safetensors" "$T/b.safetensors" && ok "same seed, identical model files" || fail "same seed, identical model files"
    cmp -s "$T/a.safetensors" "$T/c.safetensors" && ok "1 and 2 threads, identical model files" || fail "1 and 2 threads, identical model files"
else
    fail "train runs"
fi

# The spec from a file, a CSV log, a checkpoint; resuming gives the uninterrupted run's bytes.
echo "$REF   # the reference network" >"$T/ref.spec"
"$CNN" train --spec "$T/ref.spec" --data "$TRAIN" --limit 300 --epochs 2 --batch-size 32 --optimizer adam --lr 0.001 --seed 3 \
    --quiet --out "$T/straight.safetensors" --log "$T/log.csv"
"$CNN" train --spec "$T/ref.spec" --data "$TRAIN" --limit 300 --epochs 1 --batch-size 32 --optimizer adam --lr 0.001 --seed 3 \
    --quiet --out "$T/half.safetensors" --checkpoint "$T/ckpt.safetensors"
"$CNN" train --data "$TRAIN" --limit 300 --epochs 2 --batch-size 32 --optimizer adam --lr 0.001 --seed 3 \
    --quiet --out "$T/resumed.safetensors" --resume "$T/ckpt.safetensors"
cmp -s "$T/straight.safetensors" "$T/resumed.safetensors" && ok "resumed run equals the uninterrupted run" || fail "resumed run equals the uninterrupted run"
[[ $(wc -l <"$T/log.csv") -eq 3 ]] && head -1 "$T/log.csv" | grep -q "^epoch,loss,accuracy" && ok "CSV log has a header and one line per epoch" || fail "CSV log" "$(cat "$T/log.csv")"

# eval --json and predict --json are JSON with the promised keys.
"$CNN" eval --model "$T/a.safetensors" --data "$TEST" --json >"$T/eval.json"
if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert 0.5 < d['accuracy'] <= 1 and d['loss'] > 0 and len(d['confusion']) == 10 and d['count'] == 500" "$T/eval.json"; then
    ok "eval --json: $(cut -c1-60 "$T/eval.json")"
else fail "eval --json" "$(cat "$T/eval.json")"; fi
"$CNN" eval --model "$T/a.safetensors" --data "$TEST" >"$T/eval.txt" && grep -q "confusion matrix" "$T/eval.txt" && grep -q "Ankle boot" "$T/eval.txt" \
    && ok "eval prints per-class accuracy and the confusion matrix by class name" || fail "eval text"
"$CNN" predict --model "$T/a.safetensors" --data "$TEST" --limit 4 --top 3 --json >"$T/pred.json"
if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d) == 4 and len(d[0]['top']) == 3 and abs(sum(t['probability'] for t in d[0]['top'])) <= 1.0001" "$T/pred.json"; then
    ok "predict --json"
else fail "predict --json" "$(head -c 300 "$T/pred.json")"; fi
"$CNN" summary "$T/a.safetensors" | grep -q "dense(128)" && ok "summary of a model file" || fail "summary of a model file"

# numpy users read the weights with the safetensors package, with PyTorch's names and shapes.
if python3 -c "import safetensors" 2>/dev/null; then
    if python3 - "$T/a.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
from safetensors import safe_open
d = load_file(sys.argv[1])
shapes = {k: list(v.shape) for k, v in d.items()}
assert shapes == {"0.weight": [32, 1, 3, 3], "0.bias": [32], "3.weight": [64, 32, 3, 3], "3.bias": [64],
                  "7.weight": [128, 3136], "7.bias": [128], "9.weight": [10, 128], "9.bias": [10]}, shapes
with safe_open(sys.argv[1], "np") as f:
    assert f.metadata()["architecture"].startswith("input(1,28,28)")
PY
    then ok "safetensors.numpy reads the model with PyTorch's shapes"; else fail "safetensors.numpy reads the model"; fi
else
    fail "safetensors.numpy reads the model" "python package safetensors is not installed (pip install safetensors)"
fi

# Hostile model files: one-line errors, never a crash.
head -c 1000 "$T/a.safetensors" >"$T/trunc.safetensors"
expect_error "truncated model" "$CNN" eval --model "$T/trunc.safetensors" --data "$TEST"
head -c 20000 /dev/urandom >"$T/random.safetensors"
expect_error "random-byte model" "$CNN" eval --model "$T/random.safetensors" --data "$TEST"
: >"$T/empty.safetensors"
expect_error "empty model" "$CNN" predict --model "$T/empty.safetensors" --data "$TEST"
python3 - "$T/a.safetensors" "$T/corrupt.safetensors" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[8:40] = b"{" + b"\x00" * 31   # break the JSON header
open(sys.argv[2], "wb").write(b)
PY
expect_error "corrupted header" "$CNN" eval --model "$T/corrupt.safetensors" --data "$TEST"
python3 - "$T/a.safetensors" "$T/resized.safetensors" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
n = int.from_bytes(b[:8], "little")
h = b[8:8 + n].replace(b"dense(128)", b"dense(129)")
open(sys.argv[2], "wb").write(b[:8] + h + b[8 + n:])
PY
expect_error "model whose architecture does not match its tensors" "$CNN" eval --model "$T/resized.safetensors" --data "$TEST"
expect_error "missing model" "$CNN" eval --model "$T/none.safetensors" --data "$TEST"

# Bad architecture texts and arguments.
expect_error "unknown layer" train --spec "input(1,28,28) convv(3,3) flatten dense(10)" --out "$T/x.safetensors"
expect_error "bad argument" train --spec "input(1,28,28) conv(32,3,pad=-1) flatten dense(10)" --out "$T/x.safetensors"
expect_error "dense on an image" train --spec "input(1,28,28) dense(10)" --out "$T/x.safetensors"
expect_error "wrong input size" train --spec "input(3,32,32) flatten dense(10)" --out "$T/x.safetensors"
expect_error "too few classes" train --spec "input(1,28,28) flatten dense(5)" --out "$T/x.safetensors"
expect_error "bad optimizer" train --spec "$REF" --optimizer sgdd --out "$T/x.safetensors"
expect_error "zero batch size" train --spec "$REF" --batch-size 0 --out "$T/x.safetensors"
expect_error "negative learning rate" train --spec "$REF" --lr=-1 --out "$T/x.safetensors"
expect_error "unknown option" train --spec "$REF" --learning-rate 0.1 --out "$T/x.safetensors"
expect_error "missing --out" "$CNN" train --spec "$REF" --data "$TRAIN"
expect_error "missing data" "$CNN" train --spec "$REF" --data "$T/nothing-images-idx3-ubyte.gz" --out "$T/x.safetensors"
expect_error "data that is not IDX" "$CNN" eval --model "$T/a.safetensors" --data "$SAMPLE/LICENSE"
expect_error "diverging training" train --spec "input(1,28,28) flatten dense(10)" --lr 1e38 --momentum 0 --epochs 3 --out "$T/x.safetensors"
expect_error "output into a missing folder" train --spec "$REF" --out "$T/no/such/dir/x.safetensors"
[[ ! -e $T/x.safetensors ]] && ok "failed runs leave no model file" || fail "failed runs leave no model file"

# A failed save keeps the previous model intact.
cp "$T/a.safetensors" "$T/keep.safetensors"
chmod 555 "$T"
if [[ $(id -u) -ne 0 ]]; then
    expect_error "unwritable folder" train --spec "$REF" --out "$T/keep.safetensors"
fi
chmod 755 "$T"
cmp -s "$T/a.safetensors" "$T/keep.safetensors" && ok "previous model intact" || fail "previous model intact"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
