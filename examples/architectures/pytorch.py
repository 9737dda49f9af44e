"""The PyTorch modules that match SwiftCNN's architecture texts, tensor name for tensor name.

    import torch, safetensors.torch
    from pytorch import cnn_to_torch
    net = cnn_to_torch(open("resnet20.txt").read())
    net.load_state_dict(safetensors.torch.load_file("resnet20.safetensors"), strict=True)

The module tree: the top sequence is an ``nn.Sequential`` whose module i is layer i;
``residual[BODY | SHORTCUT]`` is a ``Residual`` with ``nn.Sequential``s ``body`` and ``shortcut``;
``concat[A | B]`` is a ``Concat`` with an ``nn.ModuleList`` ``branches`` of ``nn.Sequential``s;
``se(S)`` is torchvision's ``SqueezeExcitation`` (``fc1``, ``fc2``); ``repeat(N)[...]`` is written
out. A model saved by SwiftCNN loads with ``strict=True``, and a state dict saved from these modules
loads into SwiftCNN (``cnn.Model.load`` of a safetensors file with SwiftCNN's metadata).
"""
import re

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardsigmoid": nn.Hardsigmoid,
    "hardswish": nn.Hardswish, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU,
}


class Residual(nn.Module):
    """body(x) + shortcut(x), or body(x) + x without a shortcut."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        if shortcut is not None:
            self.shortcut = nn.Sequential(*shortcut)
        self.has_shortcut = shortcut is not None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.has_shortcut else x)


class Concat(nn.Module):
    """The branches' outputs side by side along the channels (an empty branch is x)."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*b) for b in branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: x * gate(fc2(act(fc1(mean(x)))))."""

    def __init__(self, channels, squeeze, activation, gate):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x):
        return x * self.gate(self.fc2(self.activation(self.fc1(x.mean((2, 3), keepdim=True)))))


def _tokens(text):
    text = re.sub(r"#[^\n]*", " ", text)
    return re.findall(r"[\[\]|]|[A-Za-z_][A-Za-z0-9_]*(?:\([^)]*\))?", text)


