"""Capture what chosen layers output during a forward pass: a context manager over forward hooks."""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from cnnlab.errors import CnnlabError
from cnnlab.inspect.layers import (
    ACTIVATION_TYPES,
    CONV_TYPES,
    POOL_TYPES,
    first_tensor,
    get_layer,
    layer_kind,
)

LayerSelector = Union[str, type, Sequence[Union[str, type]], None]
DEFAULT_TYPES = CONV_TYPES + ACTIVATION_TYPES + POOL_TYPES


class Features(dict):
    """Captured outputs, layer name -> tensor in the order the layers ran; `.kinds` and `.types` describe them."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: dict[str, str] = {}  # name -> 'conv', 'act', 'pool', 'norm' or 'other'
        self.types: dict[str, str] = {}  # name -> class name, e.g. 'Conv2d'


class FeatureExtractor:
    """Record the outputs of chosen layers (names, types, or every conv, activation and pool layer).

    with FeatureExtractor(model) as fx:
        model(x)
    fx.features  # {'conv1': tensor, 'relu1': tensor, ...}, detached copies on the CPU

    A layer that runs more than once in a pass (torchvision's BasicBlock reuses its ReLU) is stored as
    'name', 'name#2', ... Each new forward pass of `model` starts a fresh `features` dict.
    """

    def __init__(self, model: nn.Module, layers: LayerSelector = None):
        self.model = model
        self.layers: dict[str, nn.Module] = select_layers(model, layers)
        self.features = Features()
        self._handles: list[RemovableHandle] = []
        self._calls: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        """The names of the hooked layers, in registration order."""
        return list(self.layers)

    def __enter__(self) -> "FeatureExtractor":
        if self._handles:
            raise CnnlabError("this FeatureExtractor is already active; leave its `with` block before re-entering")
        # A pre-hook on the model itself marks the start of each forward pass.
        self._handles.append(self.model.register_forward_pre_hook(self._new_pass))
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._capture_hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this extractor added."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __call__(self, x: torch.Tensor) -> Features:
        """Run the model on `x` without gradients and return the captured features."""
        if self._handles:
            with torch.no_grad():
                self.model(x)
            return self.features
        with self:
            with torch.no_grad():
                self.model(x)
        return self.features

    def _new_pass(self, module: nn.Module, args: Any) -> None:
        self.features = Features()
        self._calls = {}

    def _capture_hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is None:
                return
            count = self._calls.get(name, 0) + 1
            self._calls[name] = count
            key = name if count == 1 else f"{name}#{count}"
            # A copy, not a view: a later in-place op (ReLU(inplace=True)) would otherwise change what we stored.
            self.features[key] = t.detach().to("cpu", copy=True)
            self.features.kinds[key] = layer_kind(module)
            self.features.types[key] = type(module).__name__

        return hook


def select_layers(model: nn.Module, layers: LayerSelector = None) -> dict[str, nn.Module]:
    """Name -> module for a selector: names, module types, a mix, or None for every conv, activation, pool."""
    if layers is None:
        chosen = _by_type(model, DEFAULT_TYPES)
        if not chosen:
            raise CnnlabError(f"{type(model).__name__} has no conv, activation or pooling layer to capture")
        return chosen
    if isinstance(layers, (str, type)):
        layers = [layers]
    wanted: set[int] = set()
    for item in layers:
        if isinstance(item, str):
            wanted.add(id(get_layer(model, item)))
        elif isinstance(item, type) and issubclass(item, nn.Module):
            found = _by_type(model, (item,))
            if not found:
                raise CnnlabError(f"{type(model).__name__} has no layer of type {item.__name__}")
            wanted.update(id(m) for m in found.values())
        else:
            raise CnnlabError(f"layers must be names or nn.Module types, got {item!r}")
    # Registration order; named_modules lists a module registered under two names once.
    return {name: m for name, m in model.named_modules() if name and id(m) in wanted}


def _by_type(model: nn.Module, types: tuple[type, ...]) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if name and isinstance(m, types)}
