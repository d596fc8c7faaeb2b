"""How filters and feature maps changed during training: strips drawn from `cnnlab.inspect.probes` snapshots."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.viz.images import draw_image, to_hwc
from cnnlab.viz.style import CMAP_SIGNED, image_axes, new_figure, plot_style

TILE = 0.8  # inches per strip tile


def pick_epochs(snapshots: Sequence[dict[str, Any]], max_rows: int = 10) -> list[dict[str, Any]]:
    """At most `max_rows` snapshots, evenly spaced, always the first and the last."""
    n = len(snapshots)
    if n <= max_rows:
        return list(snapshots)
    keep = sorted({round(i * (n - 1) / (max_rows - 1)) for i in range(max_rows)})
    return [snapshots[i] for i in keep]


def _check(snapshots: Sequence[dict[str, Any]]) -> None:
    if not snapshots:
        raise CnnlabError("no probe snapshots: train with --probe-every N to record them")


def _filter_tile(w: torch.Tensor, limit: float) -> tuple[np.ndarray, dict[str, Any]]:
    """One filter (I, kh, kw) as an image: RGB with zero at mid-gray for 3 inputs, else input channel 0 signed."""
    if w.shape[0] == 3:
        return (w.permute(1, 2, 0).numpy() / (2 * limit) + 0.5).clip(0, 1), {}
    return w[0].numpy(), {"cmap": "gray" if w.shape[0] == 1 else CMAP_SIGNED, "vmin": -limit, "vmax": limit}


def plot_probe_filters(snapshots: Sequence[dict[str, Any]], max_filters: int = 8, max_rows: int = 10,
                       title: str | None = None) -> Figure:
    """Rows = epochs, columns = the first-layer filters; one colour scale per row, centred on zero."""
    _check(snapshots)
    rows = [s for s in pick_epochs(snapshots, max_rows) if s.get("filters") is not None]
    if not rows:
        raise CnnlabError("the probe snapshots hold no conv filters (the model's first layer is not a Conv2d)")
    cols = min(max_filters, rows[0]["filters"].shape[0])
    w0 = rows[0]["filters"]
    heading = title or (f"{rows[0]['filter_layer']}: filters 0-{cols - 1} of {rows[0].get('filter_count', cols)} "
                        f"({w0.shape[1]}x{w0.shape[2]}x{w0.shape[3]}) by epoch; each row on its own scale")
    with plot_style():
        fig = new_figure((cols * TILE + 0.9, len(rows) * TILE + 0.6))
        axes = fig.subplots(len(rows), cols, squeeze=False)
        for r, snap in enumerate(rows):
            w = snap["filters"].float()[:cols]
            limit = float(w.abs().max()) or 1.0
            for c in range(cols):
                a = image_axes(axes[r, c])
                tile, kw = _filter_tile(w[c], limit)
                a.imshow(tile, interpolation="nearest", **kw)
                if r == 0:
                    a.set_title(f"#{c}", fontsize=7)
            axes[r, 0].set_ylabel(f"epoch {snap['epoch']}", fontsize=8)
        fig.suptitle(heading, fontsize=9)
    return fig


def plot_probe_maps(snapshots: Sequence[dict[str, Any]], layer: str | None = None, image: int = 0,
                    channels: int = 8, max_rows: int = 10, title: str | None = None) -> Figure:
    """Rows = epochs, columns = channels of one layer's feature maps for one probe image (the input on the left)."""
    _check(snapshots)
    rows = pick_epochs(snapshots, max_rows)
    first = rows[0]
    available = list(first["features"])
    if not available:
        raise CnnlabError("the probe snapshots hold no feature maps")
    layer = layer or first.get("filter_layer") or available[0]
    if layer not in first["features"]:
        raise CnnlabError(f"no probe feature maps for layer {layer!r}; recorded: {', '.join(available)}")
    n_images = first["features"][layer].shape[0]
    if not 0 <= image < n_images:
        raise CnnlabError(f"probe image {image} out of range: {n_images} probe images were recorded")
    cols = min(channels, first["features"][layer].shape[1])
    c, h, w = first["shapes"][layer]
    kind = {"conv": "after conv", "act": "after activation", "pool": "after pool"}.get(first["kinds"].get(layer), "")
    heading = title or (f"{layer} ({kind}, {c}x{h}x{w}): channels 0-{cols - 1} for probe image {image}, by epoch; "
                        "each row on its own scale")
    with plot_style():
        fig = new_figure(((cols + 1) * TILE + 0.9, len(rows) * TILE + 0.6))
        axes = fig.subplots(len(rows), cols + 1, squeeze=False)
        for r, snap in enumerate(rows):
            maps = snap["features"][layer][image].float()[:cols]
            limit = float(maps.abs().max()) or 1.0
            if r == 0:
                draw_image(axes[0, 0], to_hwc(snap["images"][image]), "input")
            else:
                axes[r, 0].set_axis_off()
            for j in range(cols):
                a = image_axes(axes[r, j + 1])
                # Nearest: each stored value one crisp block (and a PNG a fraction of the smoothed one's size).
                a.imshow(maps[j].numpy(), cmap=CMAP_SIGNED, vmin=-limit, vmax=limit, interpolation="nearest")
                if r == 0:
                    a.set_title(f"ch {j}", fontsize=7)
            axes[r, 1].set_ylabel(f"epoch {snap['epoch']}", fontsize=8)
        fig.suptitle(heading, fontsize=9)
    return fig
