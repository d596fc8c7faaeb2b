"""Images as arrays, image grids and heatmap overlays."""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.viz.style import CMAP_HEAT, COLORS, TILE, canvas, image_axes, plot_style, root_figure


def to_numpy(x: Any) -> np.ndarray:
    """A tensor, PIL image or array-like as a NumPy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc(image: Any) -> np.ndarray:
    """One image, (C, H, W) or (H, W, C) or (H, W), uint8 or float, as float32 (H, W) or (H, W, 3) in [0, 1]."""
    a = to_numpy(image)
    if a.ndim == 3:
        # Tensors are channels-first; an array with 3 or 4 trailing channels (PIL, imageio) is channels-last.
        channels_last = not isinstance(image, torch.Tensor) and a.shape[-1] in (3, 4) and a.shape[0] not in (1, 3)
        if not channels_last:
            if a.shape[0] not in (1, 3):
                raise CnnlabError(f"an image must have 1 or 3 channels, got shape {a.shape}")
            a = a.transpose(1, 2, 0)
        a = a[..., :3]
        if a.shape[-1] == 1:
            a = a[..., 0]
    elif a.ndim != 2:
        raise CnnlabError(f"an image must be (C, H, W), (H, W, C) or (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def to_uint8(image: Any) -> np.ndarray:
    """One image, as `to_hwc` takes it, as uint8 pixels: (H, W) or (H, W, 3)."""
    return (to_hwc(image) * 255 + 0.5).astype(np.uint8)


def upscale(arr: np.ndarray, min_side: int) -> np.ndarray:
    """Each pixel repeated into an integer-sized block so the short side is at least `min_side`: pixels stay crisp
    (a 28x28 input shown at 224x224 is 8x8 blocks, never a blur)."""
    factor = max(1, -(-min_side // min(arr.shape[:2])))
    if factor == 1:
        return arr
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)


def to_image_list(images: Any) -> list[np.ndarray]:
    """A batch (N, C, H, W), a list of images, or one image (C, H, W), as a list of `to_hwc` arrays."""
    if isinstance(images, (list, tuple)):
        return [to_hwc(im) for im in images]
    a = images if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim == 4:
        return [to_hwc(im) for im in a]
    if a.ndim in (2, 3):
        return [to_hwc(images)]
    raise CnnlabError(f"images must be a batch (N, C, H, W), got shape {tuple(a.shape)}")


def resize_map(heatmap: Any, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized bilinearly to (H, W)."""
    m = torch.as_tensor(to_numpy(heatmap), dtype=torch.float32)
    if m.dim() != 2:
        raise CnnlabError(f"a heatmap must be (H, W), got shape {tuple(m.shape)}")
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.numpy()


def overlay_heatmap(image: Any, heatmap: Any, alpha: float = 0.5, cmap: str = CMAP_HEAT) -> np.ndarray:
    """Blend a [0, 1] heatmap (resized to the image) over the image: (H, W, 3) uint8."""
    img = to_hwc(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    heat = np.clip(resize_map(heatmap, img.shape[:2]), 0.0, 1.0)
    colors = matplotlib.colormaps[cmap](heat)[..., :3]
    out = (1.0 - alpha) * img + alpha * colors
    return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)


def draw_image(ax: Axes, image: np.ndarray, title: str | None = None, color: str | None = None) -> Axes:
    """Show one `to_hwc` image in `ax`: gray images on a fixed 0..1 gray scale, no ticks."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image)
    image_axes(ax)
    if title:
        ax.set_title(title, fontsize=8, color=color or COLORS["text"])
    return ax


def label_text(label: Any, class_names: Sequence[str] | None) -> str:
    """A label as text: its class name when names are given and the label is an index."""
    if isinstance(label, torch.Tensor):
        label = label.item()
    if isinstance(label, (np.integer,)):
        label = int(label)
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    """(rows, cols) for n tiles, at most ncols wide."""
    cols = max(1, min(ncols, n))
    return max(1, math.ceil(n / cols)), cols


def show_images(
    images: Any,
    labels: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A grid of images, each titled with its label (class names when given)."""
    tiles = to_image_list(images)
    if not tiles:
        raise CnnlabError("show_images got no images")
    if labels is not None and len(labels) != len(tiles):
        raise CnnlabError(f"got {len(labels)} labels for {len(tiles)} images")
    rows, cols = grid_shape(len(tiles), ncols)
    extra = 0.25 if labels is not None else 0.0
    size = figsize or (cols * TILE, rows * (TILE + extra) + (0.4 if title else 0.0))
    with plot_style():
        box = canvas(ax, size)
        axes = box.subplots(rows, cols, squeeze=False)
        for i, a in enumerate(axes.flat):
            if i < len(tiles):
                draw_image(a, tiles[i], label_text(labels[i], class_names) if labels is not None else None)
            else:
                a.set_axis_off()
        if title:
            box.suptitle(title)
    return root_figure(box)
