"""How training went: loss and accuracy curves, and the confusion matrix."""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, MultipleLocator, PercentFormatter

from cnnlab.errors import CnnlabError
from cnnlab.viz.images import to_numpy
from cnnlab.viz.style import CMAP_COUNTS, COLORS, canvas, new_figure, plot_style, root_figure, single_axes


def _series(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """One column of the history; a missing or None value is NaN, so matplotlib leaves a gap."""
    return np.array([math.nan if h.get(key) is None else float(h[key]) for h in history])


def best_epoch_index(history: Sequence[dict[str, Any]]) -> int | None:
    """Index of the epoch training kept as best: highest validation accuracy (train accuracy without validation),
    on a tie the lower loss, then the earlier epoch: the rule of the training loop."""
    for split in ("val", "train"):
        acc, loss = _series(history, f"{split}_acc"), _series(history, f"{split}_loss")
        if not np.all(np.isnan(acc)):
            ranked = [(-a, np.inf if np.isnan(lo) else lo, i) for i, (a, lo) in enumerate(zip(acc, loss))
                      if not np.isnan(a)]
            return min(ranked)[2]
    return None


def step_curve(history: Sequence[dict[str, Any]]) -> np.ndarray:
    """The training loss every few steps over all epochs, as (n, 2) rows of [fractional epoch, loss] (n may be 0)."""
    points = [p for h in history for p in (h.get("train_loss_curve") or [])]
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def plot_curves(
    history: Sequence[dict[str, Any]],
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    best_epoch: int | None = None,
) -> Figure:
    """Loss and accuracy per epoch, train against validation, with the best epoch (the kept checkpoint) marked;
    the training loss every few steps too when the history has it, with the epochs' ends marked.

    The best epoch is the one with the highest validation accuracy (what `best.pt` holds), or `best_epoch` when
    given; both panels mark that same epoch, so the loss panel does not point at a different "best".
    """
    if not history:
        raise CnnlabError("plot_curves got an empty history: train for at least one epoch")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    marker = "o" if len(history) <= 30 else None  # single epochs stay visible as dots
    best = epochs.index(best_epoch) if best_epoch in epochs else best_epoch_index(history)
    has_val = not np.all(np.isnan(_series(history, "val_acc")))
    steps = step_curve(history)
    with plot_style():
        box = canvas(ax, figsize or (8.0, 3.2))
        axes = box.subplots(1, 2)
        for a, metric, label in zip(axes, ("loss", "acc"), ("loss", "accuracy")):
            train, val = _series(history, f"train_{metric}"), _series(history, f"val_{metric}")
            if len(steps):
                _epoch_axis(a, steps, epochs)
            if metric == "loss" and len(steps):
                a.plot(steps[:, 0], steps[:, 1], lw=1, color=COLORS["train"], alpha=0.8, label="train, every few steps")
                a.plot(epochs, train, "o", ms=3, color=COLORS["train"], label="train, epoch mean")
            elif not np.all(np.isnan(train)):
                a.plot(epochs, train, marker=marker, ms=3, color=COLORS["train"], label="train")
            if not np.all(np.isnan(val)):
                a.plot(epochs, val, marker=marker, ms=3, color=COLORS["val"], label="validation")
            if best is not None:
                # The checkpoint kept: chosen by validation accuracy (train accuracy when there is no validation).
                series, color = (val, COLORS["val"]) if has_val else (train, COLORS["train"])
                a.axvline(epochs[best], color="#888888", lw=0.8, ls=":")
                if not np.isnan(series[best]):
                    a.plot([epochs[best]], [series[best]], "*", ms=10, color=color,
                           label=f"best epoch {epochs[best]} (kept)")
            values = np.concatenate([train, val])
            if metric == "acc" and np.nanmax(np.append(values, 0)) <= 1.0:
                a.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
            a.set_xlabel("epoch")
            a.set_ylabel(label)
            a.set_title(label)
            one = len(steps) and max(epochs) <= 1  # one epoch drawn step by step: quarters of it
            a.xaxis.set_major_locator(MultipleLocator(0.25) if one else MaxNLocator(integer=True))
            a.grid(True)
            if a.get_legend_handles_labels()[0]:
                a.legend()
        if title:
            box.suptitle(title)
    return root_figure(box)


def plot_runs(
    histories: dict[str, Sequence[dict[str, Any]]],
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Several runs' curves overlaid, one colour per run: loss and accuracy per epoch, validation solid and
    training dashed (a run without validation: training solid)."""
    if not any(histories.values()):
        raise CnnlabError("plot_runs got no epochs to draw: the runs have not finished an epoch yet")
    colours = matplotlib.colormaps["tab10"].colors
    with plot_style():
        fig = new_figure(figsize or (9.0, 3.6))
        axes = fig.subplots(1, 2)
        for a, metric, label in zip(axes, ("loss", "acc"), ("loss", "accuracy")):
            top = 0.0
            for i, (name, history) in enumerate(histories.items()):
                colour = colours[i % len(colours)]
                epochs = [h.get("epoch", k + 1) for k, h in enumerate(history)]
                train, val = _series(history, f"train_{metric}"), _series(history, f"val_{metric}")
                has_val = not np.all(np.isnan(val))
                marker = "o" if len(history) <= 30 else None
                if has_val:
                    a.plot(epochs, val, marker=marker, ms=3, color=colour, label=f"{name}, validation")
                if not np.all(np.isnan(train)):
                    a.plot(epochs, train, ls="--" if has_val else "-", marker=None if has_val else marker, ms=3,
                           color=colour, alpha=0.8 if has_val else 1.0, label=f"{name}, train")
                top = max(top, np.nanmax(np.append(np.concatenate([train, val]), 0)))
            if metric == "acc" and top <= 1.0:
                a.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
            a.set_xlabel("epoch")
            a.set_ylabel(label)
            a.set_title(label)
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.grid(True)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)))
        if title:
            fig.suptitle(title)
    return fig


def _epoch_axis(a: Axes, steps: np.ndarray, epochs: Sequence[int]) -> None:
    """An axis from the first step to the last epoch (and a little room for its markers), each epoch's end marked with
    a faint line."""
    right = max(epochs[-1], steps[-1, 0])
    a.set_xlim(min(0.0, steps[0, 0]), right + 0.03 * right)
    for e in epochs:
        a.axvline(e, color="#dddddd", lw=0.6, zorder=0)


def plot_confusion(
    cm: Any,
    class_names: Sequence[str] | None = None,
    normalize: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Rows = true class, columns = predicted; counts (or row fractions) written in the cells when K <= 20."""
    counts = to_numpy(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise CnnlabError(f"a confusion matrix must be square (K, K), got shape {counts.shape}")
    k = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise CnnlabError(f"got {len(names)} class names for a {k}x{k} confusion matrix")
    counts = counts.astype(np.float64)
    total = counts.sum()
    if normalize:
        # Each row divided by its true-class count: the diagonal is each class's recall.
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        vmax = 1.0
    else:
        values = counts
        vmax = max(values.max(), 1.0)
    side = max(4.0, 0.45 * k + 2.2)
    with plot_style():
        a = single_axes(ax, figsize or (side + 0.8, side))
        im = a.imshow(values, cmap=CMAP_COUNTS, vmin=0.0, vmax=vmax)
        fmt = PercentFormatter(1.0) if normalize else None
        a.get_figure().colorbar(im, ax=a, fraction=0.046, pad=0.04, format=fmt)
        a.set_xticks(range(k), names, rotation=45 if k > 4 or max(map(len, names)) > 4 else 0, ha="right")
        a.set_yticks(range(k), names)
        a.set_xlabel("predicted")
        a.set_ylabel("true")
        for spine in a.spines.values():
            spine.set_visible(False)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                    color = "white" if v > 0.5 * vmax else COLORS["text"]
                    a.text(j, i, text, ha="center", va="center", fontsize=8 if k <= 10 else 6, color=color)
        accuracy = np.trace(counts) / total if total else 0.0
        kind = "normalized by true class" if normalize else "counts"
        a.set_title(title or f"confusion matrix ({kind}); accuracy {accuracy:.1%}")
    return root_figure(a.get_figure())
