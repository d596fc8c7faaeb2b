"""Pictures for the browser: tensors in [0, 1] as PNG data URLs, scaled up with nearest-neighbour when asked."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A [0, 1] image, (C, H, W) tensor or (H, W[, 3]) array, as a uint8 (H, W) or (H, W, 3) array."""
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if isinstance(image, torch.Tensor) and a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def upscale(arr: np.ndarray, min_side: int) -> np.ndarray:
    """Each pixel repeated into an integer-sized block so the short side is at least `min_side`: pixels stay crisp."""
    factor = max(1, -(-min_side // min(arr.shape[:2])))
    if factor == 1:
        return arr
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)


def png_data_url(arr: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3) array as 'data:image/png;base64,...', ready for an <img src>."""
    buf = io.BytesIO()
    # compress_level 1: these PNGs are made per request, so encoding speed matters more than a few bytes.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def map_to_uint8(fmap: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """One feature map (H, W) scaled to its own range (black = its minimum, white = its maximum), with that range."""
    m = fmap.detach().float().cpu()
    lo, hi = float(m.min()), float(m.max())
    scaled = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
    return to_uint8(scaled.numpy()), lo, hi
