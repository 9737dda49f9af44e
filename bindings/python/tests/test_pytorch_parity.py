"""The layers against PyTorch on the same weights: a model file saved here loads into the matching
torch.nn module tree with load_state_dict(strict=True), gives the same logits, and one SGD step
changes every tensor as PyTorch's step does. Skipped when torch is not installed
(pip install torch)."""
import json
import struct

import numpy as np
import pytest

import cnn

torch = pytest.importorskip("torch")
nn = torch.nn
safetensors_torch = pytest.importorskip("safetensors.torch")


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation's tensors and arithmetic (fc1, fc2: 1x1 convolutions)."""

    def __init__(self, channels, squeeze, activation, gate):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.activation(self.fc1(s))))


class Residual(nn.Module):
    """residual[BODY | SHORTCUT]: body(x) + shortcut(x), or + x without a shortcut."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        if shortcut is not None:
            self.shortcut = nn.Sequential(*shortcut)
        self.has_shortcut = shortcut is not None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.has_shortcut else x)


class Concat(nn.Module):
    """concat[A | B | ...]: the branches' outputs along channels (an empty branch is x)."""

    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*b) for b in branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


# (architecture, the same network in PyTorch): layer i is module i of the Sequential.
CASES = {
    "resnet": (
        "input(3,10,10) conv(8,3,pad=1,bias=false) batchnorm relu "
        "repeat(2)[residual[conv(8,3,pad=1,bias=false) batchnorm relu conv(8,3,pad=1,bias=false) batchnorm] relu] "
        "residual[conv(16,3,stride=2,pad=1,bias=false) batchnorm relu conv(16,3,pad=1,bias=false) batchnorm "
        "| conv(16,1,stride=2,bias=false) batchnorm] relu "
        "concat[conv(4,1) relu | conv(4,3,pad=1) maxpool(1) | ] globalavgpool flatten dense(4)",
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            *[m for _ in range(2) for m in (
                Residual([nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)]), nn.ReLU())],
            Residual([nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)],
                     [nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)]), nn.ReLU(),
            Concat([nn.Conv2d(16, 4, 1), nn.ReLU()], [nn.Conv2d(16, 4, 3, padding=1), nn.MaxPool2d(1)], []),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4))),
    "mobile": (
        "input(3,12,12) conv(8,3,pad=1) batchnorm relu6 conv(8,3,stride=2,pad=1,groups=8,bias=false) batchnorm hardswish "
        "conv(16,1,groups=2) silu se(4,act=silu) gelu globalavgpool flatten dense(6) hardsigmoid dense(4)",
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.Hardswish(),
            nn.Conv2d(8, 16, 1, groups=2), nn.SiLU(), SqueezeExcitation(16, 4, nn.SiLU(), nn.Sigmoid()), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6), nn.Hardsigmoid(), nn.Linear(6, 4))),
    "grouped": (
        "input(4,9,8) conv(6,3x2,stride=2x1,pad=1x0,groups=2) se(3,gate=hardsigmoid) relu "
        "conv(6,5,pad=2,groups=6) tanh flatten dense(4)",
        lambda: nn.Sequential(
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2),
            SqueezeExcitation(6, 3, nn.ReLU(), nn.Hardsigmoid()), nn.ReLU(),
            nn.Conv2d(6, 6, 5, padding=2, groups=6), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 5 * 7, 4))),
}


def tensors(path):
    return {k: v.clone() for k, v in safetensors_torch.load_file(str(path)).items()}


def normalization(path):
    """The per-channel mean and std the model stores (its first training measured them)."""
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))["__metadata__"]
    mean, std = json.loads(header["normalization_mean"]), json.loads(header["normalization_std"])
    return np.array(mean, np.float32)[:, None, None], np.array(std, np.float32)[:, None, None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_one_step_match_pytorch(name, tmp_path):
    text, make = CASES[name]
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    model = cnn.Model(text, seed=5)
    c, h, w = model.input_shape
    x = rng.random((8, c, h, w), dtype=np.float32)
    y = rng.integers(0, 4, size=8).astype(np.int32)
    model.save(tmp_path / "before.safetensors")
    before = tensors(tmp_path / "before.safetensors")

    net = make()
    net.load_state_dict(before, strict=True)   # every name and shape as PyTorch's
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    ours = model.predict(x, logits=True)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)

    # One SGD step on the whole batch (training mode: batch norm on the batch's statistics). The
    # first training also measures the input normalization, which PyTorch gets applied.
    lr = 0.05
    model.fit(x, y, epochs=1, batch_size=8, optimizer="sgd", lr=lr, momentum=0, verbose=0,
              classes=[str(i) for i in range(4)])
    model.save(tmp_path / "after.safetensors")
    after = tensors(tmp_path / "after.safetensors")
    mean, std = normalization(tmp_path / "after.safetensors")
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    optimizer.zero_grad()
    nn.functional.cross_entropy(net(torch.from_numpy((x - mean) / std)), torch.from_numpy(y).long()).backward()
    optimizer.step()
    for key, value in net.state_dict().items():
        ours_step = (after[key] - before[key]).double()
        torch_step = (value - before[key]).double()
        scale = max(torch_step.abs().max().item(), 1e-6)
        error = (ours_step - torch_step).abs().max().item() / scale
        assert error < 2e-3, "%s: %s step differs from PyTorch's by %.2e of its size" % (name, key, error)
