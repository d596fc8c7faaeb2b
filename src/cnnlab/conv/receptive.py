"""Receptive fields, layer by layer: which input pixels one unit of a layer sees (its size), how far apart
neighbouring units' fields start (the jump), and where the first one starts, from each layer's k, s, p and d."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from cnnlab.conv.sizes import Layer, as_layer, output_size
from cnnlab.errors import CnnlabError

RF_FORMULA = "r = r_prev + d(k-1) * j_prev,  j = j_prev * s,  first = first_prev - p * j_prev"
LayerSpec = Layer | Mapping[str, int] | Sequence[int] | str


@dataclass(frozen=True)
class ReceptiveField:
    """After one layer: a unit sees `size` input pixels along a side, neighbouring units' fields start `jump` pixels
    apart, and unit 0's field starts at input pixel `first` (negative: it reaches into the padding)."""

    name: str
    size: int
    jump: int
    first: int
    out: int | None = None  # the layer's output size, when the input size is known

    def span(self, index: int, n: int | None = None) -> tuple[int, int]:
        """The input pixels [start, stop) that unit `index` sees, clipped to an input of n pixels when n is given."""
        start = self.first + index * self.jump
        stop = start + self.size
        return (max(start, 0), min(stop, n)) if n is not None else (start, stop)


def receptive_fields(layers: Sequence[LayerSpec], n: int | None = None) -> list[ReceptiveField]:
    """The receptive field after each layer of a chain (1-D: square layers give the same along both sides)."""
    size, jump, first, fields = 1, 1, 0, []
    for i, spec in enumerate(layers, 1):
        layer = as_layer(spec)
        # A dilated kernel spans d(k-1)+1 inputs of the layer below, each `jump` input pixels from the next.
        size += layer.dilation * (layer.kernel - 1) * jump
        first -= layer.padding * jump
        jump *= layer.stride
        if n is not None:
            n = output_size(n, layer.kernel, layer.padding, layer.stride, layer.dilation)
        fields.append(ReceptiveField(layer.name or f"layer {i}", size, jump, first, n))
    return fields


def explain_receptive_fields(layers: Sequence[LayerSpec], n: int | None = None) -> str:
    """A table of the chain: each layer's numbers, its receptive field worked out, its jump and first pixel."""
    from cnnlab.text import format_table

    parsed = [as_layer(spec) for spec in layers]
    rows, size, jump = [], 1, 1
    for layer, rf in zip(parsed, receptive_fields(parsed, n)):
        k, s, p, d = layer.kernel, layer.stride, layer.padding, layer.dilation
        worked = f"{size} + {d}*({k}-1)*{jump} = {rf.size}"
        rows.append((rf.name, k, s, p, d, "" if rf.out is None else rf.out, worked, rf.jump, rf.first))
        size, jump = rf.size, rf.jump
    table = format_table(("layer", "k", "s", "p", "d", "out", "receptive field r", "jump j", "first"), rows,
                         "lrrrrrlrr")
    return RF_FORMULA + "\n\n" + table


SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def model_layers(model: nn.Module, input_size: Sequence[int]) -> list[Layer]:
    """The conv and pooling layers of a model in the order a forward pass on zeros runs them, as Layers (a global
    pool becomes one window over its whole input). For chains of layers: a model with branches has no single chain."""
    order: list[tuple[str, nn.Module, int]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: order.append((name, mod, args[0].shape[-2])))
             for name, m in model.named_modules() if isinstance(m, SPATIAL)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [_as_layer(name, m, n_in) for name, m, n_in in order]


def _as_layer(name: str, m: nn.Module, n_in: int) -> Layer:
    if isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        if _first(m.output_size) not in (1, None):
            raise CnnlabError(f"{name}: an adaptive pool to {m.output_size} has no fixed window; only global pools "
                              "(output size 1) have a receptive field of their own")
        return Layer(kernel=n_in, name=name)  # one window over the whole map
    k, s = _first(m.kernel_size), _first(m.stride or m.kernel_size)
    p, d = _first(m.padding), _first(getattr(m, "dilation", 1))
    if isinstance(p, str):  # Conv2d(padding="same"/"valid")
        p = d * (k - 1) // 2 if p == "same" else 0
    return Layer(kernel=k, stride=s, padding=p, dilation=d, name=name)


def _first(v: object) -> int:
    """The height entry of a (height, width) pair (square layers: the only one)."""
    return v[0] if isinstance(v, (tuple, list)) else v  # type: ignore[return-value]
