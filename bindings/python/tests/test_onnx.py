"""ONNX export and import: our files in ONNX Runtime and the checker, export -> import bit for bit,
networks built in PyTorch and exported with torch.onnx.export, and hostile files."""
import importlib.util
import json
import os
import re

import numpy as np
import pytest

import cnn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "architectures")

# Every layer kind, the blocks, and the shipped architectures.
ARCHITECTURES = {
    "plain": "input(1,28,28) conv(8,3,pad=1) relu maxpool(2) conv(16,3,pad=1,bias=false) batchnorm relu "
             "avgpool(2) flatten dense(32) relu dropout(0.25) dense(10)",
    "activations": "input(3,16,16) conv(8,3,pad=1,stride=2) relu6 conv(8,3,pad=1,groups=8) hardswish conv(16,1) silu "
                   "conv(16,3,pad=1) gelu conv(16,1) hardsigmoid conv(8,1) sigmoid conv(8,1) tanh "
                   "conv(8,3x1,pad=1x0) leakyrelu(alpha=0.2) maxpool(3,stride=2,pad=1) globalavgpool flatten "
                   "batchnorm(eps=0.001,momentum=0.01) dense(5)",
    "blocks": "input(3,16,16) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm] relu "
              "residual[conv(16,3,stride=2,pad=1) batchnorm relu | conv(16,1,stride=2) batchnorm] "
              "concat[conv(8,1) | | conv(4,3,pad=1) relu] se(4) se(6,act=silu,gate=hardsigmoid) globalavgpool flatten dense(3,bias=false)",
    "pooling": "input(3,14,14) conv(8,3) relu maxpool(3,stride=2,ceil=true) avgpool(3,stride=1,pad=1) conv(8,2) relu "
               "maxpool(2,ceil=true) avgpool(3,stride=2,pad=1) zeropad(0,1,0,1) avgpool(3,stride=1,pad=1,count_include_pad=false) concat[ | conv(4,1) relu] concat[ | conv(4,1)] globalavgpool flatten dense(4)",
}
for _name in ("resnet20", "mobilenetv2", "efficientnet-small"):
    with open(os.path.join(EXAMPLES, _name + ".txt")) as _f:
        ARCHITECTURES[_name] = re.sub(r"input\(3,224,224\)", "input(3,64,64)", _f.read())


def _randomized(text, seed, path):
    """A model with random weights and batch-norm statistics, and a normalization."""
    model = cnn.Model(text, seed=seed)
    model.save(path)
    tensors = safetensors_numpy.load_file(str(path))
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = header["__metadata__"]
    rng = np.random.default_rng(seed)
    for name, t in tensors.items():
        if name.endswith("running_mean") or name.endswith("bias"):
            tensors[name] = rng.uniform(-0.3, 0.3, t.shape).astype(np.float32)
        elif name.endswith("running_var"):
            tensors[name] = rng.uniform(0.5, 2, t.shape).astype(np.float32)
    c = model.input_shape[0]
    meta["normalization_mean"] = json.dumps([round(0.1 * (i + 1), 3) for i in range(c)])
    meta["normalization_std"] = json.dumps([round(0.2 + 0.05 * i, 3) for i in range(c)])
    meta["classes"] = json.dumps(["class %d" % i for i in range(model.num_classes)])
    safetensors_numpy.save_file(tensors, str(path), metadata=meta)
    return cnn.Model.load(path)