def _arguments(token, positional):
    name, _, inside = token.partition("(")
    args = {}
    for i, part in enumerate(p.strip() for p in inside.rstrip(")").split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if eq:
            args[key.strip().lower()] = value.strip()
        else:
            args[positional[i]] = part
    return name.lower(), args


def _pooled(n, k, s, p, ceil):
    """A pooling's output size, as PyTorch computes it (ceil_mode: rounded up, the last window
    starting inside the input or its leading padding)."""
    out = (n + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


def _pair(value):
    h, _, w = value.partition("x")
    return (int(h), int(w or h))


def _flag(value):
    return value.lower() in ("true", "1", "yes")


class _Builder:
    def __init__(self, text):
        self.tokens = _tokens(text)
        self.i = 0

    def sequence(self, shape):
        """Modules up to ']' or '|', and the shape (C, H, W) or (N,) they leave."""
        modules = []
        while self.i < len(self.tokens) and self.tokens[self.i] not in ("]", "|"):
            token = self.tokens[self.i]
            self.i += 1
            name = token.partition("(")[0].lower()
            if name in ("residual", "concat", "repeat"):
                modules_or_block, shape = self.block(token, shape)
                modules += modules_or_block
            else:
                module, shape = self.layer(token, shape)
                modules.append(module)
        return modules, shape

    def branches(self, shape):
        assert self.tokens[self.i] == "["
        self.i += 1
        out = [self.sequence(shape)]
        while self.tokens[self.i] == "|":
            self.i += 1
            out.append(self.sequence(shape))
        assert self.tokens[self.i] == "]"
        self.i += 1
        return out

    def block(self, token, shape):
        name, args = _arguments(token, ["n"])
        if name == "repeat":
            start = self.i
            modules = []
            for _ in range(int(args["n"])):
                self.i = start
                (inner, shape), = self.branches(shape)
                modules += inner
            return modules, shape
        parts = self.branches(shape)
        if name == "residual":
            body, out = parts[0]
            shortcut = parts[1][0] if len(parts) > 1 else None
            return [Residual(body, shortcut)], out
        shapes = [s for _, s in parts]
        return [Concat([m for m, _ in parts])], (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])

    def layer(self, token, shape):
        name, args = _arguments(token, ["out", "kernel"] if token.lower().startswith("conv")
                                else ["p"] if token.lower().startswith("dropout")
                                else ["squeeze"] if token.lower().startswith("se")
                                else ["alpha"] if token.lower().startswith("leakyrelu")
                                else ["out"] if token.lower().startswith(("dense", "linear"))
                                else ["left", "right", "top", "bottom"] if token.lower().startswith("zeropad")
                                else ["kernel"])
        if name in ("conv", "conv2d"):
            c, h, w = shape
            out, k = int(args["out"]), _pair(args["kernel"])
            s, p = _pair(args.get("stride", "1")), _pair(args.get("pad", "0"))
            groups = int(args.get("groups", "1"))
            module = nn.Conv2d(c, out, k, stride=s, padding=p, groups=groups, bias=_flag(args.get("bias", "true")))
            return module, (out, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
        if name in ("maxpool", "avgpool"):
            c, h, w = shape
            k = _pair(args["kernel"])
            s = _pair(args.get("stride", args["kernel"]))
            p = _pair(args.get("pad", "0"))
            ceil = _flag(args.get("ceil", "false"))
            module = (nn.MaxPool2d(k, stride=s, padding=p, ceil_mode=ceil) if name == "maxpool"
                      else nn.AvgPool2d(k, stride=s, padding=p, count_include_pad=_flag(args.get("count_include_pad", "true"))))
            return module, (c, _pooled(h, k[0], s[0], p[0], ceil), _pooled(w, k[1], s[1], p[1], ceil))
        if name == "zeropad":
            c, h, w = shape
            left = int(args["left"])
            right, top, bottom = (int(args.get(side, left)) for side in ("right", "top", "bottom"))
            return nn.ZeroPad2d((left, right, top, bottom)), (c, h + top + bottom, w + left + right)
        if name == "globalavgpool":
            return nn.AdaptiveAvgPool2d(1), (shape[0], 1, 1)
        if name == "flatten":
            n = 1
            for d in shape:
                n *= d
            return nn.Flatten(), (n,)
        if name in ("dense", "linear"):
            out = int(args["out"])
            return nn.Linear(shape[0], out, bias=_flag(args.get("bias", "true"))), (out,)
        if name in ACTIVATIONS:
            return ACTIVATIONS[name](), shape
        if name == "leakyrelu":
            return nn.LeakyReLU(float(args.get("alpha", "0.01"))), shape
        if name == "dropout":
            return nn.Dropout(float(args["p"])), shape
        if name in ("batchnorm", "bn"):
            eps, momentum = float(args.get("eps", "1e-5")), float(args.get("momentum", "0.1"))
            norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            return norm(shape[0], eps=eps, momentum=momentum), shape
        if name == "se":
            act = ACTIVATIONS[args.get("act", "relu").lower()]()
            gate = ACTIVATIONS[args.get("gate", "sigmoid").lower()]()
            return SqueezeExcitation(shape[0], int(args["squeeze"]), act, gate), shape
        raise ValueError("unknown layer %r" % token)


def cnn_to_torch(text):
    """The nn.Module of an architecture text (the input(C,H,W) first, as SwiftCNN takes it)."""
    builder = _Builder(text)
    name, args = _arguments(builder.tokens[0], ["c", "h", "w"])
    assert name == "input", "the text must start with input(C,H,W)"
    builder.i = 1
    modules, _ = builder.sequence((int(args["c"]), int(args["h"]), int(args["w"])))
    assert builder.i == len(builder.tokens), "unexpected %r" % builder.tokens[builder.i]
    return nn.Sequential(*modules)
