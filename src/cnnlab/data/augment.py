"""Augmentation of whole batches on tensors (any device): one kernel launch per batch, not per image."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from cnnlab.data.info import DatasetInfo
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Augment:
    """Which random changes to apply to each training image; all default to off."""

    translate: int = 0  # shift by up to this many pixels (zero padding then a random crop)
    flip: bool = False  # mirror left-right with probability 1/2 (only where it keeps the label)
    degrees: float = 0.0  # small affine: rotate by up to this many degrees
    scale: float = 0.0  # small affine: zoom by a factor in [1 - scale, 1 + scale]
    crop: float = 0.0  # random resized crop keeping at least this fraction of the area (0: off)
    jitter: float = 0.0  # colour jitter: brightness, contrast (and saturation for RGB) by up to this much
    cutout: int = 0  # blank a random square of this side

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        on = [f"{k}={v}" if not isinstance(v, bool) else k for k, v in asdict(self).items() if v]
        return ",".join(on) or "none"

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augment a float batch (N, C, H, W) in [0, 1]; all randomness comes from `g`."""
        if self.crop or self.degrees or self.scale:
            x = random_affine(x, g, self.degrees, self.scale, self.crop, self.translate)
        elif self.translate:
            x = random_translate(x, self.translate, g)
        if self.flip:
            x = random_flip(x, g)
        if self.jitter:
            x = color_jitter(x, self.jitter, g)
        if self.cutout:
            x = cutout(x, self.cutout, g)
        return x


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the CPU generator (same stream on every device), then moved."""
    return torch.rand(n, generator=g).to(device)


def random_translate(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random whole-pixel (dy, dx) in [-pad, pad], filling with black."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = _random_shifts(n, pad, h, w, g).to(x)
    # Output pixel (i, j) reads input pixel (i + dy, j + dx): nearest sampling exactly at pixel centres is a
    # copy, done in one pass (3x faster on a CPU than padding the batch and gathering from it).
    return F.grid_sample(x, affine_grid(theta, h, w), mode="nearest", padding_mode="zeros", align_corners=False)


def _random_shifts(n: int, pad: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """(n, 2): whole-pixel shifts (dx, dy) in [-pad, pad], drawn dy first, in grid_sample's [-1, 1] units."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g) - pad
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g) - pad
    return torch.stack([dx * (2.0 / w), dy * (2.0 / h)], 1)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    mask = (_rand(len(x), g, x.device) < 0.5)[:, None, None, None]
    return torch.where(mask, x.flip(3), x)


def random_affine(
    x: torch.Tensor, g: torch.Generator, degrees: float, scale: float, crop: float, translate: int = 0
) -> torch.Tensor:
    """Rotate, zoom, (for `crop`) pick a random sub-rectangle and shift, one matrix per image, via grid_sample."""
    n, dev = len(x), x.device
    angle = (_rand(n, g, dev) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (_rand(n, g, dev) * 2 - 1) * scale
    sx = sy = 1.0 / zoom  # the sampling grid shrinks to zoom in
    tx = ty = torch.zeros(n, device=dev)
    if crop:
        area = crop + (1 - crop) * _rand(n, g, dev)
        ratio = torch.exp((_rand(n, g, dev) * 2 - 1) * math.log(4 / 3))
        sx = sx * torch.sqrt(area * ratio).clamp(max=1)
        sy = sy * torch.sqrt(area / ratio).clamp(max=1)
        tx = (_rand(n, g, dev) * 2 - 1) * (1 - sx).clamp(min=0)
        ty = (_rand(n, g, dev) * 2 - 1) * (1 - sy).clamp(min=0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1
    ).to(x.dtype)
    if translate:
        # Shifting the output by d is sampling at A(p + d) + t: one matrix, one resampling (as torchvision's
        # RandomAffine composes its rotation and translation), not a second pass over the rotated batch.
        d = _random_shifts(n, translate, x.shape[2], x.shape[3], g).to(x)
        theta[:, :, 2] += (theta[:, :, :2] @ d[:, :, None])[:, :, 0]
    grid = affine_grid(theta, x.shape[2], x.shape[3])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`F.affine_grid(theta, (N, C, h, w), align_corners=False)` as one matrix product (the same grid to 1e-6).

    Why not torch's: on a CPU it took 1-2 ms of a 256-image batch, more than the sampling itself; one
    (2N x 3) @ (3 x hw) product against a cached grid of pixel centres takes ~0.05 ms. The result is a
    permuted view (not copied to (N, h, w, 2) order): grid_sample reads it as fast as a contiguous grid.
    """
    n = len(theta)
    xy = theta.reshape(n * 2, 3) @ _pixel_centres(h, w, theta.dtype, theta.device)
    return xy.view(n, 2, h, w).permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=16)
def _pixel_centres(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, h*w): each pixel centre as (x, y, 1) in grid_sample's [-1, 1] coordinates (align_corners=False)."""
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
    grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=torch.float64)])
    return grid.reshape(3, h * w).to(dtype=dtype, device=device)


