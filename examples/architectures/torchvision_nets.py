"""torchvision's ResNet-18, MobileNetV2 (width 1.0) and EfficientNet-B0, written out in plain
PyTorch (torchvision is not needed), and SqueezeNet, DenseNet and GoogLeNet in miniature:
networks built elsewhere, for the ONNX import tests (bindings/python/tests/test_onnx.py) and
benchmark (Benchmarks/onnx_import.py). Exported with
torch.onnx.export, they import into SwiftCNN.
"""
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's resnet18, written out (stem conv 7x7/2, max pool 3x3/2 with padding 1)."""

    def __init__(self, classes=10, width=64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], w
        for i, cout in enumerate([w, 2 * w, 4 * w, 8 * w]):
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width 1.0), written out."""

    def __init__(self, classes=10):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
        cin = 32
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SE(nn.Module):
    """torchvision.ops.SqueezeExcitation."""

    def __init__(self, c, s):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)
        self.activation, self.scale_activation = nn.SiLU(), nn.Sigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01), nn.SiLU()]
        layers += [nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False), nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01),
                   nn.SiLU(), SE(hidden, max(1, cin // 4)), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res else out


class EfficientNetB0(nn.Module):
    """torchvision's efficientnet_b0 without stochastic depth (an identity at inference)."""

    def __init__(self, classes=10):
        super().__init__()
        settings = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.SiLU()]
        for e, k, s, cin, cout, n in settings:
            for i in range(n):
                layers.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        layers += [nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""

    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True))
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class SqueezeNet(nn.Module):
    """torchvision's squeezenet1_0 at a quarter of its width: max pooling with ceil_mode=True (the
    last window overhangs the input), fire modules (concat), a 1x1 convolution as the classifier."""

    def __init__(self, classes=10):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(nn.Conv2d(3, 24, 7, 2), nn.ReLU(inplace=True), pool(),
                                      Fire(24, 4, 16, 16), Fire(32, 4, 16, 16), Fire(32, 8, 32, 32), pool(),
                                      Fire(64, 8, 32, 32), Fire(64, 12, 48, 48), pool(), Fire(96, 16, 64, 64))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(128, classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)   # torchvision's: every earlier output, concatenated again
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNet(nn.Module):
    """torchvision's densenet121 in miniature (growth 8, blocks of 3 and 2 layers): each layer
    reads the concatenation of the block's input and every earlier layer's output (pre-activation
    batch norm), transitions with 2x2 average pooling."""

    def __init__(self, classes=10, growth=8, blocks=(3, 2), bn_size=2, init=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, init, 3, 2, 1, bias=False), nn.BatchNorm2d(init), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        c = init
        for i, n in enumerate(blocks):
            self.blocks.append(nn.ModuleList(DenseLayer(c + j * growth, growth, bn_size) for j in range(n)))
            c += n * growth
            if i + 1 < len(blocks):
                self.transitions.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                                      nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)))
                c //= 2
        self.norm = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            features = [x]
            for layer in block:
                features.append(layer(features))
            x = torch.cat(features, 1)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        x = nn.functional.adaptive_avg_pool2d(nn.functional.relu(self.norm(x)), 1)
        return self.classifier(torch.flatten(x, 1))


class InceptionBlock(nn.Module):
    """GoogLeNet's inception module: 1x1, 1x1-3x3, 1x1-3x3 and 3x3 max pooling-1x1 branches. With
    `v3`, two of Inception-v3's: an average pooling branch (3x3, stride 1, padding 1, counted as
    zeros), and a 1x1 whose output goes through 1x3 and 3x1 side by side (a concatenation inside
    the concatenation, which TorchScript's export writes as one Concat)."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool, v3=False):
        super().__init__()
        unit = lambda i, o, k: nn.Sequential(nn.Conv2d(i, o, k, padding=(k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2,
                                                       bias=False), nn.BatchNorm2d(o, eps=1e-3), nn.ReLU(True))
        self.v3 = v3
        self.b1 = unit(cin, c1, 1)
        if v3:
            self.b2, self.b2a, self.b2b = unit(cin, c3r, 1), unit(c3r, c3 // 2, (1, 3)), unit(c3r, c3 // 2, (3, 1))
        else:
            self.b2 = nn.Sequential(unit(cin, c3r, 1), unit(c3r, c3, 3))
        self.b3 = nn.Sequential(unit(cin, c5r, 1), unit(c5r, c5, 3))
        self.b4 = nn.Sequential(nn.AvgPool2d(3, 1, 1) if v3 else nn.MaxPool2d(3, 1, 1, ceil_mode=True), unit(cin, pool, 1))

    def forward(self, x):
        if self.v3:
            y = self.b2(x)
            b2 = torch.cat([self.b2a(y), self.b2b(y)], 1)
        else:
            b2 = self.b2(x)
        return torch.cat([self.b1(x), b2, self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's googlenet in miniature: max pooling with ceil_mode=True between inception
    modules, the second with two branches as Inception-v3 has them."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16, eps=1e-3), nn.ReLU(True),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        self.a = InceptionBlock(16, 8, 8, 16, 4, 8, 8)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.b = InceptionBlock(40, 16, 12, 24, 4, 8, 8, v3=True)
        self.fc = nn.Linear(56, classes)

    def forward(self, x):
        x = self.b(self.pool(self.a(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# The ONNX benchmark's networks (3x224x224), and the miniatures the import tests add.
NETWORKS = {"resnet18": ResNet18, "mobilenetv2": MobileNetV2, "efficientnet-b0": EfficientNetB0}
MINIATURES = {"squeezenet": SqueezeNet, "densenet": DenseNet, "googlenet": GoogLeNet}
