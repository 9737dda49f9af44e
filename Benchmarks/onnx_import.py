"""Networks built in PyTorch, exported with torch.onnx.export and imported here, against ONNX
Runtime running the same file, in one process, in alternating rounds (this machine's speed
drifts by 30-45 % over minutes; each ratio is the median of rounds that ran back to back).

    pip install torch onnxruntime onnx numpy
    make lib
    CNN_LIBRARY=build/lib/libcnn.so PYTHONPATH=bindings/python python3 Benchmarks/onnx_import.py \\
        [--rounds 3] [--seconds 3] [--threads 2] [--size 224] [--only resnet18,...]

The networks of the ONNX issue's targets (examples/architectures/torchvision_nets.py: ResNet-18,
MobileNetV2, EfficientNet-B0, random weights, eval mode, constant folding on as torch's default:
batch norm folded into the convolutions), at batch 1 (median latency) and batch 32 (images/s).
Before timing, the imported model's logits are checked against ONNX Runtime's (relative 1e-4).
"""
import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from architectures import timed  # noqa: E402  the median call time after a warm-up


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    os.environ.setdefault("CNN_NUM_THREADS", str(args.threads))
    import torch
    import onnxruntime as ort
    import cnn
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("nets", os.path.join(HERE, "..", "examples", "architectures", "torchvision_nets.py"))
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    cnn.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    names = [n for n in nets.NETWORKS if not args.only or n in args.only.split(",")]
    rng = np.random.default_rng(0)
    print("network            batch  ours           ONNX Runtime   ratio (ours / ORT time; ORT / ours images/s)")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            net = nets.NETWORKS[name]().eval()
            path = os.path.join(tmp, name + ".onnx")
            x1 = torch.rand(1, 3, args.size, args.size)
            torch.onnx.export(net, (x1,), path, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            model = cnn.Model.load(path)
            for batch in (1, 32):
                x = rng.random((batch, 3, args.size, args.size), dtype=np.float32)
                expected = session.run(None, {"x": x})[0]
                got = model.predict(x, logits=True)
                error = np.abs(got - expected).max() / np.abs(expected).max()
                assert error <= 1e-4, "%s: logits differ from ONNX Runtime's by %g" % (name, error)
                ours, theirs = [], []
                for _ in range(args.rounds):
                    ours.append(timed(lambda: model.predict(x, logits=True), args.seconds))
                    theirs.append(timed(lambda: session.run(None, {"x": x}), args.seconds))
                ratio = statistics.median(o / t for o, t in zip(ours, theirs))
                o, t = statistics.median(ours), statistics.median(theirs)
                if batch == 1:
                    print("%-18s %5d  %8.2f ms    %8.2f ms    %.2fx latency (target <= 0.8)" % (name, batch, 1e3 * o, 1e3 * t, ratio))
                else:
                    print("%-18s %5d  %8.1f img/s %8.1f img/s %.2fx throughput (target >= 1.2)" % (name, batch, batch / o, batch / t, 1 / ratio))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
