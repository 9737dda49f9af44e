"""Fine-tuning a network trained elsewhere: trained in PyTorch on one task, exported to ONNX,
imported here and fine-tuned on another, against the same network trained here from scratch for
the same number of epochs.

    CNN_LIBRARY=build/lib/libcnn.so PYTHONPATH=bindings/python python examples/finetune/finetune.py

Task A: Fashion-MNIST's first five classes (T-shirt/top, Trouser, Pullover, Dress, Coat), the
whole training set of them (30,000 images), trained in PyTorch. Task B: the other five (Sandal,
Shirt, Sneaker, Bag, Ankle boot) from only SHOTS training images per class, tested on all 5,000
test images of those classes. Needs torch and onnx, and Fashion-MNIST (Debian's
dataset-fashion-mnist, or FASHION_MNIST_DIR).
"""
import gzip
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

import cnn

FULL = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
SHOTS = int(os.environ.get("SHOTS", "100"))
EPOCHS = int(os.environ.get("EPOCHS", "20"))
SEEDS = [int(s) for s in os.environ.get("SEEDS", "1,2,3").split(",")]


def idx(name):
    with gzip.open(os.path.join(FULL, name)) as f:
        data = f.read()
    if data[2] == 8 and data[3] == 3:
        n, h, w = (int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, h, w)
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


x_train, y_train = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
x_test, y_test = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")

# Conv blocks with batch norm, global pooling, a dense head: layers 0-12 are the features.
TEXT = ("input(1,28,28) conv(32,3,pad=1,bias=false) batchnorm relu maxpool(2) "
        "conv(64,3,pad=1,bias=false) batchnorm relu maxpool(2) "
        "conv(128,3,pad=1,bias=false) batchnorm relu globalavgpool flatten dense(5)")
FEATURES = 12   # freeze layers 0-11: every convolution and batch norm


def torch_net():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 5))


def train_task_a(path):
    """Task A in PyTorch (3 epochs, Adam), exported to ONNX with its batch norms kept."""
    torch.manual_seed(0)
    keep = y_train < 5
    x = torch.from_numpy(x_train[keep].astype(np.float32) / 255)
    y = torch.from_numpy(y_train[keep])
    mean, std = x.mean().item(), x.std().item()
    net = torch_net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    start = time.time()
    for epoch in range(3):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = order[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(net((x[b] - mean) / std), y[b]).backward()
            opt.step()
    net.eval()
    keep_test = y_test < 5
    with torch.no_grad():
        xt = (torch.from_numpy(x_test[keep_test].astype(np.float32) / 255) - mean) / std
        accuracy = (net(xt).argmax(1).numpy() == y_test[keep_test]).mean()
    print("task A in PyTorch: %d images, 3 epochs in %.0f s, test accuracy %.2f %%" % (len(x), time.time() - start, 100 * accuracy))

    class Normalized(nn.Module):  # the normalization goes into the graph, as the importer reads it
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor([mean]).view(1, 1, 1, 1))
            self.register_buffer("std", torch.tensor([std]).view(1, 1, 1, 1))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    torch.onnx.export(Normalized(net).eval(), (torch.rand(1, 1, 28, 28),), path, dynamo=False, opset_version=17,
                      do_constant_folding=False, input_names=["pixels"], dynamic_axes={"pixels": {0: "batch"}})


def task_b(seed):
    """SHOTS training images per class of classes 5-9 (chosen by seed), and all their test images."""
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(np.flatnonzero(y_train == c), SHOTS, replace=False) for c in range(5, 10)])
    keep = y_test >= 5
    names = ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    train = cnn.Dataset.from_numpy(x_train[picks].astype(np.float32) / 255, (y_train[picks] - 5).astype(np.int32), classes=names)
    test = cnn.Dataset.from_numpy(x_test[keep].astype(np.float32) / 255, (y_test[keep] - 5).astype(np.int32), classes=names)
    return train, test


def run(model, train, test, seed, lr=1e-3, **settings):
    start = time.time()
    model.fit(train, epochs=EPOCHS, batch_size=32, optimizer="adam", lr=lr, seed=seed, flip=False, verbose=0, **settings)
    seconds = time.time() - start
    return model.evaluate(test)["accuracy"], seconds


with tempfile.TemporaryDirectory() as tmp:
    onnx_path = os.path.join(tmp, "task-a.onnx")
    train_task_a(onnx_path)
    pretrained = cnn.Model.load(onnx_path)
    assert pretrained.architecture == TEXT, pretrained.architecture
    print("imported:", pretrained.architecture)
    rows = []
    for seed in SEEDS:
        train, test = task_b(seed)
        scratch = run(cnn.Model(TEXT, seed=seed), train, test, seed)
        # The new head alone learns from scratch: a larger step than the pretrained layers take.
        head = run(pretrained.new_head(5, seed=seed), train, test, seed, lr=1e-2, freeze_until=FEATURES)
        whole = run(pretrained.new_head(5, seed=seed), train, test, seed)
        rows.append((seed, scratch, head, whole))
        print("seed %d: from scratch %.2f %% (%.1f s) | fine-tuned, features frozen %.2f %% (%.1f s) | fine-tuned, all layers %.2f %% (%.1f s)"
              % (seed, 100 * scratch[0], scratch[1], 100 * head[0], head[1], 100 * whole[0], whole[1]))
    mean = lambda k: 100 * np.mean([r[k][0] for r in rows])  # noqa: E731
    print("task B, %d images per class, %d epochs, mean of %d seeds: from scratch %.2f %%, fine-tuned head %.2f %%, fine-tuned all %.2f %%"
          % (SHOTS, EPOCHS, len(rows), mean(1), mean(2), mean(3)))
