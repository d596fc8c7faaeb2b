"""The whole network for one image, in one forward pass: every layer's input and output, and how data flowed.

    seen = record_overview(model, x)        # x: one normalized image (1, C, H, W)
    seen.shown                               # the conv, activation and pool layers with maps, in the order they ran
    seen.layers["conv1"].output              # (1, 6, 28, 28), a copy on the CPU
    seen.groups["conv2.conv"]                # "conv2": the block it belongs to ("" at the top level)

What the page's overview draws and what `inspect.neuron` works out one value from. Hooks on every conv,
activation, pool, norm and linear layer, in one context manager (`LayerRecorder`); each call of a layer is kept
with a copy of its first input and of its output, and with the layer whose output that input was (its `source`),
so an elementwise chain (conv -> BatchNorm -> ReLU) can be followed at one position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from cnnlab.inspect.layers import (
    ACTIVATION_TYPES,
    CONV_TYPES,
    NORM_TYPES,
    POOL_TYPES,
    first_tensor,
    layer_kind,
    model_device,
    restore_modes,
    save_modes,
)
from cnnlab.models.outputs import probabilities, split_logits

RECORDED_TYPES = CONV_TYPES + ACTIVATION_TYPES + POOL_TYPES + NORM_TYPES + (nn.Linear,)
SHOWN_KINDS = ("conv", "act", "pool")


@dataclass
class LayerCall:
    """One call of one layer in the forward pass."""

    key: str  # the layer's name; 'name#2', 'name#3' for a layer that runs again (a reused ReLU)
    name: str  # the module's name in the model
    module: nn.Module
    kind: str  # 'conv', 'act', 'pool', 'norm' or 'dense'
    input: torch.Tensor | None  # the first tensor argument, as it was when the layer was called
    output: torch.Tensor
    source: str | None = None  # key of the layer whose output this input was (None: not a recorded layer's)
    inside: bool = False  # the input was computed inside `source` (timm's BatchNormAct2d: the act after the norm)

    @property
    def type(self) -> str:
        return type(self.module).__name__

    @property
    def is_map(self) -> bool:
        """A (1, C, H, W) output: something to draw as maps."""
        return self.output.dim() == 4


@dataclass
class Overview:
    """One image through the network: the recorded layer calls, the maps to show, the class scores."""

    layers: dict[str, LayerCall]  # in the order the layers finished
    shown: list[str]  # conv, activation and pool calls with map outputs, in order
    groups: dict[str, str]  # shown key -> the block it belongs to ('' at the top level)
    logits: torch.Tensor  # (K,) the model's output
    probs: torch.Tensor  # (K,) class probabilities
    head: str | None  # key of the last linear layer whose outputs are the class scores (None: none found)
    outputs_are_probs: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Memory held by the copies (an input shared with the layer before it is counted once)."""
        seen: dict[int, int] = {}
        for call in self.layers.values():
            for t in (call.input, call.output):
                if t is not None:
                    seen[id(t)] = t.numel() * t.element_size()
        return sum(seen.values())

    def consumers(self, key: str) -> list[str]:
        """The calls whose input was `key`'s output (or was computed inside it), in order."""
        return [k for k, call in self.layers.items() if call.source == key]


