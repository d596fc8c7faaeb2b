"""Small helpers shared by model builders."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import CnnlabError


def flat_features(features: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Number of values `features` outputs for one image: the flatten size, computed, never hard-coded."""
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, *input_size))
    except RuntimeError as exc:  # a kernel or pool larger than what is left of the image
        c, h, w = input_size
        raise CnnlabError(
            f"an input of {c}x{h}x{w} is too small for this model: its feature map shrinks to nothing before "
            f"the classifier ({str(exc).splitlines()[0]}). Use a larger --input-size (see `cnnlab summary MODEL`)."
        ) from None
    return out[0].numel()


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def activation(name: str) -> nn.Module:
    """An activation layer by name (relu, sigmoid, tanh)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def pool2x2(name: str) -> nn.Module:
    """A 2x2, stride-2 pooling layer by name (max, avg)."""
    if name not in POOLS:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {name!r}")
    return POOLS[name](kernel_size=2, stride=2)
