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

# Every kernel level this CPU has: reported by --version, deterministic at 1 and 2 threads, and
# within a small distance of the other levels (they are not bit-identical: vector widths and fused
# multiply-adds change the rounding). A level the CPU lacks, or no level, is refused.
best=$("$CNN" --version | sed -n 's/.*cpu: \([a-z0-9]*\).*/\1/p')
levels="baseline"; [[ $best == avx2 || $best == avx512 ]] && levels+=" avx2"; [[ $best == avx512 ]] && levels+=" avx512"
for level in $levels; do
    CNN_CPU=$level "$CNN" --version | grep -q "kernels: $level;" && ok "CNN_CPU=$level: --version reports it" || fail "CNN_CPU=$level --version" "$(CNN_CPU=$level "$CNN" --version 2>&1)"
    CNN_CPU=$level train --spec "$REF" --limit 200 --out "$T/$level-1.safetensors" --threads 1
    CNN_CPU=$level train --spec "$REF" --limit 200 --out "$T/$level-2.safetensors" --threads 2
    cmp -s "$T/$level-1.safetensors" "$T/$level-2.safetensors" && ok "$level kernels: 1 and 2 threads, identical model files" || fail "$level kernels: 1 and 2 threads"
done
if python3 -c "
import sys, struct, json
def load(path):
    raw = open(path, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]; head = json.loads(raw[8:8 + n]); out = {}
    for k, v in head.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']; out[k] = struct.unpack('<%df' % ((b - a) // 4), raw[8 + n + a:8 + n + b])
    return out
base = load(sys.argv[1])
for path in sys.argv[2:]:
    other = load(path)
    worst = max(abs(x - y) / max(1e-2, abs(y)) for k in base for x, y in zip(other[k], base[k]))
    assert worst < 1e-2, (path, worst)
" "$T"/baseline-1.safetensors "$T"/*-1.safetensors; then ok "every level trains to the baseline's weights within 1 % (levels: $levels)"; else fail "levels agree"; fi
expect_error "CNN_CPU names no level" env CNN_CPU=sse9 "$CNN" --version
[[ $best != avx512 ]] && expect_error "CNN_CPU asks for a level this CPU lacks" env CNN_CPU=avx512 "$CNN" --version

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

# eval --tta flip averages each image with its mirror: a different loss on the same images.
"$CNN" eval --model "$T/a.safetensors" --data "$TEST" --json >"$T/plain.json"
"$CNN" eval --model "$T/a.safetensors" --data "$TEST" --json --tta flip >"$T/tta.json"
python3 -c "import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); assert a['count']==b['count'] and a['loss']!=b['loss'] and b['accuracy']>0.5" "$T/plain.json" "$T/tta.json" \
    && ok "eval --tta flip" || fail "eval --tta flip" "$(cat "$T/tta.json")"
expect_error "eval --tta names no augmentation" "$CNN" eval --model "$T/a.safetensors" --data "$TEST" --tta crop
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
"$CNN" summary "$T/a.safetensors" --time --rounds 2 --batch 3 | grep -q "forward: .* ms per prediction" && ok "summary --time of a model file" || fail "summary --time"
"$CNN" summary "$T/a.safetensors" --time --rounds 0 2>/dev/null && fail "summary --time --rounds 0 accepted" || ok "summary --time --rounds 0 refused"

# ONNX: export, import back (same architecture, same weights bit for bit), and the .onnx file
# taken directly by eval and summary.
if "$CNN" export "$T/a.safetensors" "$T/a.onnx" >/dev/null && "$CNN" import "$T/a.onnx" "$T/a-back.safetensors" >/dev/null; then
    "$CNN" eval --model "$T/a.onnx" --data "$TEST" --json >"$T/onnx.json"
    if python3 -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); a.pop('seconds'); b.pop('seconds'); assert a == b" "$T/eval.json" "$T/onnx.json"; then
        ok "export, then eval of the .onnx file: the model's results"
    else fail "eval of the .onnx file" "$(head -c 300 "$T/onnx.json")"; fi
    "$CNN" export "$T/a-back.safetensors" "$T/a-back.onnx" >/dev/null
    cmp -s "$T/a.onnx" "$T/a-back.onnx" && ok "export -> import -> export gives the same ONNX bytes" || fail "export -> import -> export"
    "$CNN" summary "$T/a.onnx" | grep -q "dense(128)" && ok "summary of an ONNX file" || fail "summary of an ONNX file"
else
    fail "cnn export / cnn import"
