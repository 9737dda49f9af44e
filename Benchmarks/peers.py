"""The same two networks in PyTorch and ONNX Runtime, on this machine, next to SwiftCNN's figures
from `cnn-bench net --out FILE.json`; prints each peer's numbers and our ratio to it.

    pip install torch onnxruntime onnx
    python3 Benchmarks/peers.py build/bench/net.json [--out build/bench/peers.json]
    python3 Benchmarks/peers.py --alternate-latency Benchmarks/.build/release/cnn-bench [ROUNDS]

The second form compares the reference network's batch-1 latency on 2 threads with ONNX
Runtime's, in alternating 10-second runs of each (`CNN_BENCH_PROFILE=latency`): on a machine
whose speed drifts for minutes at a time, a single pair of runs minutes apart can differ by 30 %.

Methods follow REFERENCE.md: data in memory; after warm-up, the median of timed segments; PyTorch
with torch.set_num_threads(T), both NCHW and channels-last (its fastest, the one compared);
ONNX Runtime with intra_op_num_threads=T; latency from single calls after warm-up calls.
"""
import json
import statistics
import sys
import tempfile
import time

import numpy as np

QUICK = "--quick" in sys.argv


def reference():
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def wide():
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8192, 10))


def median_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_numbers(make, shape, threads, channels_last):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = make()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    out = {}
    steps = 4 if shape[0] == 3 else 8
    for batch in (16, 64, 256):
        x = torch.rand(batch, *shape).to(memory_format=fmt)
        y = torch.randint(0, 10, (batch,))

        def segment():
            for _ in range(steps):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
        out["train_b%d" % batch] = steps * batch / median_time(segment, 3 if QUICK else 5)
    model.eval()
    with torch.no_grad():
        x1 = torch.rand(1, *shape).to(memory_format=fmt)
        calls = 200 if shape[0] == 3 else 2000
        for _ in range(calls // 10):
            model(x1)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
        times.sort()
        out["latency_b1_median_us"] = times[len(times) // 2] * 1e6
        out["latency_b1_p99_us"] = times[len(times) * 99 // 100] * 1e6
        x256 = torch.rand(256, *shape).to(memory_format=fmt)
        out["infer_b256"] = 256 / median_time(lambda: model(x256))
    return out


def onnx_session(make, shape, threads):
    """An ONNX Runtime session of the ONNX export of `make()`, on `threads` threads."""
    import onnxruntime as ort
    import torch
    import warnings
    model = make().eval()
    path = tempfile.mktemp(suffix=".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:   # the TorchScript exporter needs no onnxscript
            torch.onnx.export(model, torch.rand(1, *shape), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        except TypeError:   # older PyTorch without the dynamo argument
            torch.onnx.export(model, torch.rand(1, *shape), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_call_timer(session, shape):
    """A function timing one batch-1 call of `session`."""
    x1 = np.random.rand(1, *shape).astype(np.float32)

    def call():
        t = time.perf_counter()
        session.run(None, {"x": x1})
        return time.perf_counter() - t
    return call


def onnx_numbers(make, shape, threads):
    session = onnx_session(make, shape, threads)
    call = onnx_call_timer(session, shape)
    calls = 200 if shape[0] == 3 else 2000
    for _ in range(calls // 10):
        call()
    times = sorted(call() for _ in range(calls))
    x256 = np.random.rand(256, *shape).astype(np.float32)
    return {"latency_b1_median_us": times[len(times) // 2] * 1e6, "latency_b1_p99_us": times[len(times) * 99 // 100] * 1e6,
            "infer_b256": 256 / median_time(lambda: session.run(None, {"x": x256}))}


def alternate_latency(bench, rounds):
    import os
    import re
    import subprocess
    call = onnx_call_timer(onnx_session(reference, (1, 28, 28), 2), (1, 28, 28))
    env = dict(os.environ, CNN_BENCH_PROFILE="latency", CNN_BENCH_NETS="ref", CNN_BENCH_THREADS="2")
    ratios = []
    for r in range(rounds):
        out = subprocess.run([bench, "net"], env=env, capture_output=True, text=True, check=True).stdout
        ours = float(re.search(r"latency median ([0-9.]+) us", out).group(1))
        for _ in range(200):
            call()
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < 10:
            times.append(call())
        times.sort()
        theirs = times[len(times) // 2] * 1e6
        ratios.append(ours / theirs)
        print("round %d: SwiftCNN %.1f us, ONNX Runtime %.1f us: %.2fx of its latency" % (r + 1, ours, theirs, ours / theirs))
    print("median ratio %.2fx (below 1: SwiftCNN is faster)" % statistics.median(ratios))


def main():
    if sys.argv[1] == "--alternate-latency":
        return alternate_latency(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4)
    ours = json.load(open(sys.argv[1]))
    results = {"swiftcnn": ours}
    higher_is_better = ("train_b16", "train_b64", "train_b256", "infer_b256")
    for name, make, shape in (("ref", reference, (1, 28, 28)), ("wide", wide, (3, 32, 32))):
        for threads in (1, 2):
            key = "%s threads=%d" % (name, threads)
            mine = ours.get(key, {})
            peers = {}
            try:
                peers["pytorch channels-last"] = torch_numbers(make, shape, threads, True)
                peers["pytorch NCHW"] = torch_numbers(make, shape, threads, False)
            except ImportError as e:
                print("PyTorch: %s (pip install torch)" % e)
            try:
                peers["onnxruntime"] = onnx_numbers(make, shape, threads)
            except ImportError as e:
                print("ONNX Runtime: %s (pip install onnxruntime onnx)" % e)
            results[key] = peers
            print("\n%s, %d thread(s)" % (name, threads))
            metrics = ("train_b16", "train_b64", "train_b256", "latency_b1_median_us", "latency_b1_p99_us", "infer_b256")
            print("%-24s" % "" + "".join("%22s" % m for m in metrics))
            print("%-24s" % "SwiftCNN" + "".join("%22.0f" % mine[m] if m in mine else "%22s" % "-" for m in metrics))
            for peer, numbers in peers.items():
                cells = []
                for m in metrics:
                    if m not in numbers or m not in mine:
                        cells.append("%22s" % "-")
                        continue
                    ratio = mine[m] / numbers[m] if m in higher_is_better else numbers[m] / mine[m]
                    cells.append("%14.0f (%4.2fx)" % (numbers[m], ratio))
                print("%-24s" % peer + "".join(cells))
    print("\n(x): SwiftCNN's advantage; above 1 means SwiftCNN is faster (throughput ratio, or peer latency / ours)")
    if "--out" in sys.argv:
        json.dump(results, open(sys.argv[sys.argv.index("--out") + 1], "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
