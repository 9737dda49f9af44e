"""Trains the reference network on Fashion-MNIST JPEG folders, saves it, plots the curves and
predicts a few images.

    python3 bindings/python/examples/train_fashion.py [--data DIR] [--epochs N] [--out DIR]

DIR holds train/ and test/ folders of class sub-folders of JPEGs: by default the sample shipped in
data/fashion-mnist-jpeg, or demo-out/fashion-mnist-jpeg (the full dataset, written by `make demo`)
when it exists.
"""
import argparse
import glob
import os
import sys

import cnn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
REFERENCE = ("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) "
             "flatten dense(128) relu dense(10)")


def main():
    full = os.path.join(ROOT, "demo-out", "fashion-mnist-jpeg")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=full if os.path.isdir(os.path.join(full, "test")) else os.path.join(ROOT, "data", "fashion-mnist-jpeg"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="fashion-out")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = cnn.Model(REFERENCE, seed=1)
    print(model.summary())
    train = cnn.Dataset.from_folder(os.path.join(args.data, "train"))
    test = cnn.Dataset.from_folder(os.path.join(args.data, "test"))
    history = model.fit(train, epochs=args.epochs, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                        validation=test, threads=os.cpu_count() or 1)
    result = model.evaluate(test)
    print("test accuracy %.4f, loss %.4f on %d images" % (result["accuracy"], result["loss"], result["count"]))

    path = os.path.join(args.out, "fashion.safetensors")
    model.save(path)
    print("saved", path)
    try:
        history.plot(os.path.join(args.out, "curves.png"))
        print("plotted", os.path.join(args.out, "curves.png"))
    except ImportError as e:
        print(e)

    loaded = cnn.Model.load(path)
    files = sorted(glob.glob(os.path.join(args.data, "test", "*", "*.jpg")))[::100][:5]
    for file, top in zip(files, loaded.predict_jpeg(files, top=2)):
        print("%s: %s" % (os.path.relpath(file, args.data), ", ".join("%s %.3f" % t for t in top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