fi
# Fine-tuning from the exported model: a new head for 10 classes, layers 0-5 frozen (their
# tensors stay as they were), the rest trained.
if train --init "$T/a.onnx" --new-head 10 --freeze-until 6 --out "$T/ft.safetensors" && "$CNN" summary "$T/ft.safetensors" | grep -q "dense(10)"; then
    if python3 - "$T/a.safetensors" "$T/ft.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
for name in a:
    assert (a[name] == b[name]).all() == (int(name.split(".")[0]) < 6), name
PY
    then ok "train --init MODEL.onnx --new-head --freeze-until: frozen layers kept, the rest trained"; else fail "fine-tuning keeps the frozen layers"; fi
else
    fail "train --init --new-head --freeze-until"
fi
expect_error "--new-head without --init" train --spec "$REF" --new-head 3 --out "$T/x.safetensors"
expect_error "--freeze-until past the last layer" train --init "$T/a.safetensors" --freeze-until 10 --out "$T/x.safetensors"
expect_error "export to a name that is not .onnx" "$CNN" export "$T/a.safetensors" "$T/a.bin"
head -c 700 "$T/a.onnx" >"$T/trunc.onnx"
expect_error "truncated ONNX file" "$CNN" import "$T/trunc.onnx" "$T/x.safetensors"
[[ ! -e $T/x.safetensors ]] && ok "a failed import writes nothing" || fail "a failed import writes nothing"

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
expect_error "an exploding loss (lr 100, momentum 0.9)" train --spec "input(1,28,28) flatten dense(10)" --lr 100 --epochs 3 --out "$T/x.safetensors"
"$CNN" train --spec "input(1,28,28) flatten dense(10)" --data "$TRAIN" --limit 600 --lr 100 --momentum 0.9 --epochs 3 --quiet \
    --out "$T/x.safetensors" 2>"$T/err"
if grep -q "diverged.*more than 1000.0 times the first batch" "$T/err"; then
    ok "the divergence guard names the bound"
else
    fail "the divergence guard names the bound"
fi
expect_error "a memory limit below 1 MiB" "$CNN" summary "$REF" --memory-limit 100K
expect_error "a model over the memory limit" "$CNN" train --spec "input(1,28,28) flatten dense(16000)" --data "$TRAIN" --memory-limit 64M --out "$T/x.safetensors"
expect_error "a model over CNN_MEMORY_LIMIT" env CNN_MEMORY_LIMIT=64M "$CNN" train --spec "input(1,28,28) flatten dense(16000)" --data "$TRAIN" --out "$T/x.safetensors"
# Evaluation's confusion matrix is classes² counts: checked against the limit before it is taken.
"$CNN" train --spec "input(1,28,28) maxpool(4) flatten dense(700)" --data "$TRAIN" --limit 64 --allow-extra-outputs --quiet --out "$T/wide.safetensors"
if "$CNN" eval --model "$T/wide.safetensors" --data "$TEST" --memory-limit 4M >/dev/null 2>"$T/err"; then fail "a confusion matrix over the limit" "it ran"
elif grep -q "the confusion matrix of 700 classes would take" "$T/err"; then ok "a confusion matrix over the memory limit: $(cat "$T/err")"
else fail "a confusion matrix over the limit" "$(cat "$T/err")"; fi
expect_error "an IDX header that lies" "$CNN" eval --model "$T/a.safetensors" --data "$ROOT/Tests/data/hostile/declares-4gib-images-idx3-ubyte.gz"
if (ulimit -v 2000000; "$CNN" summary "input(1,128,128) flatten dense(16383) dense(16384)" 2>"$T/err"); [[ $? -eq 1 ]] && grep -q "parameters" "$T/err"; then
    ok "an absurd architecture is refused before it allocates (ulimit -v 2 GB)"
else
    fail "an absurd architecture under ulimit -v" "$(cat "$T/err")"
fi
expect_error "output into a missing folder" train --spec "$REF" --out "$T/no/such/dir/x.safetensors"
[[ ! -e $T/x.safetensors ]] && ok "failed runs leave no model file" || fail "failed runs leave no model file"

# JPEG folders: train, evaluate by class name, predict files by name; hostile JPEGs are errors.
JTRAIN=$ROOT/data/fashion-mnist-jpeg/train
JTEST=$ROOT/data/fashion-mnist-jpeg/test
SMALL="input(1,28,28) conv(8,3) relu maxpool(2) flatten dense(10)"
if "$CNN" train --spec "$SMALL" --data "$JTRAIN" --val "$JTEST" --epochs 1 --batch-size 32 --momentum 0.9 --lr 0.01 \
      --flip --translate 2 --quiet --out "$T/j.safetensors" && [[ -s $T/j.safetensors ]]; then
    ok "train from a JPEG folder with augmentation"
