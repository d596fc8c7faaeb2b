"""Grad-CAM (Selvaraju et al. 2017): a conv layer's maps weighted by the class score's gradient, positive part kept."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from cnnlab.errors import CnnlabError
from cnnlab.inspect.layers import (
    as_batch,
    first_tensor,
    get_layer,
    layer_name,
    model_device,
    resolve_targets,
    restore_modes,
    save_modes,
)
from cnnlab.models.outputs import split_logits

Target = int | Sequence[int] | torch.Tensor | None


def find_target_layer(model: nn.Module, example: torch.Tensor | Sequence[int] | None = None) -> str:
    """Name of the last layer (nested blocks included) whose output is a spatial map (N, C, H, W).

    `example` is an input batch or an input size (C, H, W); without it the model's `spec.input_size` is used,
    else a 224x224 image with as many channels as the first conv layer takes.
    """
    x = _example_input(model, example)
    finished: list[tuple[str, tuple[int, ...]]] = []  # layers in the order they return

    def hook(name: str):
        def record(module: nn.Module, args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is not None:
                finished.append((name, tuple(t.shape)))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    saved = save_modes(model)
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError) as exc:
        raise CnnlabError(
            f"could not run {type(model).__name__} on an input of shape {tuple(x.shape)} to find its last "
            f"spatial layer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "pass an example input of the right size, or name the target layer"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        restore_modes(saved)
    maps = [(name, shape) for name, shape in finished if len(shape) == 4]
    if not maps:
        raise CnnlabError(
            f"{type(model).__name__} has no layer with a spatial (N, C, H, W) output, so Grad-CAM has no map "
            "to weight; use saliency() for models without convolutions"
        )
    # A 1x1 map (a global pool, or a deep layer on a small input) cannot localise anything.
    wide = [name for name, shape in maps if shape[2] * shape[3] > 1]
    # A container returns after its last child, so on ties the block (e.g. 'layer4') wins over its last leaf.
    return wide[-1] if wide else maps[-1][0]


def _example_input(model: nn.Module, example: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    device = model_device(model)
    if isinstance(example, torch.Tensor):
        return as_batch(example)[:1].detach().to(device)
    if example is None:
        spec = getattr(model, "spec", None)
        if spec is not None:
            example = spec.input_size
        else:
            conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            example = (conv.in_channels if conv is not None else 3, 224, 224)
    size = tuple(int(v) for v in example)
    if len(size) != 3:
        raise CnnlabError(f"an example input size must be (C, H, W), got {size}")
    return torch.zeros(1, *size, device=device)


class GradCAM:
    """Class-activation heatmaps from the gradients at one layer.

    with GradCAM(model) as cam:        # target layer found automatically, or GradCAM(model, "layer4")
        heat = cam(images)             # (N, H, W) in [0, 1] at the input's resolution, for the predicted class
        heat = cam(images, target=3)   # ... for class 3
    cam.layer_name, cam.outputs, cam.targets  # the layer used; logits and classes of the last call

    The model's train/eval flags and requires_grad flags are left as they were; parameter .grad is not touched.
    """

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None):
        self.model = model
        self.layer: nn.Module | None = None
        self.layer_name: str | None = None
        self.outputs: torch.Tensor | None = None  # logits of the last call, detached, on the CPU
        self.targets: torch.Tensor | None = None  # class index explained for each image of the last call
        self._handles: list[RemovableHandle] = []
        self._entered = False
        self._activations: list[torch.Tensor] = []
        self._gradients: dict[int, torch.Tensor] = {}
        if isinstance(target_layer, nn.Module):
            self._use_layer(layer_name(model, target_layer))
        elif isinstance(target_layer, str):
            self._use_layer(target_layer)
        elif target_layer is not None:
            raise CnnlabError(f"target_layer must be a layer name or module, got {type(target_layer).__name__}")
        elif getattr(model, "spec", None) is not None:
            self._use_layer(find_target_layer(model))
        # Otherwise the layer is found on the first call, from the real input's size.

    def _use_layer(self, name: str) -> None:
        self.layer = get_layer(self.model, name)
        self.layer_name = name

    def __enter__(self) -> "GradCAM":
        self._entered = True
        self._attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._entered = False
        self.remove()

    def _attach(self) -> None:
        if self.layer is not None and not self._handles:
            self._handles.append(self.layer.register_forward_hook(self._save_activation))

    def remove(self) -> None:
        """Remove the hook on the target layer."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _save_activation(self, module: nn.Module, args: Any, output: Any) -> None:
        t = first_tensor(output)
        if t is None or t.dim() != 4:
            shape = tuple(t.shape) if t is not None else type(output).__name__
            raise CnnlabError(
                f"Grad-CAM needs a spatial (N, C, H, W) output at layer {self.layer_name!r}, got {shape}; "
                "pick a conv layer or block"
            )
        index = len(self._activations)
        # A copy: a later in-place op (ReLU(inplace=True), `out += identity`) would change the stored map.
        self._activations.append(t.detach().clone())
        if t.requires_grad:
            # Hooks registered before an in-place op receive the gradient of the value we stored.
            t.register_hook(lambda grad: self._gradients.__setitem__(index, grad.detach()))

    def __call__(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Heatmaps (N, H, W) in [0, 1] for `target` (the predicted class when None), at x's resolution."""
        x = as_batch(x)
        if self.layer is None:
            self._use_layer(find_target_layer(self.model, x))
        self._attach()
        saved = save_modes(self.model)
        self.model.eval()
        self._activations, self._gradients = [], {}
        try:
            # Attribution needs a graph even when the caller runs under no_grad or inference_mode.
            with torch.inference_mode(False), torch.enable_grad():
                # The input asks for gradients, so frozen parameters (requires_grad=False) still give them.
                inp = x.detach().to(model_device(self.model)).clone().requires_grad_(True)
                logits = split_logits(self.model(inp))[0]
                targets = resolve_targets(target, logits)
                score = logits.gather(1, targets[:, None].to(logits.device)).sum()
                # autograd.grad, not backward(): no parameter .grad is filled in.
                torch.autograd.grad(score, inp, allow_unused=True)
        finally:
            restore_modes(saved)
            if not self._entered:  # called outside a `with` block: leave no hook behind
                self.remove()
        self.outputs, self.targets = logits.detach().cpu(), targets
        last = len(self._activations) - 1
        if last < 0:
            raise CnnlabError(f"layer {self.layer_name!r} did not run during the forward pass")
        if last not in self._gradients:
            raise CnnlabError(f"the class score does not depend on layer {self.layer_name!r}; pick another layer")
        return cam_from(self._activations[last], self._gradients[last], tuple(x.shape[-2:]))


def cam_from(activation: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of dScore/dA_k; upsampled to `size`, maximum scaled to 1."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(cam).cpu()


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each non-negative map of a (N, H, W) batch so its maximum is 1; all-zero maps stay zero."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (maps / peak[:, None, None]).clamp(0, 1)
