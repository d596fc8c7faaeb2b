"""The sliding window drawn: one output of a cross-correlation (the window, the kernel, the output so far), a row of
input cells with every window of a layer over it (the output-size formula as a picture), receptive fields on an image."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cnnlab.errors import CnnlabError
from cnnlab.viz.conv import _cell_text, _image_panel, _np, kernel_heatmap
from cnnlab.viz.style import CMAP_SIGNED, canvas, image_axes, plot_style, root_figure

WINDOW = "#ff7f0e"  # the window, the current output and the receptive fields: one accent colour
PADDING = "#e8e8e8"
DROPPED = "#d62728"
MAX_NUMBERED = 12  # grids wider than this are drawn without their numbers


def _grid(ax: Axes, values: np.ndarray, shade: np.ndarray | None = None, hide: np.ndarray | None = None) -> None:
    """A matrix as cells with their numbers; `shade` marks padding cells, `hide` cells not computed yet."""
    h, w = values.shape
    shown = np.where(hide, np.nan, values) if hide is not None else values
    vmax = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    ax.imshow(shown, cmap=CMAP_SIGNED, vmin=-(vmax or 1.0), vmax=vmax or 1.0, alpha=0.35)
    integers = bool(np.allclose(values, np.round(values), atol=1e-6))
    for (r, c), v in np.ndenumerate(values):
        if shade is not None and shade[r, c]:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color=PADDING, zorder=1))
        if (hide is None or not hide[r, c]) and max(h, w) <= MAX_NUMBERED:
            ax.text(c, r, _cell_text(float(v), integers, True), ha="center", va="center", fontsize=9, zorder=3)
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)


def _outline(ax: Axes, row: int, col: int, h: int, w: int, dilation: int = 1) -> None:
    """The window of an h x w kernel at (row, col): one frame, or a frame per tap when the kernel is dilated."""
    if dilation == 1:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), w, h, fill=False, edgecolor=WINDOW, linewidth=3, zorder=4))
        return
    for a in range(h):
        for b in range(w):
            ax.add_patch(Rectangle((col + b * dilation - 0.5, row + a * dilation - 0.5), 1, 1, fill=False,
                                   edgecolor=WINDOW, linewidth=2.5, zorder=4))


def sliding_window_figure(x: torch.Tensor, k: torch.Tensor, step, y: torch.Tensor, ax: Axes | None = None) -> Figure:
    """Y[i, j] of `step` (a CorrStep): the (padded) input with the window's taps outlined, the kernel, the output
    with the values up to (i, j) filled in and (i, j) outlined, and the multiply-and-sum written out below."""
    xv, kv, yv = _np(x), _np(k), _np(y)
    p, d = step.padding, step.dilation
    xp = np.pad(xv, p) if p else xv
    shade = np.pad(np.zeros_like(xv, dtype=bool), p, constant_values=True) if p else None
    order = np.arange(yv.size).reshape(yv.shape)
    hide = order > step.i * yv.shape[1] + step.j
    with plot_style():
        box = canvas(ax, (9.0, 4.2))
        grid = box.add_gridspec(2, 3, height_ratios=(4, 1), width_ratios=(xp.shape[1], kv.shape[1] + 1,
                                                                           yv.shape[1] + 1))
        a_x = box.add_subplot(grid[0, 0], label="input")
        _grid(a_x, xp, shade)
        kh, kw = kv.shape
        _outline(a_x, step.row, step.col, kh, kw, d)
        a_x.set_title(f"X{' padded by ' + str(p) if p else ''}: the window at ({step.row}, {step.col})")
        kernel_heatmap(kv, box.add_subplot(grid[0, 1], label="kernel"), "K")
        a_y = box.add_subplot(grid[0, 2], label="output")
        _grid(a_y, yv, hide=hide)
        _outline(a_y, step.i, step.j, 1, 1)
        a_y.set_title(f"Y: {yv.shape[0]}x{yv.shape[1]}, stride {step.stride}")
        text = box.add_subplot(grid[1, :], label="sum")
        text.set_axis_off()
        text.text(0.0, 0.5, str(step), family="monospace", fontsize=8, va="center", ha="left")
    return root_figure(box)


def window_starts(n: int, kernel: int, padding: int, stride: int, dilation: int) -> list[int]:
    """Where each window starts in the padded input (0 = the first padding cell)."""
    span = dilation * (kernel - 1) + 1
    return list(range(0, n + 2 * padding - span + 1, stride))


def output_size_figure(n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1,
                       ax: Axes | None = None) -> Figure:
    """One row of the padded input (padding gray), every window of the layer above it (dots at the kernel's taps),
    the cells no window reaches in red (what the floor drops), and the output row below: the formula as a picture."""
    from cnnlab.conv.sizes import output_size

    out = output_size(n, kernel, padding, stride, dilation)  # refuses a kernel that does not fit, in one line
    num = n + 2 * padding - dilation * (kernel - 1) - 1
    worked = (f"out = floor(({n} + 2*{padding} - {dilation}*({kernel}-1) - 1) / {stride}) + 1 = "
              f"floor({num} / {stride}) + 1 = {out}")
    total = n + 2 * padding
    starts = window_starts(n, kernel, padding, stride, dilation)
    reach = max(starts) + dilation * (kernel - 1)
    with plot_style():
        box = canvas(ax, (max(6.0, 0.28 * total + 4.0), 1.2 + 0.22 * len(starts) + 0.9))
        a = box.add_subplot(label="windows")
        rows = len(starts)
        for c in range(total):
            pad = c < padding or c >= padding + n
            color = PADDING if pad else ("#fbe3e3" if c > reach else "white")
            a.add_patch(Rectangle((c, 0), 1, 1, facecolor=color, edgecolor="#888888", linewidth=0.6))
        for r, s in enumerate(starts):
            y = 1.4 + 0.5 * r
            taps = [s + t * dilation + 0.5 for t in range(kernel)]
            a.plot([taps[0], taps[-1]], [y, y], color=WINDOW, linewidth=1.5)
            a.scatter(taps, [y] * kernel, color=WINDOW, s=12, zorder=3)
            a.text(taps[0] - 0.4, y, str(r), ha="right", va="center", fontsize=7)
        for c in range(len(starts)):
            a.add_patch(Rectangle((c, -1.8), 1, 1, facecolor="#fff0dd", edgecolor=WINDOW, linewidth=0.8))
        a.text(-0.3, 0.5, "input", ha="right", va="center", fontsize=8)
        a.text(-0.3, -1.3, "output", ha="right", va="center", fontsize=8)
        a.set_xlim(-2.5, total + 0.5)
        a.set_ylim(-2.2, 1.9 + 0.5 * rows)
        image_axes(a)
        dropped = total - 1 - reach
        note = f"; {dropped} cell(s) no window reaches (red)" if dropped else ""
        a.set_title(f"n = {n}, k = {kernel}, p = {padding}, s = {stride}, d = {dilation}: {out} windows, "
                    f"so {out} outputs{note}")
        box.text(0.01, 0.0, worked, fontsize=8, family="monospace", ha="left", va="bottom")
    return root_figure(box)


def receptive_field_figure(image: torch.Tensor, fields: Sequence, index: int | None = None,
                           ax: Axes | None = None, title: str | None = None) -> Figure:
    """The image with the receptive field of one unit of each layer outlined (the middle unit unless `index` is
    given), clipped to the image; `fields` are ReceptiveFields with their output sizes."""
    img = _np(image)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise CnnlabError(f"the image must be (H, W) or (C, H, W), got shape {img.shape}")
    n = img.shape[-1]
    with plot_style():
        box = canvas(ax, (4.6, 4.0))
        a = box.add_subplot(label="image")
        _image_panel(a, torch.as_tensor(img), title or f"receptive fields on a {img.shape[1]}x{n} input")
        colours = [WINDOW, "#2ca02c", "#1f77b4", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf"]
        for f, colour in zip(fields, colours * 4):
            if f.out is None:
                raise CnnlabError("receptive_field_figure needs the fields' output sizes: pass n to receptive_fields")
            unit = (f.out - 1) // 2 if index is None else min(index, f.out - 1)
            start, stop = f.span(unit, n)
            a.add_patch(Rectangle((start - 0.5, start - 0.5), stop - start, stop - start, fill=False,
                                  edgecolor=colour, linewidth=2, label=f"{f.name}: {f.size}x{f.size}"))
        a.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return root_figure(box)
