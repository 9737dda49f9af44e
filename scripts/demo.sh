#!/usr/bin/env bash
# The demo: trains the reference network of REFERENCE.md from folders of JPEGs, evaluates it, and
# predicts a few JPEG files by name. On the full Fashion-MNIST when Debian's dataset-fashion-mnist
# is installed (apt-get install -y dataset-fashion-mnist; its IDX files are written out as JPEG
# folders first), otherwise on the JPEG sample shipped in data/fashion-mnist-jpeg.
set -euo pipefail
CNN=${1:-.build/release/cnn}
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
SPEC="input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"
FULL=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
CLASSES=data/fashion-mnist-sample/classes.txt
if [[ -f $FULL/train-images-idx3-ubyte.gz ]]; then
    DATA=$OUT/fashion-mnist-jpeg; EPOCHS=${EPOCHS:-1}
    echo "== demo on the full Fashion-MNIST ($FULL): 60,000 training and 10,000 test images"
    if [[ ! -d $DATA/test ]]; then
        "$CNN" idx2jpeg --data "$FULL/train-images-idx3-ubyte.gz" --classes "$CLASSES" --out "$DATA/train.partial"
        "$CNN" idx2jpeg --data "$FULL/t10k-images-idx3-ubyte.gz" --classes "$CLASSES" --out "$DATA/test.partial"
        mv "$DATA/train.partial" "$DATA/train"; mv "$DATA/test.partial" "$DATA/test"
    fi
else
    DATA=data/fashion-mnist-jpeg; EPOCHS=${EPOCHS:-5}
    echo "== demo on the shipped JPEG sample ($DATA): 2,000 training and 500 test images"
    echo "   (apt-get install -y dataset-fashion-mnist for the full dataset)"
fi
# Every core the process may use, unless THREADS=N says otherwise.
THREADS=${THREADS:-}
"$CNN" summary "$SPEC"
echo
"$CNN" train --spec "$SPEC" --data "$DATA/train" --val "$DATA/test" \
    --epochs "$EPOCHS" --batch-size 64 --optimizer sgd --lr 0.01 --momentum 0.9 \
    --seed 1 ${THREADS:+--threads "$THREADS"} --out "$OUT/fashion.safetensors" --log "$OUT/train-log.csv"
echo
"$CNN" eval --model "$OUT/fashion.safetensors" --data "$DATA/test" ${THREADS:+--threads "$THREADS"}
echo
echo "== five test images, by file name:"
FILES=()
for class in Bag Sneaker Trouser Dress Coat; do
    in_class=("$DATA/test/$class"/*.jpg)
    FILES+=("${in_class[0]}")
done
"$CNN" predict --model "$OUT/fashion.safetensors" "${FILES[@]}" --top 2
echo
echo "model: $OUT/fashion.safetensors, log: $OUT/train-log.csv"
