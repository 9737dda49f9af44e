"""The networks people deploy (examples/architectures/), SwiftCNN side by side with PyTorch
(channels-last) and ONNX Runtime in one process, in alternating segments: this machine's speed
drifts by 30-45 % over minutes, so each ratio is the median of rounds that ran back to back.

    pip install torch onnxruntime onnx numpy
    make lib
    CNN_LIBRARY=build/lib/libcnn.so PYTHONPATH=bindings/python:examples/architectures \\
        python3 Benchmarks/architectures.py [--rounds 3] [--threads 2] [--only resnet20-train,...]

The cases are the targets of the architectures issue: ResNet-20 (3x32x32) training at batch 128,
MobileNetV2 (3x64x64, 10 classes) training at batch 32, and inference of ResNet-20 and of
MobileNetV2 (3x224x224) at batch 1 (median call) and batch 32 (images/s); `--rss` adds the peak
resident size of ResNet-20 training at batch 128, each engine in a fresh process. The training
cases and `--rss` also run SwiftCNN with `recompute_blocks` (less memory for a second forward of
the blocks). All three run the same network: PyTorch's is built from the same architecture text (pytorch.py's cnn_to_torch) and
ONNX Runtime runs its export. Every engine gets the same float32 NCHW arrays; ours go through the
Python binding (the ctypes call and its argument checks are in our times, as ONNX Runtime's
Python binding is in its).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHS = os.path.join(HERE, "..", "examples", "architectures")


def architecture(name, size=None, classes=None):
    text = open(os.path.join(ARCHS, name + ".txt")).read()
    lines = [line.split("#")[0] for line in text.splitlines()]
    text = " ".join(line for line in lines if line.strip())
    if size is not None:
        import re
        text = re.sub(r"input\(3,\d+,\d+\)", "input(3,%d,%d)" % (size, size), text)
    if classes is not None:
        head, _, last = text.rpartition("dense(")
        text = head + "dense(%d)" % classes + last[last.index(")") + 1:]
    return text


def timed(fn, seconds):
    """Calls fn for about `seconds` after one warm-up call; the median call time."""
    fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Ours:
    def __init__(self, text, threads, recompute_blocks=False):
        import cnn
        self.cnn = cnn
        self.model = cnn.Model(text, seed=1)
        self.threads = threads
        self.recompute_blocks = recompute_blocks

    def train(self, x, y, batch):
        data = self.cnn.Dataset.from_numpy(x, y, classes=[str(i) for i in range(int(y.max()) + 1)])
        settings = dict(epochs=1, batch_size=batch, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                        threads=self.threads, verbose=0, recompute_blocks=self.recompute_blocks)
        return lambda: self.model.fit(data, **settings)

    def infer(self, x):
        return lambda: self.model.predict(x)


class Torch:
    def __init__(self, text, threads):
        import torch
        from pytorch import cnn_to_torch
        torch.set_num_threads(threads)
        torch.manual_seed(1)
        self.torch = torch
        self.model = cnn_to_torch(text).to(memory_format=torch.channels_last)

    def train(self, x, y, batch):
        torch = self.torch
        model = self.model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        xs = [torch.from_numpy(x[i:i + batch]).contiguous(memory_format=torch.channels_last) for i in range(0, len(x), batch)]
        ys = [torch.from_numpy(y[i:i + batch].astype(np.int64)) for i in range(0, len(y), batch)]

        def epoch():
            for xb, yb in zip(xs, ys):
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
        return epoch

    def infer(self, x):
        torch = self.torch
        model = self.model.eval()
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def call():
            with torch.no_grad():
                model(xt)
        return call


class OnnxRuntime:
    def __init__(self, text, threads):
        import onnxruntime as ort
        import torch
        from pytorch import cnn_to_torch
        torch.manual_seed(1)
        model = cnn_to_torch(text).eval()
        c, h, w = [int(v) for v in text[text.index("input(") + 6:text.index(")")].split(",")]
        path = tempfile.mktemp(suffix=".onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.rand(1, c, h, w), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        os.unlink(path)

    def infer(self, x):
        return lambda: self.session.run(None, {"x": x})


CASES = [
    # name, architecture file, input size, classes, kind, batch, images per timed training call
    ("resnet20-train", "resnet20", None, None, "train", 128, 1280),
    ("mobilenetv2-64-train", "mobilenetv2", 64, 10, "train", 32, 320),
    ("resnet20-b1", "resnet20", None, None, "infer", 1, None),
    ("resnet20-b32", "resnet20", None, None, "infer", 32, None),
    ("mobilenetv2-224-b1", "mobilenetv2", 224, None, "infer", 1, None),
    ("mobilenetv2-224-b32", "mobilenetv2", 224, None, "infer", 32, None),
]


def run_case(case, rounds, threads, seconds):
    name, arch, size, classes, kind, batch, images = case
    text = architecture(arch, size, classes)
    shape = tuple(int(v) for v in text[text.index("input(") + 6:text.index(")")].split(","))
    rng = np.random.default_rng(1)
    engines = {"SwiftCNN": Ours(text, threads), "PyTorch channels-last": Torch(text, threads)}
    if kind == "infer":
        engines["ONNX Runtime"] = OnnxRuntime(text, threads)
        x = rng.random((batch,) + shape, dtype=np.float32)
        calls = {k: e.infer(x) for k, e in engines.items()}
    else:
        k = classes or 10
        x = rng.random((images,) + shape, dtype=np.float32)
        y = rng.integers(0, k, images).astype(np.int32)
        # The memory-saving option's cost, in the same rounds.
        engines["SwiftCNN recompute_blocks"] = Ours(text, threads, recompute_blocks=True)
        calls = {k2: e.train(x, y, batch) for k2, e in engines.items()}
    per_round = {k: [] for k in calls}
    for _ in range(rounds):
        for k, call in calls.items():
            per_round[k].append(timed(call, seconds))
    ours = per_round["SwiftCNN"]
    print("\n%s (%s, batch %d, %d threads)" % (name, "x".join(map(str, shape)), batch, threads))
    for k, times in per_round.items():
        t = statistics.median(times)
        if kind == "train":
            figure = "%8.0f images/s" % (images / t)
        elif batch == 1:
            figure = "%8.3f ms" % (t * 1e3)
        else:
            figure = "%8.0f images/s" % (batch / t)
        ratio = "" if k == "SwiftCNN" else "   SwiftCNN: %.2fx its speed (median of per-round ratios)" % \
            statistics.median(theirs / mine for mine, theirs in zip(ours, times))
        if k.startswith("SwiftCNN "):
            ratio = "   %.2fx SwiftCNN's speed, %.2fx PyTorch's" % (
                statistics.median(mine / theirs for mine, theirs in zip(ours, times)),
                statistics.median(t / mine for mine, t in zip(times, per_round["PyTorch channels-last"])))
        print("  %-26s %s%s" % (k, figure, ratio))


RSS_SCRIPT = r"""
import sys, numpy as np
def hwm():   # the peak resident size of this process (kB); ru_maxrss would include the parent's
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
engine, text, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(1)
x = rng.random((512, 3, 32, 32), dtype=np.float32); y = rng.integers(0, 10, 512).astype(np.int32)
if engine.startswith("swiftcnn"):
    import cnn
    m = cnn.Model(text, seed=1)
    data = cnn.Dataset.from_numpy(x, y, classes=[str(i) for i in range(10)])
    before = hwm()
    m.fit(data, epochs=1, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, threads=threads, verbose=0,
          recompute_blocks=engine == "swiftcnn-recompute")
