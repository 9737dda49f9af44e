#!/usr/bin/env bash
# The accuracy recipe: trains a small all-convolutional network with batch norm on the full
# Fashion-MNIST training set (60,000 images) and prints its accuracy on the 10,000 test images,
# which the training never sees (no validation on them, no model selection by them).
#
#   make build && scripts/fashion-best.sh            # or: scripts/fashion-best.sh path/to/cnn
#
# Needs Debian's dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist), or
# FASHION_MNIST_DIR pointing at the four IDX files. Writes $OUT/fashion-best.safetensors and the
# CSV log of every epoch ($OUT/fashion-best.csv), and prints the training's wall time.
# EPOCHS, THREADS and SEED override the recipe's values (README.md gives the measured run).
set -euo pipefail
CNN=${1:-.build/release/cnn}
OUT=${OUT:-fashion-best-out}
FULL=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
CLASSES=data/fashion-mnist-sample/classes.txt
EPOCHS=${EPOCHS:-15}
THREADS=${THREADS:-}
SEED=${SEED:-1}
if [[ ! -f $FULL/train-images-idx3-ubyte.gz ]]; then
    echo "fashion-best: no Fashion-MNIST in $FULL (apt-get install -y dataset-fashion-mnist, or set FASHION_MNIST_DIR)" >&2
    exit 1
fi
mkdir -p "$OUT"
# 3x3 convolutions, one at 28x28 and two each at 14x14 and 7x7 (where a channel costs least),
# batch norm and ReLU after each, global average pooling into the classifier.
SPEC="input(1,28,28)
conv(32,3,pad=1,bias=false) batchnorm relu maxpool(2)
conv(64,3,pad=1,bias=false) batchnorm relu conv(64,3,pad=1,bias=false) batchnorm relu maxpool(2)
conv(128,3,pad=1,bias=false) batchnorm relu conv(128,3,pad=1,bias=false) batchnorm relu
globalavgpool flatten dense(10)"
"$CNN" summary "$SPEC" | tail -1
# SGD with Nesterov momentum, a one-epoch warm-up into a cosine decay, weight decay on the
# weights only, label smoothing, and horizontal flips.
start=$(date +%s)
"$CNN" train --spec "$SPEC" --data "$FULL/train-images-idx3-ubyte.gz" --classes "$CLASSES" \
    --epochs "$EPOCHS" --batch-size 128 --optimizer sgd --lr 0.3 --momentum 0.9 --nesterov \
    --weight-decay 5e-4 --no-decay-bias-norm --schedule cosine --warmup 1 --label-smoothing 0.1 \
    --flip --seed "$SEED" ${THREADS:+--threads "$THREADS"} \
    --out "$OUT/fashion-best.safetensors" --log "$OUT/fashion-best.csv"
end=$(date +%s)
echo "training took $((end - start)) s (wall time); the log of every epoch: $OUT/fashion-best.csv"
"$CNN" eval --model "$OUT/fashion-best.safetensors" --data "$FULL/t10k-images-idx3-ubyte.gz" ${THREADS:+--threads "$THREADS"}
# Test-time augmentation: each test image's logits averaged with its mirror's (the network was
# trained with flips), one more forward pass per image.
echo
echo "with each test image's mirror (cnn eval --tta flip):"
"$CNN" eval --tta flip --model "$OUT/fashion-best.safetensors" --data "$FULL/t10k-images-idx3-ubyte.gz" ${THREADS:+--threads "$THREADS"} | sed -n 2,3p
