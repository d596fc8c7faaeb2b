"""What a CNN learned and computes: its filters as tiles, and its feature maps stage by stage."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.viz.images import grid_shape
from cnnlab.viz.style import CMAP_SIGNED, canvas, image_axes, plot_style, root_figure

STAGE_LABELS = {"conv": "after conv", "act": "after activation", "pool": "after pool", "norm": "after norm"}


def conv_weight(source: Any, layer: str | None = None) -> tuple[str, torch.Tensor]:
    """(name, weight (O, I, kh, kw)) from a weight tensor, a Conv2d, or a model (its `layer`, else its first conv)."""
    if isinstance(source, (torch.Tensor, np.ndarray)):
        w = torch.as_tensor(source)
        name = "weights"
    elif isinstance(source, nn.Module):
        if layer is not None:
            module, name = dict(source.named_modules()).get(layer), layer
            if module is None or not layer:
                convs = [n for n, m in source.named_modules() if isinstance(m, nn.Conv2d)]
                raise CnnlabError(f"{type(source).__name__} has no layer named {layer!r}; its conv layers: "
                                  f"{', '.join(convs) or 'none'}")
        elif isinstance(source, nn.Conv2d):
            module, name = source, type(source).__name__
        else:
            found = next(((n, m) for n, m in source.named_modules() if isinstance(m, nn.Conv2d)), None)
            if found is None:
                raise CnnlabError(f"{type(source).__name__} has no Conv2d layer, so it has no filters to show")
            name, module = found
        if not isinstance(module, nn.Conv2d):
            raise CnnlabError(f"layer {name!r} is a {type(module).__name__}, not a Conv2d: it has no 2-D filters")
        w = module.weight
    else:
        raise CnnlabError(f"plot_filters takes a weight tensor, a Conv2d or a model, got {type(source).__name__}")
    if w.dim() != 4:
        raise CnnlabError(f"conv weights must be (out, in, kh, kw), got shape {tuple(w.shape)}")
    return name, w.detach().float().cpu()


def plot_filters(
    weight_or_model: Any,
    layer: str | None = None,
    mode: str = "auto",
    max_filters: int | None = None,
    max_channels: int = 8,
    ncols: int = 8,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Conv filters: 'gray' or 'rgb' tiles for a first layer, 'channels' (filter x input channel) for deeper ones.

    mode='auto' picks gray for 1 input channel, rgb for 3, channels otherwise. One colour scale for the whole
    layer, centred on zero, so filters can be compared with each other.
    """
    name, w = conv_weight(weight_or_model, layer)
    out_ch, in_ch, kh, kw = w.shape
    if mode == "auto":
        mode = {1: "gray", 3: "rgb"}.get(in_ch, "channels")
    if mode not in ("gray", "rgb", "channels"):
        raise CnnlabError(f"mode must be 'auto', 'gray', 'rgb' or 'channels', got {mode!r}")
    if mode == "gray" and in_ch != 1 or mode == "rgb" and in_ch != 3:
        need = 1 if mode == "gray" else 3
        raise CnnlabError(f"mode {mode!r} needs filters with {need} input channel(s), got {in_ch}")
    limit = float(w.abs().max()) or 1.0
    heading = title or f"{name}: {out_ch} filters of {in_ch}x{kh}x{kw}"
    with plot_style():
        if mode == "channels":
            box = _filter_channels(w, limit, max_filters or 16, max_channels, ax, figsize)
        else:
            box = _filter_tiles(w, mode, limit, max_filters or 64, ncols, ax, figsize)
        box.suptitle(heading)
    return root_figure(box)


def _filter_tiles(
    w: torch.Tensor, mode: str, limit: float, max_filters: int, ncols: int, ax: Axes | None, figsize: Any
) -> Any:
    """One tile per filter: gray on a symmetric scale, or RGB with zero at mid-gray."""
    n = min(w.shape[0], max_filters)
    rows, cols = grid_shape(n, ncols)
    titled = n <= 16
    box = canvas(ax, figsize or (max(3.0, cols * 0.9), rows * (0.9 + (0.2 if titled else 0.0)) + 0.5))
    axes = box.subplots(rows, cols, squeeze=False)
    im = None
    for i, a in enumerate(axes.flat):
        image_axes(a)
        if i >= n:
            a.set_axis_off()
            continue
        if mode == "gray":
            im = a.imshow(w[i, 0].numpy(), cmap="gray", vmin=-limit, vmax=limit)
        else:
            a.imshow((w[i].permute(1, 2, 0).numpy() / (2 * limit) + 0.5).clip(0, 1))
        if titled:
            a.set_title(f"#{i}", fontsize=7)
    if im is not None:
        box.colorbar(im, ax=list(axes.flat), shrink=0.7, label="weight")
    return box