else:
    import torch
    from pytorch import cnn_to_torch
    torch.set_num_threads(threads)
    model = cnn_to_torch(text).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    before = hwm()
    for i in range(0, 512, 128):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x[i:i+128]).contiguous(memory_format=torch.channels_last)),
                                          torch.from_numpy(y[i:i+128].astype(np.int64))).backward()
        opt.step()
print(before, hwm())
"""


def rss(threads):
    text = architecture("resnet20")
    print("\nresnet20 training at batch 128, peak resident size (each engine in its own Python process;"
          " 'before': after loading the engine, the model and 512 images)")
    figures = {}
    for engine in ("swiftcnn", "swiftcnn-recompute", "torch"):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, engine, text, str(threads)], capture_output=True,
                             text=True, check=True, env=dict(os.environ)).stdout.split()
        before, peak = int(out[0]) / 1024, int(out[1]) / 1024
        figures[engine] = (before, peak)
        print("  %-18s before training %6.0f MB, peak %6.0f MB, growth in training %6.0f MB" % (engine, before, peak, peak - before))
    for ours in ("swiftcnn", "swiftcnn-recompute"):
        ratio = figures[ours][1] / figures["torch"][1]
        growth = (figures[ours][1] - figures[ours][0]) / max(1, figures["torch"][1] - figures["torch"][0])
        print("  %s / PyTorch: peak %.2fx, growth in training %.2fx" % (ours, ratio, growth))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per engine per round")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--rss", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, ARCHS)
    only = set(filter(None, args.only.split(",")))
    for case in CASES:
        if not only or case[0] in only:
            run_case(case, args.rounds, args.threads, args.seconds)
    if args.rss:
        rss(args.threads)


if __name__ == "__main__":
    main()
