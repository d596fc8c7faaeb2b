"""What a classifier said about images: top-k bars, a gallery of mistakes, an explanation panel."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.viz.images import (
    draw_image,
    grid_shape,
    label_text,
    overlay_heatmap,
    resize_map,
    to_hwc,
    to_image_list,
    to_numpy,
)
from cnnlab.viz.style import CMAP, COLORS, TILE, canvas, image_axes, plot_style, root_figure


def as_probs(probs: Any, class_names: Sequence[str] | None) -> np.ndarray:
    """A (K,) probability vector; one probability with two class names becomes [1 - p, p]."""
    p = to_numpy(probs).astype(np.float64).reshape(-1)
    if p.size == 0:
        raise CnnlabError("got an empty probability vector")
    if np.any(p < -1e-6) or np.any(p > 1 + 1e-6):
        raise CnnlabError("probs must be probabilities in [0, 1] (apply softmax, or sigmoid for one logit)")
    if p.size == 1 and class_names is not None and len(class_names) == 2:
        p = np.array([1.0 - p[0], p[0]])  # a single-logit model gives P(class 1)
    if class_names is not None and len(class_names) != p.size:
        raise CnnlabError(f"got {len(class_names)} class names for {p.size} probabilities")
    return p


def draw_topk(ax: Axes, probs: np.ndarray, class_names: Sequence[str] | None, topk: int = 5) -> Axes:
    """Horizontal bars of the k most probable classes, the most probable on top, with percentages."""
    k = max(1, min(topk, probs.size))
    order = np.argsort(-probs, kind="stable")[:k]
    names = [label_text(int(i), class_names) for i in order]
    y = np.arange(k)[::-1]  # first (most probable) at the top
    colors = [COLORS["top"]] + [COLORS["bar"]] * (k - 1)
    ax.barh(y, probs[order], color=colors, height=0.7)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.15)  # room for the percentage after a full bar
    ax.set_xticks([0, 0.5, 1.0], ["0%", "50%", "100%"])
    for yi, p in zip(y, probs[order]):
        ax.text(p + 0.02, yi, f"{p:.0%}", va="center", fontsize=8)
    ax.set_title(f"top-{k}")
    return ax


def plot_predictions(
    image: Any,
    probs: Any,
    class_names: Sequence[str] | None,
    topk: int = 5,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The image beside horizontal bars of its top-k class probabilities."""
    p = as_probs(probs, class_names)
    img = to_hwc(image)
    k = max(1, min(topk, p.size))
    size = figsize or (2 * TILE + 2.6, max(TILE + 0.6, 0.3 * k + 0.8))
    with plot_style():
        box = canvas(ax, size)
        left, right = box.subplots(1, 2, width_ratios=[1, 1.3])
        best = int(np.argmax(p))
        draw_image(left, img, f"pred: {label_text(best, class_names)} ({p[best]:.0%})")
        draw_topk(right, p, class_names, topk)
        if title:
            box.suptitle(title)
    return root_figure(box)


def mistake_title(true: Any, pred: Any, confidence: float, class_names: Sequence[str] | None) -> str:
    """'true: X / pred: Y (87%)'."""
    return f"true: {label_text(true, class_names)} / pred: {label_text(pred, class_names)} ({float(confidence):.0%})"


def plot_mistakes(
    images: Any,
    true: Sequence[Any],
    pred: Sequence[Any],
    confidence: Sequence[float],
    class_names: Sequence[str] | None,
    heatmaps: Any = None,
    ncols: int = 6,
    ax: Axes | None = None,
    title: str | None = None,
    alpha: float = 0.45,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Misclassified images, each titled 'true: X / pred: Y (87%)', with Grad-CAM heatmaps overlaid if given."""
    tiles = to_image_list(images) if len(true) else []
    conf = to_numpy(confidence).reshape(-1) if len(true) else np.zeros(0)
    if not (len(tiles) == len(true) == len(pred) == conf.size):
        raise CnnlabError(
            f"plot_mistakes needs one true label, prediction and confidence per image: got {len(tiles)} images, "
            f"{len(true)} true, {len(pred)} pred, {conf.size} confidences"
        )
    maps = list(heatmaps) if heatmaps is not None and len(tiles) else None
    if maps is not None and len(maps) != len(tiles):
        raise CnnlabError(f"got {len(maps)} heatmaps for {len(tiles)} images")
    tile_w = 2.1  # wide enough for the 'true / pred' title
    if not tiles:
        with plot_style():
            box = canvas(ax, figsize or (4, 1.5))
            a = image_axes(box.add_subplot())
            a.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=12, color=COLORS["right"])
            if title:
                box.suptitle(title)
        return root_figure(box)
    rows, cols = grid_shape(len(tiles), ncols)
    size = figsize or (cols * tile_w, rows * (tile_w + 0.25) + (0.4 if title else 0.0))
    with plot_style():
        box = canvas(ax, size)
        axes = box.subplots(rows, cols, squeeze=False)
        for i, a in enumerate(axes.flat):
            if i >= len(tiles):
                a.set_axis_off()
                continue
            img = overlay_heatmap(tiles[i], maps[i], alpha) if maps is not None else tiles[i]
            img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
            draw_image(a, img, mistake_title(true[i], pred[i], conf[i], class_names), COLORS["wrong"])
        if title:
            box.suptitle(title)
    return root_figure(box)


def plot_explanation(
    image: Any,
    heatmap: Any = None,
    saliency_map: Any = None,
    probs: Any = None,
    class_names: Sequence[str] | None = None,
    topk: int = 5,
    target_name: str | None = None,
    layer_name: str | None = None,
    alpha: float = 0.5,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Side by side: the input, its Grad-CAM overlay, its saliency map and the top-k bars (those given)."""
    img = to_hwc(image)
    p = as_probs(probs, class_names) if probs is not None else None
    panels = ["input"]
    panels += ["cam"] if heatmap is not None else []
    panels += ["saliency"] if saliency_map is not None else []
    ncols = len(panels) + (1 if p is not None else 0)
    size = figsize or (TILE * 1.6 * len(panels) + (3.0 if p is not None else 0.0), TILE * 1.6 + 0.5)
    about = f" for {target_name}" if target_name else ""
    with plot_style():
        box = canvas(ax, size)
        ratios = [1.0] * len(panels) + ([1.3] if p is not None else [])
        axes = box.subplots(1, ncols, width_ratios=ratios, squeeze=False)[0]
        for a, panel in zip(axes, panels):
            if panel == "input":
                draw_image(a, img, "input")
            elif panel == "cam":
                where = f" at {layer_name}" if layer_name else ""
                overlay = overlay_heatmap(img, heatmap, alpha).astype(np.float32) / 255.0
                draw_image(a, overlay, f"Grad-CAM{where}{about}")
            else:
                a.imshow(resize_map(saliency_map, img.shape[:2]), cmap=CMAP, vmin=0.0, vmax=1.0)
                image_axes(a).set_title(f"saliency{about}", fontsize=8)
        if p is not None:
            draw_topk(axes[-1], p, class_names, topk)
        if title:
            box.suptitle(title)
    return root_figure(box)
