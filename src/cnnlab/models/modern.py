"""Modern small networks with BatchNorm: a ResNet-9 for 32x32 images and a fast net for 28x28 digits."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._registry import InputSize, register_model
from cnnlab.models._util import flat_features


class ConvBNReLU(nn.Module):
    """Conv 3x3 (no bias: BatchNorm has one) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """x + f(x) with f two ConvBNReLU layers of the same width."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels)
        self.conv2 = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class ResNet9(nn.Module):
    """prep -> [conv, pool, residual] -> [conv, pool] -> [conv, pool, residual] -> global max pool -> linear."""

    def __init__(self, num_classes: int, input_size: InputSize, width: int = 64, scale: float = 0.125):
        super().__init__()
        w = (width, 2 * width, 4 * width, 8 * width)
        self.prep = ConvBNReLU(input_size[0], w[0])
        self.conv1 = ConvBNReLU(w[0], w[1])
        self.pool1 = nn.MaxPool2d(2)
        self.res1 = Residual(w[1])
        self.conv2 = ConvBNReLU(w[1], w[2])
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = ConvBNReLU(w[2], w[3])
        self.pool3 = nn.MaxPool2d(2)
        self.res3 = Residual(w[3])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w[3], num_classes, bias=False)
        # Scaling the logits down (Page's trick) keeps early softmax outputs soft and training stable.
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.res1(self.pool1(self.conv1(x)))
        x = self.pool2(self.conv2(x))
        x = self.res3(self.pool3(self.conv3(x)))
        x = self.flatten(self.pool(x))
        return self.fc(x) * self.scale


class ConvPoolBNReLU(nn.Module):
    """Conv (no bias) -> optional 2x2 max-pool -> BatchNorm -> ReLU.

    Pooling straight after the conv makes the BatchNorm and ReLU passes (and their backward passes), which are
    memory-bound on a CPU, four times cheaper; max-pool commutes with ReLU, so only the BatchNorm moves.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.pool(self.conv(x))))


class FastNet(nn.Module):
    """Conv blocks (conv1, conv2, ...) that shrink the image early -> global max pool (or flatten) -> linear.

    Built for a CPU: the default downsamples with a stride-2 first conv instead of a max-pool over the
    full-size maps (that pool, its backward pass and the zeroed gradient it needs cost a quarter of a step),
    keeps every map small enough to stay in cache, and costs 0.68M mult-adds per 28x28 image:
    28 -(5x5 conv, stride 2)-> 12 -(3x3 conv)-> 10 -(max-pool)-> 5 -(3x3 conv)-> 3 -(global max)-> 1.
    `head="flatten"` keeps where things are in the last map (textures and shapes, as in Fashion-MNIST).
    """

    def __init__(self, num_classes: int, input_size: InputSize, widths: tuple[int, ...] = (16, 32, 64),
                 kernels: tuple[int, ...] = (5, 3, 3), strides: tuple[int, ...] = (2, 1, 1),
                 pools: tuple[bool, ...] = (False, True, False), padding: str | tuple[str, ...] = "valid",
                 head: str = "max"):
        super().__init__()
        paddings = (padding,) * len(widths) if isinstance(padding, str) else tuple(padding)
        if not len(widths) == len(kernels) == len(strides) == len(pools) == len(paddings):
            raise ValueError(f"widths, kernels, strides, pools (and padding, when a list) need one entry per block, "
                             f"got {widths}, {kernels}, {strides}, {pools}, {padding}")
        if set(paddings) - {"valid", "same"}:
            raise ValueError(f"padding must be 'valid' or 'same' (or one of them per block), got {padding!r}")
        if head not in ("max", "flatten"):
            raise ValueError(f"head must be 'max' or 'flatten', got {head!r}")
        blocks, cin = [], input_size[0]
        for i, (cout, k, stride, pool, mode) in enumerate(zip(widths, kernels, strides, pools, paddings), start=1):
            pad = k // 2 if mode == "same" else 0
            blocks.append(ConvPoolBNReLU(cin, cout, k, stride, pad, bool(pool)))
            self.add_module(f"conv{i}", blocks[-1])
            cin = cout
        self.blocks = len(blocks)
        self.pool = nn.AdaptiveMaxPool2d(1) if head == "max" else nn.Identity()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(flat_features(nn.Sequential(*blocks, self.pool), input_size), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.blocks + 1):
            x = getattr(self, f"conv{i}")(x)
        return self.fc(self.flatten(self.pool(x)))


@register_model(
    "resnet9",
    input_size=(3, 32, 32),
    description="ResNet-9 with BatchNorm for 32x32 images (94% on CIFAR-10 in minutes on a GPU)",
    source="D. Page, 'How to train your ResNet' (Myrtle.ai, 2018); the DAWNBench CIFAR-10 winner",
)
def resnet9(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return ResNet9(num_classes, input_size, **kwargs)


@register_model(
    "fastnet",
    input_size=(1, 28, 28),
    description="compact BatchNorm CNN for 28x28 images, 0.68M mult-adds, built for fast CPU training (fast-mnist)",
    source="cnnlab; in the spirit of airbench (K. Jordan, 2024) and Page's ResNet-9",
)
def fastnet(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return FastNet(num_classes, input_size, **kwargs)
