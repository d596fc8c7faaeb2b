"""The classic architectures, each exactly as its source describes it; flatten sizes computed from the input."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models._registry import InputSize, register_model
from cnnlab.models._util import activation, flat_features, pool2x2


class MLP(nn.Module):
    """Flatten -> Linear(C*H*W, hidden) -> ReLU -> Linear(hidden, classes)."""

    def __init__(self, num_classes: int, input_size: InputSize, hidden: int = 128, final_softmax: bool = False):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(input_size[0] * input_size[1] * input_size[2], hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)
        # Some tutorials end the model in a Softmax and then apply cross-entropy to it; kept for reproducing them.
        self.softmax = nn.Softmax(dim=1) if final_softmax else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        return self.softmax(x)


class LeNet(nn.Module):
    """Modern LeNet: conv(5x5, pad 2) -> ReLU -> pool -> conv(5x5) -> ReLU -> pool -> Linear -> ReLU -> Linear."""

    def __init__(
        self,
        num_classes: int,
        input_size: InputSize,
        pool1: str = "max",
        pool2: str = "max",
        final_softmax: bool = False,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(input_size[0], 6, kernel_size=5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = pool2x2(pool1)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = pool2x2(pool2)
        self.flatten = nn.Flatten()
        features = nn.Sequential(self.conv1, self.pool1, self.conv2, self.pool2)
        self.fc1 = nn.Linear(flat_features(features, input_size), 84)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(84, num_classes)
        self.softmax = nn.Softmax(dim=1) if final_softmax else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.fc2(x)
        return self.softmax(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) as usually reimplemented: sigmoid and average pooling by default."""

    def __init__(self, num_classes: int, input_size: InputSize, act: str = "sigmoid", pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(input_size[0], 6, kernel_size=5, padding=2)
        self.act1 = activation(act)
        self.pool1 = pool2x2(pool)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.act2 = activation(act)
        self.pool2 = pool2x2(pool)
        self.flatten = nn.Flatten()
        features = nn.Sequential(self.conv1, self.pool1, self.conv2, self.pool2)
        self.fc1 = nn.Linear(flat_features(features, input_size), 120)
        self.act3 = activation(act)
        self.fc2 = nn.Linear(120, 84)
        self.act4 = activation(act)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.flatten(x)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


class CifarNet(nn.Module):
    """The PyTorch 60-minute-blitz CIFAR-10 network for 32x32 RGB images."""

    def __init__(self, num_classes: int, input_size: InputSize):
        super().__init__()
        self.conv1 = nn.Conv2d(input_size[0], 6, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        features = nn.Sequential(self.conv1, self.pool1, self.conv2, self.pool2)
        self.fc1 = nn.Linear(flat_features(features, input_size), 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


class ConvReluPool(nn.Module):
    """Conv 3x3 -> ReLU -> MaxPool 2x2 -> optional Dropout: the block of the tutorial CNNs."""

    def __init__(self, cin: int, cout: int, padding: int = 1, pool_padding: int = 0, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=padding)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=pool_padding)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.relu(x)
        x = self.pool(x)
        return self.drop(x)


class MnistCNN(nn.Module):
    """Three conv blocks (32, 64, 128 channels, dropout 0.3) and a 625-unit hidden layer."""

    def __init__(self, num_classes: int, input_size: InputSize, dropout: float = 0.3):
        super().__init__()
        self.block1 = ConvReluPool(input_size[0], 32, dropout=dropout)
        self.block2 = ConvReluPool(32, 64, dropout=dropout)
        # Padding the last pool keeps the odd 7x7 map's border: 7x7 -> 4x4.
        self.block3 = ConvReluPool(64, 128, pool_padding=1, dropout=dropout)
        self.flatten = nn.Flatten()
        features = nn.Sequential(self.block1, self.block2, self.block3)
        self.fc1 = nn.Linear(flat_features(features, input_size), 625)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(625, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.flatten(x)
        x = self.drop(self.relu(self.fc1(x)))
        return self.fc2(x)


class SmallConvNet(nn.Module):
    """Four unpadded conv blocks (32, 64, 128, 128) and a 512-unit head: the classic cats-vs-dogs network."""

    def __init__(self, num_classes: int, input_size: InputSize, dropout: float = 0.0):
        super().__init__()
        self.block1 = ConvReluPool(input_size[0], 32, padding=0)
        self.block2 = ConvReluPool(32, 64, padding=0)
        self.block3 = ConvReluPool(64, 128, padding=0)
        self.block4 = ConvReluPool(128, 128, padding=0)
        self.flatten = nn.Flatten()
        features = nn.Sequential(self.block1, self.block2, self.block3, self.block4)
        # Later editions of the tutorial add Dropout(0.5) before the head; off by default to match the original.
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(flat_features(features, input_size), 512)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.block4(x)
        x = self.drop(self.flatten(x))
        x = self.relu(self.fc1(x))
        return self.fc2(x)


@register_model(
    "mlp",
    input_size=(1, 28, 28),
    description="flatten -> Linear(784, 128) -> ReLU -> Linear(128, 10): the baseline without convolutions",
    source="the multilayer perceptron of every MNIST tutorial",
)
def mlp(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return MLP(num_classes, input_size, **kwargs)


@register_model(
    "lenet",
    input_size=(1, 28, 28),
    description="modern LeNet: two 5x5 convs with ReLU and max pooling, Linear(400, 84), Linear(84, 10)",
    source="LeCun et al. 1998, as rewritten with ReLU and max pooling in today's tutorials",
)
def lenet(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return LeNet(num_classes, input_size, **kwargs)


@register_model(
    "lenet5",
    input_size=(1, 28, 28),
    description="LeNet-5 with sigmoid and average pooling (both selectable), 120-84-10 head",
    source="LeCun, Bottou, Bengio, Haffner 1998, 'Gradient-based learning applied to document recognition'",
)
def lenet5(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return LeNet5(num_classes, input_size, **kwargs)


@register_model(
    "cifar_net",
    input_size=(3, 32, 32),
    description="two 5x5 convs with ReLU and max pooling, 120-84-10 head, for 32x32 RGB",
    source="PyTorch tutorial 'Training a classifier' (Deep Learning with PyTorch: a 60 minute blitz)",
)
def cifar_net(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return CifarNet(num_classes, input_size, **kwargs)


@register_model(
    "mnist_cnn",
    input_size=(1, 28, 28),
    description="three conv-ReLU-pool-dropout blocks (32, 64, 128), Linear(2048, 625), Linear(625, 10)",
    source="the TensorFlow/PyTorch MNIST CNN tutorials with three 3x3 conv blocks and a 625-unit layer",
)
def mnist_cnn(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return MnistCNN(num_classes, input_size, **kwargs)


@register_model(
    "small_convnet",
    input_size=(3, 150, 150),
    num_classes=1,
    description="four unpadded conv blocks (32, 64, 128, 128), Linear(6272, 512), one logit: cats vs dogs",
    source="F. Chollet, 'Building powerful image classification models using very little data' (2016)",
)
def small_convnet(num_classes: int, input_size: InputSize, **kwargs) -> nn.Module:
    return SmallConvNet(num_classes, input_size, **kwargs)
