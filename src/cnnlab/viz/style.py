"""One look for every cnnlab plot (fonts, colormaps, layout) and figures that need no display (Agg)."""

from __future__ import annotations

import base64
import io
import os
import sys
import threading
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, FigureBase

from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_path

DPI = 100
FIGURES_DIR = Path("cnnlab-figures")  # where the commands put pictures that belong to no run, when no --out is given
TILE = 1.5  # inches per image tile
CMAP = "viridis"  # non-negative maps: saliency, feature maps
CMAP_SIGNED = "RdBu_r"  # signed values (filters, conv outputs): zero is white, negative blue, positive red
CMAP_HEAT = "jet"  # Grad-CAM overlays, the convention of the paper and its tools
CMAP_COUNTS = "Blues"  # confusion matrices
COLORS = {
    "train": "#1f77b4",
    "val": "#d62728",
    "bar": "#9ecae1",
    "top": "#1f77b4",
    "right": "#2ca02c",
    "wrong": "#b2182b",
    "text": "#222222",
}

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same look on every machine
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "image.cmap": CMAP,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

# rcParams are global: the lock keeps two threads from restyling each other's figures mid-build.
_LOCK = threading.RLock()


class plot_style:
    """`with plot_style():` builds artists in the cnnlab style; the caller's rcParams come back after."""

    def __enter__(self) -> "plot_style":
        _LOCK.acquire()
        self._rc = matplotlib.rc_context(RC)
        self._rc.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._rc.__exit__(*exc)
        finally:
            _LOCK.release()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure with constrained layout on an Agg canvas: no pyplot, no display, safe in threads."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def canvas(ax: Axes | None, figsize: tuple[float, float]) -> FigureBase:
    """Where a multi-panel plot draws: a new figure, or a sub-figure taking the place of the caller's `ax`."""
    if ax is None:
        return new_figure(figsize)
    spec = ax.get_subplotspec()
    if spec is None:
        raise CnnlabError("ax must be a grid subplot (from fig.add_subplot or fig.subplots) to hold this plot")
    parent = ax.get_figure()
    ax.remove()
    return parent.add_subfigure(spec)


def single_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """The caller's `ax`, or the one axes of a new figure."""
    return ax if ax is not None else new_figure(figsize).add_subplot()


def root_figure(fig: FigureBase) -> Figure:
    """The top-level Figure of a figure or sub-figure."""
    while getattr(fig, "figure", fig) is not fig:
        fig = fig.figure
    return fig


def image_axes(ax: Axes) -> Axes:
    """Strip ticks and frame from an axes that shows an image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def figure_png(fig: FigureBase, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (for embedding in HTML or sending over HTTP)."""
    buf = io.BytesIO()
    root_figure(fig).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a data: URI, for an <img src> in a page or a notebook."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_figure(fig: FigureBase, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write the figure (format from the suffix, PNG by default) atomically, close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower() or "png"
    root = root_figure(fig)
    # Write next to the target and rename: a reader (the web app, a report) never sees half a file.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            root.savefig(f, format=fmt, dpi=dpi)
    close_figure(root)
    return path


def close_figure(fig: FigureBase) -> None:
    """Release a figure: drop it from pyplot's registry when pyplot made it; the garbage collector does the rest.

    No `clear()`: resetting every axes costs about as much as drawing them (seconds for a feature-map grid).
    """
    root = root_figure(fig)
    pyplot = sys.modules.get("matplotlib.pyplot")  # imported only if the caller already uses pyplot
    if pyplot is not None:
        pyplot.close(root)