class LayerRecorder:
    """Record every call of the chosen layers: a copy of its first input and of its output, and its source.

    with LayerRecorder(model) as rec, torch.no_grad():
        model(x)
    rec.calls  # key -> LayerCall, in the order the layers returned

    Inputs are copied when the layer is called (before an in-place ReLU overwrites them); an input that is the
    unchanged output of a recorded layer shares that layer's copy instead of being copied again.
    """

    def __init__(self, model: nn.Module, types: tuple[type[nn.Module], ...] = RECORDED_TYPES):
        self.model = model
        self.modules = {name: m for name, m in model.named_modules() if name and isinstance(m, types)}
        self.calls: dict[str, LayerCall] = {}
        self._handles: list[RemovableHandle] = []
        self._count: dict[str, int] = {}
        self._open: dict[str, list[tuple[str, Any]]] = {}  # module name -> (key, input) of calls not yet returned
        self._outputs: dict[int, tuple[torch.Tensor, int, str]] = {}  # id -> (tensor, version, key), this pass

    def __enter__(self) -> "LayerRecorder":
        self._handles.append(self.model.register_forward_pre_hook(self._new_pass))
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._before(name)))
            self._handles.append(module.register_forward_hook(self._after(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()  # the live tensors of the pass: not kept past it
        self._open.clear()

    def _new_pass(self, module: nn.Module, args: Any) -> None:
        self.calls, self._count, self._open, self._outputs = {}, {}, {}, {}

    def _before(self, name: str):
        def hook(module: nn.Module, args: Any) -> None:
            count = self._count.get(name, 0) + 1
            self._count[name] = count
            key = name if count == 1 else f"{name}#{count}"
            t = first_tensor(args)
            source, copy = self._source_of(t), None
            if source is not None:
                copy = self.calls[source].output  # the same values, already copied
            elif t is not None:
                copy = t.detach().to("cpu", copy=True)
            inside = False
            if source is None:
                source = self._open_parent(name)
                inside = source is not None
            self._open.setdefault(name, []).append((key, (copy, source, inside)))

        return hook

    def _after(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            key, (copy, source, inside) = self._open[name].pop()
            t = first_tensor(output)
            if t is None:
                return
            same = self._source_of(t)  # returned unchanged from a recorded layer inside it: share that copy
            out = self.calls[same].output if same is not None else t.detach().to("cpu", copy=True)
            self.calls[key] = LayerCall(key, name, module, _kind(module), copy, out, source, inside)
            self._outputs[id(t)] = (t, t._version, key)

        return hook

    def _source_of(self, t: torch.Tensor | None) -> str | None:
        if t is None or id(t) not in self._outputs:
            return None
        ref, version, key = self._outputs[id(t)]
        return key if ref is t and t._version == version else None

    def _open_parent(self, name: str) -> str | None:
        """The innermost recorded layer still running that contains `name` (its input was made inside it)."""
        parts = name.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:depth])
            if self._open.get(parent):
                return self._open[parent][-1][0]
        return None


def _kind(module: nn.Module) -> str:
    return "dense" if isinstance(module, nn.Linear) else layer_kind(module)


def record_overview(model: nn.Module, x: torch.Tensor, outputs_are_probs: bool = False) -> Overview:
    """Run one normalized image (1, C, H, W) through `model` in eval mode and record every layer call."""
    saved = save_modes(model)
    model.eval()
    try:
        with LayerRecorder(model) as rec, torch.no_grad():
            logits = split_logits(model(x.to(model_device(model))))[0].float().cpu()
        calls = rec.calls
    finally:
        restore_modes(saved)
    shown = [k for k, c in calls.items() if c.kind in SHOWN_KINDS and c.is_map and not _channels_last(c, calls)]
    head = _head(calls, logits)
    probs = probabilities(logits, outputs_are_probs)[0]
    notes = [] if shown else [f"{type(model).__name__} has no conv, activation or pool layer with maps"]
    return Overview(calls, shown, layer_groups([calls[k].name for k in shown], shown), logits[0], probs, head,
                    outputs_are_probs, notes)


def _channels_last(call: LayerCall, calls: dict[str, LayerCall]) -> bool:
    """An activation of a linear layer's (N, H, W, C) output (ConvNeXt's blocks): 4-D, but not maps."""
    return call.source in calls and calls[call.source].kind == "dense"


def _head(calls: dict[str, LayerCall], logits: torch.Tensor) -> str | None:
    """The last linear layer that produced as many outputs as the model has scores."""
    dense = [k for k, c in calls.items() if c.kind == "dense" and c.output.shape == logits.shape]
    return dense[-1] if dense else None


def layer_groups(names: list[str], keys: list[str] | None = None) -> dict[str, str]:
    """Each layer's block: the deepest module path above it that holds two or more of the layers ('' if none).

    ['conv1.conv', 'conv1.relu', 'fc'] -> {'conv1.conv': 'conv1', 'conv1.relu': 'conv1', 'fc': ''}; timm's
    'blocks.1.0.bn1.act' belongs to 'blocks.1.0' (its parent 'blocks.1.0.bn1' holds only it).
    """
    keys = names if keys is None else keys
    counts: dict[str, int] = {}
    for name in set(names):
        parts = name.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            counts[prefix] = counts.get(prefix, 0) + 1
    out = {}
    for key, name in zip(keys, names):
        parts = name.split(".")
        out[key] = next((".".join(parts[:d]) for d in range(len(parts) - 1, 0, -1)
                         if counts.get(".".join(parts[:d]), 0) >= 2), "")
    return out
