"""Convolution figures: kernels as heatmaps with their numbers, the conv -> ReLU -> pool pipeline, a learned kernel."""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.viz.style import CMAP, CMAP_SIGNED, canvas, image_axes, plot_style, root_figure, single_axes

PANEL = 2.3  # inches per image panel: big enough to see edges in a 256-pixel photo
TITLE_CHARS = 28  # characters of a 9-point title that fit over one panel


def fit_title(title: str | None) -> str | None:
    """A title wrapped onto lines that fit over its panel: a wider one would stick out of the figure's edge."""
    return textwrap.fill(title, TITLE_CHARS, break_long_words=False) if title else title


def _np(x: object) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _cell_text(v: float, integers: bool, big: bool) -> str:
    if integers:
        return str(int(round(v)))
    return f"{v:.2f}" if big else f"{v:.3f}"


def kernel_heatmap(kernel: object, ax: Axes | None = None, title: str | None = None) -> Axes:
    """The kernel as a signed heatmap (red +, blue -, white 0) with each weight written in its cell."""
    k = _np(kernel)
    if k.ndim != 2:
        raise CnnlabError(f"a kernel to draw must be 2-D (kh, kw), got shape {k.shape}")
    with plot_style():
        ax = single_axes(ax, (PANEL, PANEL))
        vmax = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap=CMAP_SIGNED, vmin=-vmax, vmax=vmax)
        integers = bool(np.allclose(k, np.round(k), atol=1e-6))
        side = max(k.shape)
        size = 10 if side <= 3 else 8 if side <= 5 else 6
        for (r, c), v in np.ndenumerate(k):
            # Dark text on pale cells, white text on strong ones, so every number stays readable.
            color = "white" if abs(v) > 0.6 * vmax else "#222222"
            text = _cell_text(float(v), integers, side > 7)
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=color)
        image_axes(ax)
        if title:
            ax.set_title(fit_title(title))
    return ax


def _robust_max(a: np.ndarray) -> float:
    # A few very strong responses (a sharp corner) would wash everything else out; saturate the top 0.5 % instead.
    top = float(np.percentile(np.abs(a), 99.5))
    return top or float(np.abs(a).max()) or 1.0


def _display(m: np.ndarray) -> tuple[np.ndarray, dict]:
    """How to show a map: signed ones centred on white, non-negative ones on the feature colormap, (C, H, W) as RGB."""
    if m.ndim == 3:  # (C, H, W) per-channel result: show as colour, 0 at mid-gray when it has negatives
        m = m.transpose(1, 2, 0)
        scale = _robust_max(m)
        if m.min() < 0:
            return np.clip(0.5 + m / (2 * scale), 0, 1), {}
        return np.clip(m / max(scale, 1.0), 0, 1), {}  # a blur of a [0, 1] photo stays as bright as the photo
    vmax = _robust_max(m)
    if m.min() < 0:
        return m, {"cmap": CMAP_SIGNED, "vmin": -vmax, "vmax": vmax}
    return m, {"cmap": CMAP, "vmin": 0.0, "vmax": vmax}


def feature_map(fmap: object, ax: Axes | None = None, title: str | None = None, colorbar: bool = True) -> Axes:
    """A feature map (H, W) on a signed or non-negative colormap with a colorbar, or a (3, H, W) map as colour."""
    m = _np(fmap)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim not in (2, 3):
        raise CnnlabError(f"a feature map is (H, W) or (C, H, W), got shape {m.shape}")
    with plot_style():
        ax = single_axes(ax, (PANEL, PANEL))
        shown, kw = _display(m)
        im = ax.imshow(shown, **kw)
        image_axes(ax)
        if colorbar and shown.ndim == 2:
            # An inset colour bar moves with its panel instead of asking the layout for a column of its own.
            ax.figure.colorbar(im, cax=ax.inset_axes((1.03, 0.0, 0.05, 1.0)))
        if title:
            ax.set_title(fit_title(title))
    return ax


def _image_panel(ax: Axes, image: torch.Tensor, title: str) -> None:
    img = _np(image)
    if img.ndim == 3 and img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
    elif img.ndim == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    else:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
    image_axes(ax)
    ax.set_title(fit_title(title))


def _shape_text(t: torch.Tensor) -> str:
    return "x".join(str(v) for v in t.shape[-2:])


def _range_text(t: torch.Tensor) -> str:
    return f"[{t.min().item():.2g}, {t.max().item():.2g}]"