else fail "train from a JPEG folder"; fi
"$CNN" predict --model "$T/j.safetensors" "$JTEST/Sneaker/009.jpg" "$JTEST/Bag/018.jpg" --top 2 >"$T/jpred.txt" 2>"$T/jpred.err"
if grep -q "Sneaker/009.jpg: [A-Za-z]" "$T/jpred.txt" && [[ $(wc -l <"$T/jpred.txt") -eq 2 ]]; then ok "predict JPEG files prints class names: $(head -1 "$T/jpred.txt")"; else fail "predict JPEG files" "$(cat "$T/jpred.txt" "$T/jpred.err")"; fi
"$CNN" predict --model "$T/j.safetensors" "$JTEST/Bag/018.jpg" --json >"$T/jpred.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d[0]['image'].endswith('018.jpg') and d[0]['top'][0]['class']" "$T/jpred.json" && ok "predict --json on a JPEG" || fail "predict --json on a JPEG"
"$CNN" eval --model "$T/j.safetensors" --data "$JTEST" --json >"$T/jeval.json" 2>/dev/null
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['count'] == 500 and d['accuracy'] > 0.5 and 'Ankle boot' in d['per_class_accuracy']" "$T/jeval.json" && ok "eval on a JPEG folder" || fail "eval on a JPEG folder" "$(cat "$T/jeval.json")"
"$CNN" train --spec "$SMALL" --data "$JTRAIN" --split 0.25 --limit 400 --epochs 1 --quiet --out "$T/split.safetensors" && ok "train with a seeded --split" || fail "train with --split"

