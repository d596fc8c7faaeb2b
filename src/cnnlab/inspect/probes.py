"""Probe snapshots during training: first-layer filters and early feature maps of a few fixed images, per epoch.

`cnnlab train --probe-every N` calls `record_probe` every N epochs (and once before the first epoch); each call
writes `RUN/probes/epoch-XXX.pt`, and `cnnlab report` turns the files into an epoch-by-epoch strip.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.pipeline import Pipeline
from cnnlab.inspect._layers import CONV_TYPES, first_tensor, restore_modes, save_modes
from cnnlab.inspect.features import FeatureExtractor, select_layers

PROBE_IMAGES = 4  # images followed through training
MAX_FILTERS = 16  # first-layer filters stored
MAX_CHANNELS = 8  # feature-map channels stored per layer
MAX_LAYERS = 6  # the first two conv stages (conv, activation, pool) at most
MAX_SIDE = 64  # feature maps larger than this are shrunk (area average): the files stay small
FORMAT = 1
_NAME = re.compile(r"epoch-(\d+)\.pt$")


def record_probe(s: Any, epoch: int) -> Path:
    """Save the first conv layer's weights and early feature maps of the probe images to RUN/probes/epoch-XXX.pt.

    `s` is the training Setup; only the main process calls this (it touches no collective op).
    """
    from cnnlab._io import atomic_save

    images, targets = probe_batch(s)
    snapshot = take_snapshot(s.net, images, s.pipeline, s.device)
    snapshot.update(epoch=int(epoch), targets=targets, classes=list(s.classes))
    return atomic_save(snapshot, Path(s.run_dir) / "probes" / f"epoch-{int(epoch):03d}.pt")


def probe_batch(s: Any, n: int = PROBE_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images as the model sees them, targets): the first n of the validation split, else of the test split."""
    loader = s.val_loader if s.val_loader is not None and len(s.val_loader.data) else s.test_loader
    return split_images(loader.data, s.pipeline, range(min(n, len(loader.data))))


def split_images(data: Any, pipeline: Pipeline, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a dataset split at `indices`, converted to the model's channels and size (uint8), and targets."""
    idx = [int(i) for i in indices]
    if hasattr(data, "images"):  # held in memory
        raw = data.images[idx]
        targets = data.targets[idx]
    else:  # streamed from a folder: decode just these; an unreadable file is skipped
        items = [item for item in (data[i] for i in idx) if item is not None]
        raw = torch.stack([img for img, _ in items]) if items else torch.zeros(0, 1, 1, 1, dtype=torch.uint8)
        targets = torch.tensor([t for _, t in items], dtype=torch.long)
    pipe = dataclasses.replace(pipeline, source_channels=data.info.channels)
    return pipe.convert(raw.cpu()), targets.cpu().long()


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
    from cnnlab.train.metrics import probabilities  # lazy: cnnlab.train imports the training loop

    logits = first_tensor(out)
    if logits is not None and logits.dim() == 2:
        outputs_are_probs = bool(getattr(getattr(model, "spec", None), "kwargs", {}).get("final_softmax"))
        snapshot["probs"] = probabilities(logits.float().cpu(), outputs_are_probs)
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