def pipeline_figure(
    image: torch.Tensor,
    kernels: Mapping[str, torch.Tensor],
    channels: str = "summed",
    activation: str = "relu",
    pool_size: int = 2,
    image_title: str = "input",
    ax: Axes | None = None,
) -> Figure:
    """One row per kernel: the kernel, the conv output, after the activation, after max pooling; the input on top."""
    from cnnlab.conv.kernels import conv_activate_pool

    if not kernels:
        raise CnnlabError("give at least one kernel to draw")
    stages = {name: conv_activate_pool(image, k, activation, pool_size, channels) for name, k in kernels.items()}
    rows = len(kernels) + 1
    with plot_style():
        box = canvas(ax, (4 * PANEL + 1.0, rows * PANEL + 0.5))
        grid = box.add_gridspec(rows, 4)
        top = box.add_subplot(grid[0, 0], label="input")
        _image_panel(top, image, f"{image_title} ({_shape_text(image)})")
        note = box.add_subplot(grid[0, 1:], label="legend")
        note.set_axis_off()
        colour = _np(image).ndim == 3 and _np(image).shape[0] == 3
        if not colour:
            how = "on the gray image"
        elif channels == "per_channel":
            how = "on each colour channel alone"
        else:
            how = "on each colour channel, summed, as a conv layer does"
        effect = "keeps the positive responses" if activation == "relu" else "is applied to every value"
        lines = [
            "Each row:",
            "1. a kernel slides over the input (cross-correlation),",
            f"    {how};",
            f"2. {activation} {effect};",
            f"3. {pool_size}x{pool_size} max pooling keeps the largest value of each block.",
            "",
            "Colour maps with negatives: mid-gray = 0." if colour and channels == "per_channel"
            else "Signed maps: red > 0, white = 0, blue < 0.",
            "Colours saturate at the 99.5th percentile; titles give the full range.",
        ]
        note.text(0.0, 0.5, "\n".join(lines), va="center", ha="left", fontsize=10)
        for r, (name, st) in enumerate(stages.items(), start=1):
            kernel = torch.as_tensor(kernels[name])
            shown = kernel if kernel.dim() == 2 else kernel[0]
            kh, kw = shown.shape
            kernel_heatmap(shown, box.add_subplot(grid[r, 0], label=f"kernel:{name}"), f"kernel {name} ({kh}x{kw})")
            feature_map(st.conv, box.add_subplot(grid[r, 1], label=f"conv:{name}"),
                        f"conv: {_shape_text(st.conv)}, {_range_text(st.conv)}")
            feature_map(st.activated, box.add_subplot(grid[r, 2], label=f"act:{name}"),
                        f"{activation}: {_shape_text(st.activated)}, {_range_text(st.activated)}")
            feature_map(st.pooled, box.add_subplot(grid[r, 3], label=f"pool:{name}"),
                        f"{pool_size}x{pool_size} max pool: {_shape_text(st.pooled)}")
        box.suptitle(f"conv \u2192 {activation} \u2192 {pool_size}x{pool_size} max pool")
    return root_figure(box)


def loss_curve(losses: Sequence[float], ax: Axes | None = None, title: str = "training loss") -> Axes:
    """Loss per step on a log scale (gradient descent's progress spans many orders of magnitude)."""
    values = np.asarray(losses, dtype=np.float64)
    with plot_style():
        ax = single_axes(ax, (2 * PANEL, PANEL))
        positive = values[values > 0]
        ax.plot(np.arange(len(values)), np.where(values > 0, values, np.nan))
        if positive.size:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("mean squared error")
        ax.grid(True, alpha=0.3)
        ax.set_title(fit_title(title))
    return ax


def learned_kernel_figure(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    true_kernel: torch.Tensor,
    learned_kernel: torch.Tensor,
    losses: Sequence[float],
    name: str = "kernel",
    ax: Axes | None = None,
) -> Figure:
    """Top: input, target, the learned kernel's output. Bottom: the loss curve, the true and the learned kernel."""
    from cnnlab.conv import conv2d

    x = torch.as_tensor(inputs).float()
    x = x if x.dim() == 2 else x.reshape(-1, *x.shape[-2:])[0]  # the first image when given a batch
    y = torch.as_tensor(targets).float()
    y = y if y.dim() == 2 else y.reshape(-1, *y.shape[-2:])[0]
    learned = torch.as_tensor(learned_kernel).float()
    prediction = conv2d(x[None, None], learned[None, None])[0, 0]
    error = (learned - torch.as_tensor(true_kernel).float()).abs().max().item()
    with plot_style():
        box = canvas(ax, (3 * PANEL + 1.2, 2 * PANEL + 0.6))
        grid = box.add_gridspec(2, 3)
        _image_panel(box.add_subplot(grid[0, 0], label="inputs"), x, f"input ({_shape_text(x)})")
        feature_map(y, box.add_subplot(grid[0, 1], label="targets"), f"target: {name} applied ({_shape_text(y)})")
        feature_map(prediction, box.add_subplot(grid[0, 2], label="prediction"), "learned kernel applied")
        loss_curve(losses, box.add_subplot(grid[1, 0], label="loss"), f"loss: {losses[0]:.2g} -> {losses[-1]:.2g}")
        kernel_heatmap(true_kernel, box.add_subplot(grid[1, 1], label="true"), f"true {name}")
        kernel_heatmap(learned, box.add_subplot(grid[1, 2], label="learned"), f"learned (max error {error:.1e})")
        box.suptitle(f"Learning {name} by gradient descent: {len(losses)} steps")
    return root_figure(box)