# Hostile JPEGs: each is a one-line error, and the good files of a folder still train.
H=$T/hostile
mkdir -p "$H/good/a" "$H/good/b"
cp "$JTEST"/Bag/0*.jpg "$H/good/a/"; cp "$JTEST"/Sneaker/0*.jpg "$H/good/b/"
GOOD=$(ls "$JTEST"/Bag/*.jpg | head -1)
: >"$H/empty.jpg"
echo "not a jpeg at all" >"$H/text.jpg"
head -c 300 "$GOOD" >"$H/truncated.jpg"
head -c 5000 /dev/urandom >"$H/random.jpg"
{ head -c 200 "$GOOD"; head -c 3000 /dev/urandom; } >"$H/garbage-after-header.jpg"
python3 - "$GOOD" "$H/huge.jpg" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.find(b"\xff\xc0")
b[i + 5:i + 9] = b"\xfd\xe8\xfd\xe8"   # 65000 x 65000
open(sys.argv[2], "wb").write(b)
PY
for f in empty text random huge; do
    expect_error "predict $f.jpg" "$CNN" predict --model "$T/j.safetensors" "$H/$f.jpg"
done
"$CNN" predict --model "$T/j.safetensors" "$H/truncated.jpg" "$H/garbage-after-header.jpg" >/dev/null 2>"$T/lenient.err"; rc=$?
[[ $rc -lt 128 ]] && ok "truncated and garbage JPEGs: no crash (exit $rc)" || fail "truncated and garbage JPEGs crashed: exit $rc"
expect_error "predict truncated.jpg --strict" "$CNN" predict --model "$T/j.safetensors" "$H/truncated.jpg" --strict
cp "$H"/*.jpg "$H/good/a/"
TWO="input(1,28,28) conv(8,3) relu maxpool(2) flatten dense(2)"
"$CNN" train --spec "$TWO" --data "$H/good" --epochs 1 --out "$T/h.safetensors" 2>"$T/h.err"
if [[ -s $T/h.safetensors ]] && grep -q "skipped .*empty.jpg" "$T/h.err" && grep -q "skipped .*huge.jpg" "$T/h.err"; then
    ok "a folder with bad files trains on the good ones: $(grep -c '^skipped' "$T/h.err") skipped and named"
else fail "folder with bad files" "$(cat "$T/h.err")"; fi
expect_error "--strict folder with bad files" "$CNN" train --spec "$TWO" --data "$H/good" --epochs 1 --strict --out "$T/h2.safetensors"
expect_error "folder that is not a folder of classes" "$CNN" train --spec "$SMALL" --data "$H/good/a" --epochs 1 --out "$T/h3.safetensors"

# A user's photo folder (Tests/photos/make_photos.py): PNGs, a non-ASCII class, a corrupt file,
# EXIF rotation, files that are not images. Everything not used is named; nothing is guessed.
P=$T/photos
python3 "$ROOT/Tests/photos/make_photos.py" "$P" >/dev/null
PHOTO_NET="input(3,32,32) conv(16,3,pad=1) relu maxpool(2) conv(16,3,pad=1) relu maxpool(2) flatten dense(4)"
expect_error "more outputs than classes" "$CNN" train --spec "input(3,32,32) conv(8,3) relu flatten dense(10)" --data "$P/train" --quiet --out "$T/p.safetensors"
grep -q "dense(4)" "$T/err" && ok "... and says to use dense(4)" || fail "more outputs than classes: message" "$(cat "$T/err")"
"$CNN" train --spec "input(3,32,32) conv(8,3) relu flatten dense(10)" --data "$P/train" --allow-extra-outputs --quiet --out "$T/p10.safetensors" \
    && ok "--allow-extra-outputs trains a wider model" || fail "--allow-extra-outputs"
"$CNN" train --spec "$PHOTO_NET" --data "$P/train" --val "$P/test" --epochs 12 --batch-size 16 --optimizer adam --lr 0.003 \
    --save-best "$T/best.safetensors" --early-stop 3 --monitor val_accuracy --out "$T/p.safetensors" 2>"$T/p.err"
if grep -q "160 images in 4 classes, 4 skipped" "$T/p.err" && grep -q "skipped .*anim.gif: not an image type" "$T/p.err" \
   && grep -q "skipped .*\.DS_Store: hidden" "$T/p.err" && grep -q "skipped .*notes.txt" "$T/p.err" && grep -q "skipped .*broken.jpg" "$T/p.err"; then
    ok "photos: 160 images (a third PNG) in 4 classes, each unused file named"
else fail "photos: loading" "$(head -8 "$T/p.err")"; fi
[[ -s $T/best.safetensors ]] && ok "--save-best writes the best epoch's model" || fail "--save-best"
"$CNN" eval --model "$T/p.safetensors" --data "$P/test" --json >"$T/p.json" 2>/dev/null
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['accuracy'] >= 0.75 and 'étoile rouge' in d['classes'], d['accuracy']" "$T/p.json" \
    && ok "photos: accuracy $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$T/p.json") on the test folder" || fail "photos: accuracy" "$(cat "$T/p.json")"
"$CNN" predict --model "$T/p.safetensors" "$P/test/circle/002.png" "$P/test/square/004.png" >"$T/png.txt" 2>&1 \
    && grep -q "002.png: " "$T/png.txt" && ok "predict PNG files" || fail "predict PNG files" "$(cat "$T/png.txt")"
"$CNN" predict --model "$T/p.safetensors" --data "$P/test" --json --limit 3 >"$T/rows.json" 2>/dev/null
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d[1]['image'].endswith('/circle/001.JPEG') and d[1]['label'] == 'circle', d[1]" "$T/rows.json" \
    && ok "predict --data --json names each row's file" || fail "predict --data --json rows" "$(head -c 300 "$T/rows.json")"
expect_error "eval: another model's classes" "$CNN" eval --model "$T/j.safetensors" --data "$P/test" --json
grep -q "Ankle boot" "$T/err" && grep -q "étoile rouge" "$T/err" && ok "... naming both lists" || fail "class lists in the message" "$(cat "$T/err")"
mkdir -p "$T/partial" && cp -r "$P/test/square" "$P/test/étoile rouge" "$T/partial/"
expect_error "eval: a test folder lacking classes" "$CNN" eval --model "$T/p.safetensors" --data "$T/partial" --json
"$CNN" eval --model "$T/p.safetensors" --data "$T/partial" --map-classes --json >"$T/partial.json" 2>/dev/null
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['count'] == 24 and d['confusion'][0] == [0, 0, 0, 0]" "$T/partial.json" \
    && ok "eval --map-classes matches classes by name" || fail "eval --map-classes" "$(cat "$T/partial.json")"

# --resume: the checkpoint's settings and data hold; what differs is refused; --epochs may change.
train --spec "$SMALL" --epochs 2 --batch-size 32 --lr 0.003 --checkpoint "$T/r.ckpt" --out "$T/r.safetensors"
expect_error "resume with other settings" "$CNN" train --resume "$T/r.ckpt" --batch-size 64 --lr 0.05 --out "$T/r2.safetensors"
grep -q "batch-size 64 (the checkpoint's: 32), --lr 0.05 (the checkpoint's: 0.003)" "$T/err" && ok "... naming each" || fail "resume refusal message" "$(cat "$T/err")"
expect_error "resume with other data" "$CNN" train --resume "$T/r.ckpt" --data "$TEST" --out "$T/r2.safetensors"
"$CNN" train --resume "$T/r.ckpt" --epochs 3 --out "$T/r3.safetensors" 2>"$T/r.err"
grep -q "resuming with --epochs 3 (the checkpoint's run had 2)" "$T/r.err" && grep -q "epoch 3/3" "$T/r.err" \
    && ok "resume remembers the data and prints a changed --epochs" || fail "resume --epochs" "$(cat "$T/r.err")"
train --spec "$SMALL" --epochs 3 --batch-size 32 --lr 0.003 --out "$T/r3-direct.safetensors"
cmp -s "$T/r3.safetensors" "$T/r3-direct.safetensors" && ok "2 epochs + resume to 3 = 3 epochs, byte for byte" || fail "resume bytes"

# Ctrl-C: stops at the end of the batch, saves the model and a checkpoint that resumes exactly.
"$CNN" train --spec "$REF" --data "$TRAIN" --epochs 6 --batch-size 32 --flip --threads 1 --seed 3 --quiet --out "$T/full.safetensors"
"$CNN" train --spec "$REF" --data "$TRAIN" --epochs 6 --batch-size 32 --flip --threads 1 --seed 3 --quiet --out "$T/int.safetensors" \
    --log "$T/int.csv" 2>"$T/int.err" &
pid=$!
# Interrupted in its second epoch: once the first epoch's log line is written (the handler is set).
for _ in $(seq 600); do [[ -s $T/int.csv ]] && break; sleep 0.05; done
kill -INT $pid
wait $pid; rc=$?
if [[ $rc -eq 130 ]] && [[ -s $T/int.safetensors && -s $T/int.checkpoint.safetensors ]] && grep -q "interrupted at epoch" "$T/int.err"; then
    ok "Ctrl-C saves the model and a checkpoint (exit 130): $(cut -c1-60 "$T/int.err")"
    "$CNN" train --resume "$T/int.checkpoint.safetensors" --threads 2 --quiet --out "$T/int.safetensors" \
        && cmp -s "$T/full.safetensors" "$T/int.safetensors" && ok "... and resuming gives the uninterrupted run's bytes" \
        || fail "resume after Ctrl-C" "models differ"
else
    fail "Ctrl-C" "exit $rc: $(cat "$T/int.err")"
fi

# Small things.
expect_error "--spec naming a missing file" "$CNN" train --spec "$T/arch.txt" --data "$TRAIN" --out "$T/x.safetensors"
grep -q "no such file" "$T/err" && ok "... says no such file" || fail "--spec missing file message" "$(cat "$T/err")"
"$CNN" --version | grep -q "threads: $(nproc)" && ok "all cores by default: $("$CNN" --version)" || fail "threads default" "$("$CNN" --version)"
CNN_NUM_THREADS=1 "$CNN" --version | grep -q "threads: 1" && ok "CNN_NUM_THREADS=1 overrides" || fail "CNN_NUM_THREADS"

# idx2jpeg writes a folder tree that loads back with the same labels.
"$CNN" idx2jpeg --data "$TEST" --out "$T/tree" --limit 50 2>/dev/null
[[ $(find "$T/tree" -name '*.jpg' | wc -l) -eq 50 && -d "$T/tree/Ankle boot" ]] && ok "idx2jpeg writes 50 files by class" || fail "idx2jpeg"

# A failed save keeps the previous model intact.
cp "$T/a.safetensors" "$T/keep.safetensors"
chmod 555 "$T"
if [[ $(id -u) -ne 0 ]]; then
    expect_error "unwritable folder" train --spec "$REF" --out "$T/keep.safetensors"
fi
chmod 755 "$T"
cmp -s "$T/a.safetensors" "$T/keep.safetensors" && ok "previous model intact" || fail "previous model intact"

# The documentation agrees with the tool: every option of every command's --help is in README.md,
# and the manual page (scripts/man.sh, what make install installs) holds each command's help.
missing=""
for command in train eval predict summary export import idx2jpeg; do
    for option in $("$CNN" help $command | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
        [[ $option == --help || $option == --version ]] && continue
        grep -qF -- "$option" "$ROOT/README.md" || missing+=" $command $option"
    done
done
[[ -z $missing ]] && ok "README.md names every option of every command" || fail "README.md lacks options" "$missing"
if "$ROOT/scripts/man.sh" "$CNN" >"$T/cnn.1" && grep -q '^.TH CNN 1' "$T/cnn.1" && grep -q 'early-stop' "$T/cnn.1" \
   && grep -q 'CNN IDX2JPEG' "$T/cnn.1"; then ok "manual page made from the help texts"; else fail "manual page" "$(head -c 300 "$T/cnn.1")"; fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