def _tensors(path):
    return safetensors_numpy.load_file(str(path))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_export_runs_in_onnxruntime_and_imports_back_bit_for_bit(name, tmp_path):
    model = _randomized(ARCHITECTURES[name], 3, tmp_path / "model.safetensors")
    model.export_onnx(tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["architecture"] == model.architecture
    assert json.loads(meta["classes"]) == model.classes
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for batch in (1, 3):  # the batch dimension is dynamic
        x = rng.random((batch,) + tuple(model.input_shape), dtype=np.float32)
        logits, probabilities = session.run(["logits", "probabilities"], {"pixels": x})
        ours = model.predict(x, logits=True)
        scale = np.abs(ours).max()
        assert np.abs(logits - ours).max() <= 1e-5 * scale, name
        np.testing.assert_allclose(probabilities, model.predict(x), atol=1e-6)
    # Import: the same architecture, names and normalization; the same weights bit for bit.
    back = cnn.Model.load(tmp_path / "model.onnx")
    assert back.architecture == model.architecture
    assert back.classes == model.classes
    back.save(tmp_path / "back.safetensors")
    a, b = _tensors(tmp_path / "model.safetensors"), _tensors(tmp_path / "back.safetensors")
    assert sorted(a) == sorted(b)
    for key in a:
        if not key.endswith("num_batches_tracked"):  # not in ONNX
            assert a[key].tobytes() == b[key].tobytes(), key
    x = rng.random((2,) + tuple(model.input_shape), dtype=np.float32)
    assert np.array_equal(back.predict(x, logits=True), model.predict(x, logits=True))


# ---- networks built in PyTorch ----

torch = pytest.importorskip("torch")
nn = torch.nn


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nets = _load_example("torchvision_nets")


def _randomize(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return net.eval()


# (network, input size, the export settings: opsets 13 to 20, with and without constant folding)
TORCH_CASES = [
    ("resnet18", 64, dict(opset_version=13)),
    ("resnet18", 64, dict(opset_version=17, do_constant_folding=False)),
    ("mobilenetv2", 64, dict(opset_version=13)),
    ("mobilenetv2", 64, dict(opset_version=18, do_constant_folding=False)),
    ("efficientnet-b0", 64, dict(opset_version=17)),
    ("efficientnet-b0", 64, dict(opset_version=20, do_constant_folding=False)),
    # Max pooling with ceil_mode, fire modules; DenseNet's concatenations of every earlier output;
    # inception modules with a padded average pooling branch and a concatenation inside one.
    ("squeezenet", 64, dict(opset_version=13)),
    ("densenet", 64, dict(opset_version=13)),
    ("densenet", 64, dict(opset_version=17, do_constant_folding=False)),
    ("googlenet", 64, dict(opset_version=18)),
    # torch.onnx.export's default exporter (through torch.export, opset 20 with PyTorch 2.13; it needs onnxscript).
    ("resnet18", 64, dict(dynamo=True)),
    ("efficientnet-b0", 64, dict(dynamo=True)),
    ("densenet", 64, dict(dynamo=True)),
    ("googlenet", 64, dict(dynamo=True)),
]
NETWORKS = {**nets.NETWORKS, **nets.MINIATURES}


def _export(net, x, path, settings):
    """torch.onnx.export with a dynamic batch: the TorchScript exporter with `settings`, or with
    dynamo=True the default exporter (through torch.export)."""
    if settings.get("dynamo"):
        pytest.importorskip("onnxscript")
        torch.onnx.export(net, (x,), path, input_names=["image"], output_names=["scores"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    else:
        torch.onnx.export(net, (x,), path, dynamo=False, input_names=["image"], output_names=["scores"],
                          dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}}, **settings)


@pytest.mark.parametrize("name, size, settings", TORCH_CASES)
def test_torch_onnx_export_imports_and_matches_onnxruntime(name, size, settings, tmp_path):
    net = _randomize(NETWORKS[name](), 7)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    path = str(tmp_path / "net.onnx")
    _export(net, x, path, settings)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(expected, net(x).numpy(), rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    model = cnn.Model.load(path)
    assert model.input_shape == (3, size, size) and model.num_classes == 10
    structure = {"squeezenet": ["maxpool(3,stride=2,ceil=true)"], "googlenet": ["maxpool(3,stride=2,ceil=true)", "avgpool(3,stride=1,pad=1)", "concat[conv(12,1x3,pad=0x1"],
                 "densenet": ["concat[ | batchnorm relu conv(16,1"] * 5}
    for part in structure.get(name, []):
        assert model.architecture.count(part) >= structure[name].count(part), (part, model.architecture)
    got = model.predict(x.numpy(), logits=True)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), (name, settings)
    # The imported model trains and saves like any other.
    model.fit(x.numpy(), np.array([1, 2], dtype=np.int32), epochs=1, batch_size=2, lr=0.001, verbose=0, allow_extra_outputs=True)
    model.save(tmp_path / "net.safetensors")


class ViewNet(nn.Module):
    """x.view(x.size(0), -1) (Shape, Gather, Unsqueeze, Concat, Reshape without constant folding),
    and activations written as several nodes at a fork: SiLU and GELU first in concat branches."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.side = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(10 * 6 * 6, 3)

    def forward(self, x):
        y = self.conv(x)
        y = torch.cat([nn.functional.silu(y), nn.functional.gelu(self.side(y)), nn.functional.hardswish(y)], 1)
        return self.fc(y.view(y.size(0), -1))


@pytest.mark.parametrize("settings", [dict(opset_version=13, do_constant_folding=False), dict(opset_version=13),
                                      dict(opset_version=17, do_constant_folding=False)])
@pytest.mark.parametrize("dynamic", [True, False])
def test_torch_view_and_activations_at_a_fork(settings, dynamic, tmp_path):
    net = ViewNet().eval()
    x = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    path = str(tmp_path / "view.onnx")
    axes = dict(dynamic_axes={"x": {0: "batch"}}) if dynamic else {}
    torch.onnx.export(net, (x,), path, dynamo=False, input_names=["x"], **axes, **settings)
    model = cnn.Model.load(path)
    assert "concat[silu | conv(2,1) gelu | hardswish]" in model.architecture
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.predict(x.numpy(), logits=True), expected, rtol=1e-5, atol=1e-5)


class NotCountedPooling(nn.Module):
    """Average pooling that does not count its padding (count_include_pad=False, as NASNet's cells
    and networks ported from TensorFlow pool), beside a branch that does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.fc = nn.Linear(12 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.cat([self.pool(y), nn.functional.avg_pool2d(y, 3, 1, 1)], 1)
        return self.fc(torch.flatten(self.down(y), 1))


def _exported_and_imported(net, x, settings, tmp_path):
    """The model `net` (in eval mode) imports as, exported by torch.onnx.export with `settings`, and
    ONNX Runtime's output for x, checked against PyTorch's."""
    path = str(tmp_path / "net.onnx")
    _export(net.eval(), x, path, settings)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(expected, net(x).numpy(), rtol=1e-5, atol=1e-6)
    return cnn.Model.load(path), expected


@pytest.mark.parametrize("settings", [dict(opset_version=13), dict(opset_version=17, do_constant_folding=False), dict(dynamo=True)])
def test_average_pooling_without_its_padding(settings, tmp_path):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    model, expected = _exported_and_imported(NotCountedPooling(), x, settings, tmp_path)
    assert "concat[avgpool(3,stride=1,pad=1,count_include_pad=false) | avgpool(3,stride=1,pad=1)]" in model.architecture, model.architecture
    assert "avgpool(3,stride=2,pad=1,count_include_pad=false)" in model.architecture
    np.testing.assert_allclose(model.predict(x.numpy(), logits=True), expected, rtol=1e-5, atol=1e-6)


class ZeroPadded(nn.Module):
    """Zero padding as networks ported from TensorFlow write it: ZeroPad2d((0, 1, 0, 1)) before a
    stride-2 convolution ("same"), F.pad on two sides before max pooling, and a symmetric F.pad
    inside a residual branch."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.down = nn.Conv2d(3, 6, 3, stride=2)
        self.conv = nn.Conv2d(6, 6, 3)
        self.fc = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x):
        y = torch.relu(self.down(self.pad(x)))
        y = y + self.conv(nn.functional.pad(y, (1, 1, 1, 1)))
        y = nn.functional.max_pool2d(nn.functional.pad(y, (0, 2, 1, 0)), 3)
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("settings", [dict(opset_version=13), dict(opset_version=17, do_constant_folding=False), dict(dynamo=True)])
def test_zero_padding(settings, tmp_path):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    model, expected = _exported_and_imported(ZeroPadded(), x, settings, tmp_path)
    # The default (dynamo) exporter folds each padding before a convolution into its pads: the
    # one-sided one imports as a zeropad before it again, the symmetric one as the conv's pad.
    inner = "conv(6,3,pad=1)" if settings.get("dynamo") else "zeropad(1) conv(6,3)"
    assert model.architecture.startswith("input(3,16,16) zeropad(0,1,0,1) conv(6,3,stride=2) relu residual[%s] zeropad(0,2,1,0) maxpool(3)" % inner), model.architecture
    np.testing.assert_allclose(model.predict(x.numpy(), logits=True), expected, rtol=1e-5, atol=1e-6)


class MNISTExample(nn.Module):
    """The network of PyTorch's MNIST example (pytorch/examples, mnist/main.py): it ends with
    F.log_softmax, and pools, drops out and flattens through torch.nn.functional."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = nn.functional.relu(self.conv1(x))
        x = nn.functional.relu(self.conv2(x))
        x = self.dropout1(nn.functional.max_pool2d(x, 2))
        x = self.dropout2(nn.functional.relu(self.fc1(torch.flatten(x, 1))))
        return nn.functional.log_softmax(self.fc2(x), dim=1)


@pytest.mark.parametrize("settings", [dict(opset_version=13), dict(dynamo=True)])
def test_a_final_log_softmax(settings, tmp_path):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    model, expected = _exported_and_imported(MNISTExample(), x, settings, tmp_path)
    assert model.architecture == "input(1,28,28) conv(32,3) relu conv(64,3) relu maxpool(2) flatten dense(128) relu dense(10)", model.architecture
    # The same probabilities; the logits are the values before the log-softmax.
    np.testing.assert_allclose(model.predict(x.numpy()), np.exp(expected), rtol=1e-5, atol=1e-6)
    shift = model.predict(x.numpy(), logits=True) - expected
    np.testing.assert_allclose(shift, shift[:, :1].repeat(10, axis=1), rtol=1e-5, atol=1e-5)


# ---- hostile and unsupported files ----

def _node_model(nodes, initializers=(), opset=17, inputs=None, outputs=None):
    from onnx import TensorProto, helper
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 4])]
    outputs = outputs or [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _weights(name, *shape):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


def _external(name, dims):
    """A float tensor without data (for external data, or data set by hand)."""
    from onnx import TensorProto
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    return t


def _load_error(tmp_path, data, name="bad.onnx"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.SerializeToString())
    with pytest.raises(cnn.CNNError) as e:
        cnn.Model.load(path)
    return str(e.value)


def test_unsupported_nodes_are_named_with_their_op_and_why(tmp_path):
    from onnx import helper
    w = _weights("w", 3, 2, 3, 3)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="Conv_17", dilations=[2, 2])
    flat = helper.make_node("Flatten", ["y"], ["z"])
    message = _load_error(tmp_path, _node_model([conv, flat], [w]))
    assert "node 'Conv_17' (Conv): dilation [2, 2] is not supported" in message
    lstm = helper.make_node("LSTM", ["x"], ["y"], name="rnn")
    assert "node 'rnn' (LSTM): the op is not supported" in _load_error(tmp_path, _node_model([lstm, flat]))
    # An unsupported op with a computed second input (repeats computed from constants) is refused
    # for its op, not for reading two values.
    size = helper.make_node("Constant", [], ["n"], value=helper.make_tensor("v", 7, [1], [4]))
    ones = helper.make_node("ConstantOfShape", ["n"], ["p"], value=helper.make_tensor("z", 7, [1], [1]))
    tile = helper.make_node("Tile", ["x", "p"], ["y"], name="tile0")
    message = _load_error(tmp_path, _node_model([size, ones, tile, flat]))
    assert "node 'tile0' (Tile): the op is not supported" in message, message
    # Padding: zeros alone, on the height and width, not for pooling on one side only.
    for pads, mode, why in [([0, 0, 1, 1, 0, 0, 1, 1], "reflect", "mode 'reflect' is not supported"),
                            ([0, 1, 0, 0, 0, 0, 0, 0], "constant", "pads [0, 1, 0, 0, 0, 0, 0, 0] pad the batch or the channels"),
                            ([0, 0, -1, 0, 0, 0, 0, 0], "constant", "pads [0, 0, -1, 0, 0, 0, 0, 0]: negative pads (cropping)")]:
        p = helper.make_node("Constant", [], ["p"], value=helper.make_tensor("v", 7, [8], pads))
        message = _load_error(tmp_path, _node_model([p, helper.make_node("Pad", ["x", "p"], ["y"], name="pad0", mode=mode), flat]))
        assert "node 'pad0' (Pad): " + why in message, message
    # A window of width 0 (a fuzzing finding: max pooling trapped on its empty window).
    empty = helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[3, 0], strides=[1, 2], ceil_mode=1)
    assert "the window and stride must be at least 1" in _load_error(tmp_path, _node_model([empty, flat]))
    pool = helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[3, 3], pads=[1, 1, 0, 0])
    assert "asymmetric padding [1, 1, 0, 0] is not supported for pooling" in _load_error(tmp_path, _node_model([pool, flat]))
    # A second head: never a partial model.
    dense = helper.make_node("Flatten", ["x"], ["f"], name="head1")
    other = helper.make_node("Relu", ["x"], ["r"], name="head2")
    message = _load_error(tmp_path, _node_model([dense, other]))
    assert "head" in message


