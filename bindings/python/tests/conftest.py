import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
if "CNN_LIBRARY" not in os.environ and os.path.exists(os.path.join(ROOT, "build", "lib", "libcnn.so")):
    os.environ["CNN_LIBRARY"] = os.path.join(ROOT, "build", "lib", "libcnn.so")

SAMPLE = os.path.join(ROOT, "data", "fashion-mnist-sample")
JPEGS = os.path.join(ROOT, "data", "fashion-mnist-jpeg")
TOOL = os.environ.get("CNN_TOOL", os.path.join(ROOT, ".build", "release", "cnn"))
SMALL = "input(1,28,28) conv(8,3) relu maxpool(2) flatten dense(10)"
REFERENCE = ("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) conv(64,3,pad=1) relu maxpool(2) "
             "flatten dense(128) relu dense(10)")
