#!/usr/bin/env bash
# The demo: trains the reference network of REFERENCE.md and evaluates it. On the full
# Fashion-MNIST when Debian's dataset-fashion-mnist is installed (apt-get install -y
# dataset-fashion-mnist), otherwise on the sample shipped in data/fashion-mnist-sample.
set -euo pipefail
CNN=${1:-.build/release/cnn}
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
SPEC="input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) flatten dense(128) relu dense(10)"
FULL=/usr/share/datasets/fashion-mnist
SAMPLE=data/fashion-mnist-sample
CLASSES=$SAMPLE/classes.txt
if [[ -f $FULL/train-images-idx3-ubyte.gz ]]; then
    DATA=$FULL; EPOCHS=${EPOCHS:-1}
    echo "== demo on the full Fashion-MNIST ($FULL): 60,000 training and 10,000 test images"
else
    DATA=$SAMPLE; EPOCHS=${EPOCHS:-5}
    echo "== demo on the shipped sample ($SAMPLE): 2,000 training and 500 test images"
    echo "   (apt-get install -y dataset-fashion-mnist for the full dataset)"
fi
THREADS=${THREADS:-$(nproc)}
"$CNN" summary "$SPEC"
echo
"$CNN" train --spec "$SPEC" --data "$DATA/train-images-idx3-ubyte.gz" --val "$DATA/t10k-images-idx3-ubyte.gz" \
    --classes "$CLASSES" --epochs "$EPOCHS" --batch-size 64 --optimizer sgd --lr 0.01 --momentum 0.9 \
    --seed 1 --threads "$THREADS" --out "$OUT/fashion.safetensors" --log "$OUT/train-log.csv"
echo
"$CNN" eval --model "$OUT/fashion.safetensors" --data "$DATA/t10k-images-idx3-ubyte.gz" --threads "$THREADS"
echo
echo "== the first five test images:"
"$CNN" predict --model "$OUT/fashion.safetensors" --data "$DATA/t10k-images-idx3-ubyte.gz" --limit 5 --top 2
echo
echo "model: $OUT/fashion.safetensors, log: $OUT/train-log.csv"