def _random_weights(name, *shape, seed=0):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32), name)


def _imported_by_hand(tmp_path, nodes, weights):
    """The architecture a hand-written graph imports as, after checking its logits against ONNX
    Runtime's."""
    path = tmp_path / "hand.onnx"
    path.write_bytes(_node_model(nodes, weights).SerializeToString())
    model = cnn.Model.load(path)
    x = np.random.default_rng(1).random((3, 2, 4, 4), dtype=np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.predict(x, logits=True), expected.reshape(3, -1), rtol=1e-5, atol=1e-5)
    return model.architecture


def test_concatenations_of_concatenations_by_hand(tmp_path):
    """Graphs written by hand: DenseNet's concatenations, each of every value before (cat(x, a),
    then cat(x, a, b) with b made from cat(x, a)), and a concatenation of concatenations written
    as one (cat(c, a, b) with a and b both made from y)."""
    from onnx import helper
    node = helper.make_node
    dense = [node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]), node("Concat", ["x", "a"], ["xa"], axis=1),
             node("Relu", ["xa"], ["r"]), node("Conv", ["r", "wb"], ["b"]),
             node("Concat", ["x", "a", "b"], ["xab"], axis=1), node("Flatten", ["xab"], ["z"])]
    assert _imported_by_hand(tmp_path, dense, [_random_weights("wa", 3, 2, 3, 3), _random_weights("wb", 1, 5, 1, 1, seed=1)]) == \
        "input(2,4,4) concat[ | conv(3,3,pad=1,bias=false)] concat[ | relu conv(1,1,bias=false)] flatten"
    flat = [node("Conv", ["x", "w1"], ["y"]), node("Relu", ["y"], ["a"]), node("Sigmoid", ["y"], ["b"]),
            node("Conv", ["x", "wc"], ["c"]), node("Concat", ["c", "a", "b"], ["cab"], axis=1), node("Flatten", ["cab"], ["z"])]
    assert _imported_by_hand(tmp_path, flat, [_random_weights("w1", 2, 2, 1, 1), _random_weights("wc", 1, 2, 1, 1, seed=1)]) == \
        "input(2,4,4) concat[conv(1,1,bias=false) | conv(2,1,bias=false) concat[relu | sigmoid]] flatten"
    # The inputs of a branch that are not side by side among the join's are not guessed at.
    apart = flat[:4] + [node("Concat", ["a", "c", "b"], ["cab"], axis=1), flat[5]]
    message = _load_error(tmp_path, _node_model(apart, [_random_weights("w1", 2, 2, 1, 1), _random_weights("wc", 1, 2, 1, 1)]))
    assert "(Concat)" in message and "branches" in message, message


