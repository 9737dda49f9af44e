"""Writes the small Fashion-MNIST sample shipped in data/fashion-mnist-sample/ (IDX, gzip).

The first 2,000 training and 500 test images of Fashion-MNIST (MIT license, see LICENSE beside
the sample), taken from Debian's dataset-fashion-mnist package:

    python3 data/make_sample.py /usr/share/datasets/fashion-mnist data/fashion-mnist-sample
"""
import gzip
import struct
import sys


def read(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def write(path, data):
    # mtime=0 keeps the archive bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(data)


def take(src, dst, split, n):
    images = read(f"{src}/{split}-images-idx3-ubyte.gz")
    labels = read(f"{src}/{split}-labels-idx1-ubyte.gz")
    _, count, rows, cols = struct.unpack(">IIII", images[:16])
    assert count >= n
    write(f"{dst}/{split}-images-idx3-ubyte.gz",
          struct.pack(">IIII", 0x803, n, rows, cols) + images[16:16 + n * rows * cols])
    write(f"{dst}/{split}-labels-idx1-ubyte.gz", struct.pack(">II", 0x801, n) + labels[8:8 + n])


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    take(src, dst, "train", 2000)
    take(src, dst, "t10k", 500)
