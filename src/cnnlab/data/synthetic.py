"""Generated datasets that isolate one property of images: `colour_shapes`, where colour decides half the class.

Its colours share one brightness: each shape's colour is gray at a random luma plus a hue that adds no luma, so
converting the images to gray (luma, as the pipeline does) keeps every shape and erases exactly the colour.
"""

from __future__ import annotations

import torch

from cnnlab.data.dataset import ImageData
from cnnlab.data.info import DatasetInfo
from cnnlab.data.pipeline import LUMA
from cnnlab.errors import CnnlabError

HUES = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
SHAPES = ("disc", "square")
CHROMA = 0.5  # how far from gray each colour is, at a luma in SHAPE_LUMA: every channel stays inside [0, 1]
SHAPE_LUMA = (0.40, 0.55)
BACKGROUND_LUMA = (0.05, 0.20)
NOISE = 0.04  # per pixel and channel


def colour_classes() -> tuple[str, ...]:
    """'red_disc', 'red_square', 'green_disc', ...: every colour with every shape."""
    return tuple(f"{c}_{s}" for c in HUES for s in SHAPES)


def isoluminant(hue: str, luma: torch.Tensor) -> torch.Tensor:
    """RGB colours (N, 3) of the hue at these lumas: gray at `luma` plus CHROMA times the hue minus its own luma."""
    rgb = torch.tensor(HUES[hue])
    w = torch.tensor(LUMA)
    chroma = rgb - (rgb * w).sum()  # luma 0: w sums to 1
    return luma[:, None] + CHROMA * chroma[None, :]


def colour_shapes(per_class: int, size: int = 32, seed: int = 0, split: str = "train") -> ImageData:
    """`per_class` images of each class (a red, green or blue disc or square on a dark noisy background), size x
    size, uint8 RGB; the same seed gives the same images. Use another seed for a test split."""
    if per_class < 1 or size < 16:
        raise CnnlabError(f"colour_shapes needs per_class >= 1 and size >= 16, got {per_class} and {size}")
    g = torch.Generator().manual_seed(seed)
    classes = colour_classes()
    n = per_class * len(classes)
    targets = torch.arange(len(classes)).repeat_interleave(per_class)
    targets = targets[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    background = _uniform(n, BACKGROUND_LUMA, g)[:, None, None, None].expand(n, 3, size, size)
    images = background + NOISE * torch.randn(n, 3, size, size, generator=g)
    half = _uniform(n, (size * 0.13, size * 0.28), g)  # a disc's radius, a square's half side
    cy, cx = (_uniform(n, (0.0, 1.0), g) * (size - 2 * half) + half for _ in range(2))
    luma = _uniform(n, SHAPE_LUMA, g)
    for t, name in enumerate(classes):
        hue, shape = name.split("_")
        rows = (targets == t).nonzero().flatten()
        dy, dx = yy[None] - cy[rows, None, None], xx[None] - cx[rows, None, None]
        r = half[rows, None, None]
        inside = dy.square() + dx.square() <= r.square() if shape == "disc" else (dy.abs() <= r) & (dx.abs() <= r)
        colour = isoluminant(hue, luma[rows])[:, :, None, None]
        images[rows] = torch.where(inside[:, None], colour + NOISE * torch.randn(len(rows), 3, size, size,
                                                                                    generator=g), images[rows])
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    info = DatasetInfo("colour-shapes", classes, 3, (size, size), (0.5,) * 3, (0.25,) * 3,
                       "generated: a red, green or blue disc or square; its colours share one brightness",
                       "cnnlab.data.synthetic.colour_shapes", {split: n}, flip_ok=True, dark_background=True)
    return ImageData(pixels, targets, info, split)


def _uniform(n: int, bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=g)
