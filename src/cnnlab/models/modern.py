"""Modern small networks with BatchNorm: a ResNet-9 for 32x32 images and a fast net for 28x28 digits."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._registry import InputSize, register_model


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
    """Conv blocks (conv1, conv2, ...) that shrink the image early -> global max pool -> linear.

    Built for a CPU: the default downsamples with a stride-2 first conv instead of a max-pool over the
    full-size maps (that pool, its backward pass and the zeroed gradient it needs cost a quarter of a step),
    keeps every map small enough to stay in cache, and costs 0.68M mult-adds per 28x28 image:
    28 -(5x5 conv, stride 2)-> 12 -(3x3 conv)-> 10 -(max-pool)-> 5 -(3x3 conv)-> 3 -(global max)-> 1.
    """

    def __init__(self, num_classes: int, input_size: InputSize, widths: tuple[int, ...] = (16, 32, 64),
                 kernels: tuple[int, ...] = (5, 3, 3), strides: tuple[int, ...] = (2, 1, 1),
                 pools: tuple[bool, ...] = (False, True, False), padding: str = "valid"):
        super().__init__()
        if not len(widths) == len(kernels) == len(strides) == len(pools):
            raise ValueError(f"widths, kernels, strides and pools need one entry per block, got {widths}, "
                             f"{kernels}, {strides}, {pools}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        cin = input_size[0]
        for i, (cout, k, stride, pool) in enumerate(zip(widths, kernels, strides, pools), start=1):
            pad = k // 2 if padding == "same" else 0
            self.add_module(f"conv{i}", ConvPoolBNReLU(cin, cout, k, stride, pad, bool(pool)))
            cin = cout
        self.blocks = len(widths)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

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
