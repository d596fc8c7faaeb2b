"""Probe snapshots during training: first-layer filters and early feature maps of a few fixed images, per epoch.

`cnnlab train --probe-every N` takes a snapshot every N epochs (and once before the first epoch) and saves it as
`RUN/probes/epoch-XXX.pt`; `cnnlab report` turns the files into an epoch-by-epoch strip.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.pipeline import Pipeline
from cnnlab.inspect.features import FeatureExtractor, select_layers
from cnnlab.inspect.layers import CONV_TYPES, restore_modes, save_modes
from cnnlab.models.outputs import probabilities, split_logits

MAX_FILTERS = 16  # first-layer filters stored
MAX_CHANNELS = 8  # feature-map channels stored per layer
MAX_LAYERS = 6  # the first two conv stages (conv, activation, pool) at most
MAX_SIDE = 64  # feature maps larger than this are shrunk (area average): the files stay small
FORMAT = 1
_NAME = re.compile(r"epoch-(\d+)\.pt$")


def probe_layers(model: nn.Module) -> list[str]:
    """The first conv layer and what follows it up to the third conv (registration order), at most MAX_LAYERS."""
    names, convs = [], 0
    for name, module in select_layers(model).items():
        if isinstance(module, CONV_TYPES):
            convs += 1
            if convs > 2:
                break
        if convs:  # skip anything registered before the first conv
            names.append(name)
    return names[:MAX_LAYERS]


@torch.no_grad()
def take_snapshot(model: nn.Module, images: torch.Tensor, pipeline: Pipeline,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Filters of the first conv and the early feature maps of `images` (uint8, as the model sees them)."""
    layers = probe_layers(model)
    first = dict(model.named_modules())[layers[0]] if layers else None
    snapshot: dict[str, Any] = {"format": FORMAT, "images": images.clone(), "features": {}, "kinds": {},
                                "shapes": {}, "probs": None, "filters": None, "filter_layer": None}
    if first is not None and getattr(first, "weight", None) is not None and first.weight.dim() == 4:
        snapshot["filters"] = first.weight[:MAX_FILTERS].detach().float().cpu().clone()
        snapshot["filter_layer"] = layers[0]
        snapshot["filter_count"] = int(first.weight.shape[0])
    if not layers or not len(images):
        return snapshot
    x = pipeline.normalize(images.float() / 255.0).to(device)
    saved = save_modes(model)
    model.eval()  # BatchNorm with its running statistics, dropout off: the model as it would predict
    try:
        with FeatureExtractor(model, layers) as fx:
            out = model(x)
    finally:
        restore_modes(saved)
    spec = getattr(model, "spec", None)  # a registry model's; a bare module's outputs are logits
    snapshot["probs"] = probabilities(split_logits(out)[0].float().cpu(), bool(spec and spec.outputs_are_probs))
    for name, t in fx.features.items():
        if t.dim() != 4:
            continue
        snapshot["shapes"][name] = list(t.shape[1:])
        snapshot["kinds"][name] = fx.features.kinds[name]
        snapshot["features"][name] = _shrink(t[:, :MAX_CHANNELS].float()).half()
    return snapshot


def _shrink(t: torch.Tensor) -> torch.Tensor:
    """Maps wider than MAX_SIDE averaged down (aspect kept), so a 224-pixel model's probe stays a few hundred KB."""
    h, w = t.shape[-2:]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return t
    return F.interpolate(t, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


def load_probes(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every RUN/probes/epoch-XXX.pt snapshot, in epoch order (an empty list when training recorded none)."""
    folder = Path(run_dir) / "probes"
    if not folder.is_dir():
        return []
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name)))
    return [torch.load(p, map_location="cpu", weights_only=True) for _, p in files]
