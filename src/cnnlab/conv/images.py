"""Photos as tensors: load a file or a photo bundled with scikit-learn, as (C, H, W) floats in [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import CnnlabError

SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")  # shipped inside scikit-learn, so no download is ever needed


def _from_pil(im: "PIL.Image.Image", gray: bool, size: int | None) -> torch.Tensor:  # noqa: F821
    from PIL import Image

    from cnnlab.data.images import to_8bit

    im = to_8bit(im, 1 if gray else 3)  # any mode: 16-bit, palette, transparency, CMYK
    if size:
        # Shrink so the longer side is `size`; the area-averaging filter avoids aliasing on big reductions.
        scale = size / max(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BOX)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    return t[None] if gray else t.permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike, gray: bool = False, size: int | None = None) -> torch.Tensor:
    """The image file at `path` as (1 or 3, H, W) floats in [0, 1], shrunk so its longer side is at most `size`."""
    from cnnlab.data.images import BadImageError, open_image

    p = Path(path).expanduser()
    if not p.is_file():
        raise CnnlabError(f"no image file at {p}: check the path (or leave the image out to use a bundled photo)")
    try:
        return _from_pil(open_image(p), gray, size)
    except BadImageError as exc:
        raise CnnlabError(f"cannot read {exc}: give a PNG or JPEG file") from None


def sample_image(name: str = "china.jpg", gray: bool = False, size: int | None = None) -> torch.Tensor:
    """A photo bundled with scikit-learn ('china.jpg' or 'flower.jpg') as (1 or 3, H, W) floats in [0, 1]."""
    from PIL import Image

    from cnnlab.data.paths import sklearn_data_file

    if name not in SAMPLE_PHOTOS:
        raise CnnlabError(f"unknown sample photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)}")
    path = sklearn_data_file("images", name)
    if path is not None:  # the file load_sample_image() reads, read as it does
        with Image.open(path) as im:
            pixels = np.asarray(im)
    else:
        from sklearn.datasets import load_sample_image

        pixels = load_sample_image(name)
    return _from_pil(Image.fromarray(pixels), gray, size)


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601, what PIL's 'L' uses); gray stays."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise CnnlabError(f"to_gray takes an image (1 or 3, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        return image
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(dim=0, keepdim=True)