def color_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Random brightness and contrast (and saturation for RGB) per image, each in [1 - s, 1 + s]."""
    n, dev = len(x), x.device
    b = (1 + (_rand(n, g, dev) * 2 - 1) * strength).view(n, 1, 1, 1)
    c = (1 + (_rand(n, g, dev) * 2 - 1) * strength).view(n, 1, 1, 1)
    x = x * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    if x.shape[1] == 3:
        s = (1 + (_rand(n, g, dev) * 2 - 1) * strength).view(n, 1, 1, 1)
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * s + gray
    return x.clamp(0, 1)


def cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Blank (set to black) one random size x size square per image; the square may overlap the border."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=g).to(x.device)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=g).to(x.device)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half) & (ys - cy < size - half) & (xs - cx < size - half)
    return x.masked_fill(inside[:, None], 0.0)


AUTO = {  # what `--augment auto` means, by kind of dataset
    "digits": Augment(),
    "gray28": Augment(translate=2),
    "photo32": Augment(translate=4, flip=True),
    "folder": Augment(crop=0.35, flip=True, jitter=0.2),
}


def auto_augment(info: DatasetInfo) -> Augment:
    """A sensible default for a dataset: shifts for digits, shifts and flips for small photos, crops for folders."""
    if info.name == "digits":
        return AUTO["digits"]
    if info.name.startswith("folder:"):
        return AUTO["folder"] if info.flip_ok else Augment(crop=0.35, jitter=0.2)
    if info.channels == 1:
        return AUTO["gray28"]
    return AUTO["photo32"] if info.flip_ok else Augment(translate=4)


def parse_augment(spec: str, info: DatasetInfo) -> Augment:
    """Read 'auto', 'none' or 'translate=2,flip,cutout=8' into an Augment; flips are refused for digits/text."""
    spec = (spec or "none").strip()
    if spec == "auto":
        return auto_augment(info)
    if spec in ("none", "off", ""):
        return Augment()
    kinds = {f.name: f.type for f in fields(Augment)}
    values: dict = {}
    for part in spec.split(","):
        key, _, value = part.strip().partition("=")
        if key not in kinds:
            raise CnnlabError(f"unknown augmentation {key!r} in {spec!r}; known: {', '.join(kinds)}")
        if key == "flip":
            values[key] = value.lower() not in ("0", "false", "no", "off")
        else:
            try:
                values[key] = int(value) if key in ("translate", "cutout") else float(value)
            except ValueError:
                raise CnnlabError(f"augmentation {key} needs a number, e.g. {key}=2 (got {part!r})") from None
    if values.get("flip") and not info.flip_ok:
        raise CnnlabError(
            f"flip would change the labels of {info.name} (mirrored digits and letters are other symbols); "
            f"drop 'flip' from --augment"
        )
    return Augment(**values)