@pytest.mark.parametrize("auto_pad, expected", [("SAME_UPPER", "zeropad(0,1,0,1) conv(3,3,stride=2,bias=false)"),
                                                 ("SAME_LOWER", "zeropad(1,0,1,0) conv(3,3,stride=2,bias=false)")])
def test_same_padding_on_one_side_by_hand(auto_pad, expected, tmp_path):
    """TensorFlow's "same" at stride 2 on an even size pads one more row and column at the end
    (SAME_UPPER) or the start (SAME_LOWER): a zeropad before the convolution."""
    from onnx import helper
    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, kernel_shape=[3, 3], strides=[2, 2])
    flat = helper.make_node("Flatten", ["y"], ["z"])
    architecture = _imported_by_hand(tmp_path, [conv, flat], [_random_weights("w", 3, 2, 3, 3)])
    assert expected in architecture, architecture


def test_hostile_files_give_errors(tmp_path):
    from onnx import TensorProto, helper
    w = _weights("w", 3, 2, 3, 3)
    good = _node_model([helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Flatten", ["y"], ["z"])], [w])
    data = good.SerializeToString()
    cnn.Model.load  # the good file imports
    (tmp_path / "good.onnx").write_bytes(data)
    assert cnn.Model.load(tmp_path / "good.onnx").num_classes == 3 * 2 * 2
    for cut in (1, 7, len(data) // 2, len(data) - 1):
        _load_error(tmp_path, data[:cut])
    # A length past the end: the graph's length raised.
    corrupt = bytearray(data)
    i = corrupt.index(0x3a)  # field 7 (graph), wire type 2
    corrupt[i + 1] = 0x7f
    _load_error(tmp_path, bytes(corrupt))
    assert "not a valid ONNX file" in _load_error(tmp_path, b"\x00" * 64)
    # Huge dims, and data that does not match them.
    huge = _external("w", [1 << 20, 1 << 20, 3, 3])
    huge.raw_data = b"\0" * 36
    assert "more than" in _load_error(tmp_path, _node_model(good.graph.node, [huge]))
    short = _external("w", [3, 2, 3, 3])
    short.raw_data = b"\0" * 36
    assert "bytes of raw_data" in _load_error(tmp_path, _node_model(good.graph.node, [short]))
    # A cycle: y = Relu(z), z = Relu(y).
    cycle = [helper.make_node("Relu", ["x", "z"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    _load_error(tmp_path, _node_model(cycle))
    # External data outside the model's folder.
    ext = _external("w", [3, 2, 3, 3])
    ext.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0")):
        entry = ext.external_data.add()
        entry.key, entry.value = key, value
    assert "outside the model's folder" in _load_error(tmp_path, _node_model(good.graph.node, [ext]))
    # Integer computations (a Pad's pads, a Reshape's target): each value doubling the one before
    # (2^40 values at the end, each read twice at every step) costs once per node, not 2^40 walks,
    # and is refused for its size; a Slice of a step 0 and a Div by zero are not evaluated.
    one = helper.make_node("Constant", [], ["c0"], value=helper.make_tensor("v", 7, [1], [1]))
    doubling = [helper.make_node("Concat", ["c%d" % i] * 2, ["c%d" % (i + 1)], axis=0) for i in range(40)]
    message = _load_error(tmp_path, _node_model([one] + doubling + [helper.make_node("Pad", ["x", "c40"], ["y"], name="pad0"),
                                                                  helper.make_node("Flatten", ["y"], ["z"])]))
    assert "node 'pad0' (Pad): its pads are not 8 integers" in message, message
    for op, extra in (("Slice", dict(inputs=["c", "s", "e", "a", "zero"])), ("Div", dict(inputs=["c", "zero"]))):
        consts = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n, 7, [len(v)], v))
                  for n, v in (("c", [0, 0, 1, 1, 0, 0, 1, 1]), ("s", [0]), ("e", [8]), ("a", [0]), ("zero", [0]))]
        node = helper.make_node(op, extra["inputs"], ["p"])
        message = _load_error(tmp_path, _node_model(consts + [node, helper.make_node("Pad", ["x", "p"], ["y"], name="pad0"),
                                                              helper.make_node("Flatten", ["y"], ["z"])]))
        assert "node 'pad0' (Pad): its pads are not 8 integers" in message, (op, message)
    # A model with functions, other domains, or unknown ops fails whole.
    custom = helper.make_node("Relu", ["x"], ["y"], domain="com.example")
    assert "domain" in _load_error(tmp_path, _node_model([custom, helper.make_node("Flatten", ["y"], ["z"])]))


def test_external_data_inside_the_folder_is_read(tmp_path):
    from onnx import TensorProto, helper
    weights = np.arange(3 * 2 * 3 * 3, dtype=np.float32) / 10
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + weights.tobytes())
    ext = _external("w", [3, 2, 3, 3])
    ext.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "8"), ("length", str(weights.nbytes))):
        entry = ext.external_data.add()
        entry.key, entry.value = key, value
    model = _node_model([helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Flatten", ["y"], ["z"])], [ext])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    m = cnn.Model.load(tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    w = weights.reshape(3, 2, 3, 3)
    expected = np.array([[(x[0, :, i:i + 3, j:j + 3] * w[o]).sum() for o in range(3) for i in range(2) for j in range(2)]])
    np.testing.assert_allclose(m.predict(x, logits=True), expected, rtol=1e-5)
    # Integers stored there too, as the default exporter stores some (a Reshape's shape here).
    shape = np.array([-1, 12], dtype=np.int64)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + weights.tobytes() + shape.tobytes())
    ints = TensorProto()
    ints.name, ints.data_type, ints.data_location = "shape", TensorProto.INT64, TensorProto.EXTERNAL
    ints.dims.append(2)
    for key, value in (("location", "weights.bin"), ("offset", str(8 + weights.nbytes)), ("length", "16")):
        entry = ints.external_data.add()
        entry.key, entry.value = key, value
    model = _node_model([helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])], [ext, ints])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.testing.assert_allclose(cnn.Model.load(tmp_path / "m.onnx").predict(x, logits=True), expected, rtol=1e-5)
    ints.external_data[2].value = "12"   # not its 2 values of 8 bytes
    model = _node_model([helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])], [ext, ints])
    assert "do not give its 2 values of 8 bytes" in _load_error(tmp_path, model, name="m.onnx")
