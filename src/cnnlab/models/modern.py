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


class FastNet(nn.Module):
    """A compact BatchNorm CNN for 28x28 gray images, shaped to train fast on a CPU."""

    def __init__(self, num_classes: int, input_size: InputSize, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = ConvBNReLU(input_size[0], c1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = ConvBNReLU(c1, c2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = ConvBNReLU(c2, c3)
        self.pool3 = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool3(self.conv3(x))
        return self.fc(self.flatten(x))


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
    description="compact BatchNorm CNN for 28x28 gray images, built for fast CPU training",
    source="cnnlab; in the spirit of airbench (K. Jordan, 2024) and Page's ResNet-9",
)
def fastnet(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return FastNet(num_classes, input_size, **kwargs)
