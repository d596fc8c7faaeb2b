"""A grid of sample images per class, to see what a dataset looks like."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from cnnlab.data.dataset import take


def plot_class_samples(data, per_class: int = 8, max_classes: int = 20, seed: int = 0) -> Figure:
    """Rows of `per_class` random images for each class (up to `max_classes`), class names on the left."""
    classes = data.classes[:max_classes]
    g = torch.Generator().manual_seed(seed)
    fig = Figure(figsize=(per_class * 0.9 + 1.6, len(classes) * 0.9 + 0.4), dpi=100)
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for row, name in enumerate(classes):
        idx = torch.nonzero(data.targets == row).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        for col in range(per_class):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(idx):
                img = _image(data, int(idx[col])).numpy()
                gray = img.shape[-1] == 1
                ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255)
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{data.info.name} ({data.split}): {len(data)} images", fontsize=10)
    fig.subplots_adjust(left=0.16, right=0.99, bottom=0.01, top=0.95, wspace=0.05, hspace=0.05)
    return fig


def _image(data, i: int) -> torch.Tensor:
    """(H, W, C) uint8 of item i, from memory or decoded from disk (black if its file no longer decodes)."""
    images, _ = take(data, [i])
    return (images[0] if len(images) else torch.zeros(data.info.channels, 8, 8, dtype=torch.uint8)).permute(1, 2, 0)


def plot_augmented(originals: torch.Tensor, augmented: list[torch.Tensor], labels: list[str], title: str) -> Figure:
    """Each original (top row, float (N, C, H, W) in [0, 1]) above its augmented versions: what training sees."""
    n, rows = len(originals), 1 + len(augmented)
    fig = Figure(figsize=(n * 0.9 + 1.6, rows * 0.9 + 0.3 + 0.2 * (title.count("\n") + 1)), dpi=100)
    axes = fig.subplots(rows, n, squeeze=False)
    for r, batch in enumerate([originals, *augmented]):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = batch[c].permute(1, 2, 0).clamp(0, 1).numpy()
            gray = img.shape[-1] == 1
            ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(labels[c], fontsize=7)
        axes[r][0].set_ylabel("original" if r == 0 else f"draw {r}", rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.99, bottom=0.01, top=1 - (0.25 + 0.2 * title.count("\n")) / fig.get_figheight(),
                        wspace=0.05, hspace=0.05)
    return fig