def _filter_channels(
    w: torch.Tensor, limit: float, max_filters: int, max_channels: int, ax: Axes | None, figsize: Any
) -> Any:
    """Rows = filters, columns = the input channels each filter looks at."""
    rows, cols = min(w.shape[0], max_filters), min(w.shape[1], max_channels)
    box = canvas(ax, figsize or (cols * 0.8 + 1.4, rows * 0.8 + 0.8))
    axes = box.subplots(rows, cols, squeeze=False)
    im = None
    for r in range(rows):
        for c in range(cols):
            a = image_axes(axes[r, c])
            im = a.imshow(w[r, c].numpy(), cmap=CMAP_SIGNED, vmin=-limit, vmax=limit)
            if r == 0:
                a.set_title(f"in {c}", fontsize=7)
            if c == 0:
                a.set_ylabel(f"filter {r}", fontsize=7)
    box.colorbar(im, ax=list(axes.flat), shrink=0.7, label="weight")
    return box


def _guess_kind(name: str) -> str:
    """A layer's kind from its name, for plain dicts that carry no `.kinds`."""
    last = name.split("#")[0].rsplit(".", 1)[-1].lower()
    for kind, words in (
        ("conv", ("conv",)),
        ("pool", ("pool",)),
        ("norm", ("bn", "norm")),
        ("act", ("relu", "act", "sigmoid", "tanh", "gelu", "silu", "elu", "swish", "mish")),
    ):
        if any(word in last for word in words):
            return kind
    return "other"


def feature_stages(captured: Mapping[str, Any], layers: Sequence[str] | None = None) -> list[list[str]]:
    """Spatial maps grouped into stages: each conv starts one, the activation and pool after it join it."""
    kinds = getattr(captured, "kinds", {})
    names = list(layers) if layers is not None else list(captured)
    missing = [n for n in names if n not in captured]
    if missing:
        raise CnnlabError(f"no captured layer named {missing[0]!r}; captured: {', '.join(captured)}")
    stages: list[list[str]] = []
    for name in names:
        t = captured[name]
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4):
            continue  # flattened and linear outputs have no map to show
        kind = kinds.get(name) or _guess_kind(name)
        if kind == "conv" or not stages:
            stages.append([name])
        else:
            stages[-1].append(name)
    if not stages:
        raise CnnlabError("none of the captured outputs is a spatial map (N, C, H, W)")
    return stages


def plot_feature_maps(
    captured: Mapping[str, torch.Tensor],
    layers: Sequence[str] | None = None,
    channels: int = 8,
    index: int = 0,
    max_layers: int = 12,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Feature maps of one image: a column per layer (after conv | after activation | after pool), a row per channel.

    Within a stage each channel shares one colour scale centred on zero, so what the activation removes (blue,
    negative) and what pooling keeps can be read off side by side.
    """
    stages = feature_stages(captured, layers)
    columns = [name for stage in stages for name in stage]
    shown = columns[:max_layers]
    stages = [[n for n in stage if n in shown] for stage in stages]
    stages = [s for s in stages if s]
    kinds = getattr(captured, "kinds", {})
    maps = {n: _one_image(captured[n], index) for n in shown}
    rows = min(channels, max(m.shape[0] for m in maps.values()))
    # A narrow empty column between stages keeps them apart.
    ratios: list[float] = []
    for i, stage in enumerate(stages):
        ratios += ([0.15] if i else []) + [1.0] * len(stage)
    cut = f" (first {len(shown)} of {len(columns)} layers)" if len(shown) < len(columns) else ""
    heading = title or "feature maps" + cut
    with plot_style():
        box = canvas(ax, figsize or (len(ratios) * 1.15 + 0.6, rows * 1.1 + 1.0))
        axes = box.subplots(rows, len(ratios), squeeze=False, width_ratios=ratios)
        col = 0
        for i, stage in enumerate(stages):
            if i:
                for a in axes[:, col]:
                    a.set_axis_off()
                col += 1
            for r in range(rows):
                # One symmetric scale per channel across the stage: ReLU's zeros and pooling's maxima line up.
                values = [maps[n][r] for n in stage if r < maps[n].shape[0]]
                limit = max((float(v.abs().max()) for v in values), default=1.0) or 1.0
                for j, name in enumerate(stage):
                    a = image_axes(axes[r, col + j])
                    if r >= maps[name].shape[0]:
                        a.set_axis_off()
                        continue
                    a.imshow(maps[name][r].numpy(), cmap=CMAP_SIGNED, vmin=-limit, vmax=limit)
                    if j == 0 and i == 0:
                        a.set_ylabel(f"channel {r}", fontsize=7)
            for j, name in enumerate(stage):
                c, h, w = maps[name].shape
                kind = kinds.get(name) or _guess_kind(name)
                axes[0, col + j].set_title(f"{name}\n{STAGE_LABELS.get(kind, '')}\n{c}x{h}x{w}", fontsize=7)
            col += len(stage)
        box.suptitle(heading)
    return root_figure(box)


def _one_image(t: torch.Tensor, index: int) -> torch.Tensor:
    """The (C, H, W) maps of image `index` from a (N, C, H, W) batch (or a single (C, H, W))."""
    t = t.detach().float().cpu()
    if t.dim() == 3:
        return t
    if not -t.shape[0] <= index < t.shape[0]:
        raise CnnlabError(f"image index {index} out of range for a batch of {t.shape[0]}")
    return t[index]
