"""Pictures for the browser: uint8 pixels as PNG data URLs (viz.images makes them and scales them up), and feature
maps on one colour scale per layer."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cnnlab.viz.images import to_uint8
from cnnlab.viz.style import png_data_uri


def png_data_url(arr: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3) array as 'data:image/png;base64,...', ready for an <img src>."""
    buf = io.BytesIO()
    # compress_level 1: these PNGs are made per request, so encoding speed matters more than a few bytes.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return png_data_uri(buf.getvalue())


def map_to_uint8(fmap: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """One feature map (H, W) scaled to its own range (black = its minimum, white = its maximum), with that range."""
    m = fmap.detach().float().cpu()
    lo, hi = float(m.min()), float(m.max())
    scaled = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
    return to_uint8(scaled.numpy()), lo, hi


# ---------------------------------------------------------------- feature maps on one colour scale per layer

# Zero is near-white, positive values red, negative values blue (a diverging scale, as CNN Explainer's).
NEGATIVE, ZERO, POSITIVE = np.array((33, 102, 172)), np.array((247, 247, 247)), np.array((178, 24, 43))


@dataclass(frozen=True)
class ColourScale:
    """The values at the two ends of a layer's scale; zero is white, so a scale never crosses zero unevenly."""

    low: float
    high: float

    @classmethod
    def of(cls, lo: float, hi: float) -> "ColourScale":
        """Symmetric around 0 for signed values; from 0 for values of one sign (after a ReLU)."""
        if lo < 0 < hi:
            m = max(-lo, hi)
            return cls(-m, m)
        if lo >= 0:
            return cls(0.0, hi if hi > 0 else 1.0)
        return cls(lo, 0.0)

    def colours(self, values: np.ndarray) -> np.ndarray:
        """(..., 3) uint8 colours of values on this scale."""
        v = np.clip(values, self.low, self.high)
        pos = np.where(v > 0, v / (self.high if self.high > 0 else 1.0), 0.0)[..., None]
        neg = np.where(v < 0, v / (self.low if self.low < 0 else -1.0), 0.0)[..., None]
        out = ZERO + pos * (POSITIVE - ZERO) + neg * (NEGATIVE - ZERO)
        return (out + 0.5).astype(np.uint8)

    def palette(self) -> bytes:
        """256 colours for index k = the value low + k/255 * (high - low)."""
        return self.colours(np.linspace(self.low, self.high, 256)).tobytes()

    def to_dict(self) -> dict:
        """For the legend: the ends and five colours evenly between them."""
        stops = self.colours(np.linspace(self.low, self.high, 5))
        return {"low": self.low, "high": self.high, "colours": ["#%02x%02x%02x" % tuple(c) for c in stops],
                "about": "white = 0, red = positive, blue = negative; one scale for every map of the layer"}


def sprite_png(maps: torch.Tensor, scale: ColourScale) -> tuple[str, int]:
    """Maps (N, H, W) on one scale as one palette PNG, a grid of `columns` maps per row (row-major, no gaps), and
    `columns`: one image and one palette per layer instead of one per map (a palette alone is 768 bytes)."""
    n, h, w = maps.shape
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    m = maps.detach().float().cpu().numpy()
    idx = np.clip(np.rint((m - scale.low) / (scale.high - scale.low) * 255), 0, 255).astype(np.uint8)
    grid = np.zeros((rows * columns, h, w), np.uint8)
    grid[:n] = idx
    grid = grid.reshape(rows, columns, h, w).transpose(0, 2, 1, 3).reshape(rows * h, columns * w)
    img = Image.fromarray(grid)  # mode L; the palette makes it P
    img.putpalette(scale.palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return png_data_uri(buf.getvalue()), columns
