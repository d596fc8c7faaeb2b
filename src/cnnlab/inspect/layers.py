"""Shared helpers for hooks: layer kinds, finding a layer by name, layer outputs, saving and restoring modes."""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError

CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)
POOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def layer_kind(module: nn.Module) -> str:
    """'conv', 'act', 'pool', 'norm' or 'other': what plots group stages by."""
    if isinstance(module, CONV_TYPES):
        return "conv"
    if isinstance(module, ACTIVATION_TYPES):
        return "act"
    if isinstance(module, POOL_TYPES):
        return "pool"
    if isinstance(module, NORM_TYPES):
        return "norm"
    return "other"


def layer_names(model: nn.Module) -> list[str]:
    """Every named sub-module of `model`, in registration order, without the model itself."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called `name`; an unknown name lists the closest and the available ones."""
    # remove_duplicate=False: a module registered under two names is found by either.
    modules = dict(model.named_modules(remove_duplicate=False))
    if name in modules and name:
        return modules[name]
    raise CnnlabError(unknown_layer_message(model, name))


def unknown_layer_message(model: nn.Module, name: str) -> str:
    """'no layer named X' with close matches and the full list of names."""
    names = layer_names(model)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"{type(model).__name__} has no layer named {name!r}.{hint} Available layers: {', '.join(names)}"


def layer_name(model: nn.Module, module: nn.Module) -> str:
    """The name under which `module` is registered inside `model`."""
    for name, m in model.named_modules():
        if m is module and name:
            return name
    raise CnnlabError(f"the given {type(module).__name__} is not a layer of this {type(model).__name__}")


def first_tensor(x: Any) -> torch.Tensor | None:
    """The first tensor in a layer's output (a tensor, a tuple or list, a dict, or an object with `.logits`)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = first_tensor(item)
            if t is not None:
                return t
        return None
    if isinstance(x, dict):
        return first_tensor(list(x.values()))
    logits = getattr(x, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Each sub-module's train/eval flag: a model may mix them (e.g. frozen BatchNorm layers kept in eval)."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags `save_modes` recorded."""
    for module, training in saved:
        module.training = training


def resolve_targets(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the prediction when `target` is None, else the given int or sequence."""
    n, k = logits.shape
    if target is None:
        # With one logit the score to explain is the logit itself (class index 0 by convention).
        return torch.zeros(n, dtype=torch.long) if k == 1 else logits.argmax(dim=1).cpu()
    idx = torch.as_tensor(target, dtype=torch.long).flatten().cpu()
    if idx.numel() == 1:
        idx = idx.expand(n)
    if idx.numel() != n:
        raise CnnlabError(f"got {idx.numel()} targets for {n} images; give one class index, or one per image")
    bad = [int(i) for i in idx if not 0 <= int(i) < k]
    if bad:
        if k == 1:
            raise CnnlabError(f"this model has one logit: the only target is 0 (the logit itself), got {bad[0]}")
        raise CnnlabError(f"target class {bad[0]} out of range: the model has {k} classes (0..{k - 1})")
    return idx.clone()


def as_batch(x: torch.Tensor) -> torch.Tensor:
    """Accept one image (C, H, W) or a batch (N, C, H, W); return a batch."""
    if not isinstance(x, torch.Tensor):
        raise CnnlabError(f"expected an image tensor (C, H, W) or a batch (N, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        return x[None]
    if x.dim() != 4:
        raise CnnlabError(f"expected an image tensor (C, H, W) or a batch (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def gradient_ready(model: nn.Module) -> nn.Module:
    """`model`, or a copy of it when it was built under torch.inference_mode (its tensors cannot take gradients).

    A Run's model built lazily inside `run.predict` is such a model; Grad-CAM and saliency need gradients.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if not any(t.is_inference() for t in tensors):
        return model
    import copy

    return copy.deepcopy(model)  # outside inference mode, the copies are ordinary tensors
