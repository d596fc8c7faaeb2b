"""What the training images looked like, so that an input unlike them is said to be, and one of the opposite
polarity (a digit drawn dark on white, for a model trained on MNIST's light-on-black) is inverted.

`measure_domain` reads a sample of the training split when a run starts; the result travels with the run's
pipeline (checkpoints, exported models). `check_input` compares one input with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from cnnlab.data.dataset import ImageDataset, take
from cnnlab.errors import CnnlabError

SAMPLE = 2000  # training images measured (in memory); enough for stable statistics, milliseconds to read ...
SAMPLE_VALUES = 4_000_000  # ... and at most this many pixel values, but ...
MIN_SAMPLE = 64  # ... at least this many images (large photos); also what a streamed folder decodes from disk
DARK, LIGHT = 0.25, 0.75  # a background below / above this level (in [0, 1]) is dark / light
CONSISTENT = 0.9  # the share of training images whose background must agree to call the polarity
FAR = 5.0  # an image statistic this many spreads from the training images' mean is "far" ...
FAR_MIN = 0.12  # ... and at least this far in absolute terms (pixel values in [0, 1])
ASPECT_FAR = 1.25  # an aspect ratio this many times wider or taller than the training images' (5:4 to a square)
LOW_CONFIDENCE = 0.5  # a top probability below this is said to be low


class InputWarning(UserWarning):
    """An input the model may not read as intended (inverted, or unlike the training images)."""


@dataclass(frozen=True)
class Domain:
    """The training images: background polarity, aspect ratio, per-image brightness and contrast (mean, spread)."""

    background: str | None  # "dark" (light strokes on black, as MNIST), "light" (dark on white), None (photos)
    aspect: float | None = None  # height / width of the stored training images; None when they varied
    brightness: tuple[float, float] | None = None  # per-image mean pixel value in [0, 1]: (mean, std) over images
    contrast: tuple[float, float] | None = None  # per-image pixel std: (mean, std) over images

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "aspect": self.aspect,
                "brightness": list(self.brightness) if self.brightness else None,
                "contrast": list(self.contrast) if self.contrast else None}

    @classmethod
    def from_dict(cls, d: Any) -> "Domain | None":
        """From `to_dict`'s output (read from checkpoints and exported files: checked, never trusted)."""
        if d is None:
            return None
        try:
            background = d.get("background")
            if background not in (None, "dark", "light"):
                raise ValueError(f"background {background!r}")
            aspect = None if d.get("aspect") is None else float(d["aspect"])
            pairs = [None if d.get(k) is None else (float(d[k][0]), float(d[k][1])) for k in ("brightness", "contrast")]
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
            raise CnnlabError(f"unreadable description of the training images ({exc})") from None
        return cls(background, aspect, *pairs)


@dataclass
class InputCheck:
    """What `check_input` found about one input: whether it was inverted, and what is unlike the training images."""

    inverted: bool = False
    warnings: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """Everything worth telling the user, the inversion first."""
        inv = ["inverted: its background is the opposite of the training images' (turn off with --no-invert or "
               "invert=False)"] if self.inverted else []
        return inv + self.warnings


def gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float (N, C, H, W) -> float (N, H, W) in [0, 1]: the channels' mean."""
    x = images.float()
    x = x / 255.0 if images.dtype == torch.uint8 else x
    return x.mean(1)


def background_level(images: torch.Tensor) -> torch.Tensor:
    """Per image (N, C, H, W): the median of the outermost ring of pixels, in [0, 1] (what surrounds the subject)."""
    g = gray(images)
    ring = torch.cat([g[:, 0], g[:, -1], g[:, 1:-1, 0], g[:, 1:-1, -1]], dim=1)
    return ring.median(dim=1).values


def _spread(values: torch.Tensor) -> tuple[float, float]:
    return round(values.mean().item(), 4), round(values.std().item() if len(values) > 1 else 0.0, 4)


def measure_domain(images: torch.Tensor, dark_background: bool | None = None, varied_sizes: bool = False) -> Domain:
    """Describe a sample of training images (uint8 (N, C, H, W)); `dark_background`, when the dataset's info
    knows it, is the polarity; otherwise it is read from the images' borders."""
    if dark_background is not None:
        background = "dark" if dark_background else "light"
    else:
        levels = background_level(images) if len(images) else torch.zeros(0)
        dark, light = (levels < DARK).float().mean().item(), (levels > LIGHT).float().mean().item()
        background = "dark" if dark >= CONSISTENT else "light" if light >= CONSISTENT else None
    g = gray(images)
    aspect = None if varied_sizes else round(images.shape[-2] / images.shape[-1], 4)
    return Domain(background, aspect, brightness=_spread(g.mean((1, 2))), contrast=_spread(g.flatten(1).std(1)))


def training_domain(data: ImageDataset) -> Domain:
    """The domain of a training split, from an evenly spread sample of its images."""
    n = len(data)
    if data.images is not None:
        want = min(SAMPLE, max(MIN_SAMPLE, SAMPLE_VALUES // max(data.images[0].numel(), 1) if n else 0))
    else:
        want = MIN_SAMPLE
    idx = torch.linspace(0, n - 1, min(n, want)).round().long()
    images = take(data, idx)[0] if n else torch.zeros(0, data.info.channels, 1, 1, dtype=torch.uint8)
    return measure_domain(images, data.info.dark_background, varied_sizes=data.info.size is None)


def should_invert(domain: Domain | None, image: torch.Tensor) -> bool:
    """Whether one uint8 (C, H, W) image's background is the opposite of the training images'."""
    if domain is None or domain.background is None:
        return False
    level = background_level(image[None])[0].item()
    return level > 0.5 if domain.background == "dark" else level < 0.5


def _far(value: float, stats: tuple[float, float] | None) -> bool:
    if stats is None:
        return False
    mean, spread = stats
    return abs(value - mean) > max(FAR * spread, FAR_MIN)


def check_input(domain: Domain | None, image: torch.Tensor, original_size: tuple[int, int], colour: bool,
                trained_channels: int, invert: bool = True) -> tuple[torch.Tensor, InputCheck]:
    """One uint8 (C, H, W) image as the pipeline read it (original (H, W) `original_size`, `colour` whether its
    channels differ) against the training images: (the image, inverted if its polarity is the opposite and
    `invert` allows, what was found)."""
    found = InputCheck()
    if domain is None:  # nothing recorded (an untrained model): nothing to compare with
        return image, found
    if invert and should_invert(domain, image):
        image, found.inverted = 255 - image, True
    if colour and trained_channels == 1:
        found.warnings.append("a colour image, but the model was trained on gray images")
    h, w = original_size
    if domain.aspect:
        ratio = (h / w) / domain.aspect
        if max(ratio, 1 / ratio) > ASPECT_FAR:
            found.warnings.append(f"its shape ({w}x{h} pixels, width x height) is far from the training images' "
                                  f"(aspect {_aspect(domain.aspect)}): it is squeezed to fit")
    g = gray(image[None])[0]
    mean, std = g.mean().item(), g.std().item()
    if _far(mean, domain.brightness) or _far(std, domain.contrast):
        b, c = domain.brightness, domain.contrast
        found.warnings.append(f"its brightness and contrast (mean {mean:.2f}, std {std:.2f}) are far from the "
                              f"training images' (mean {b[0]:.2f} +- {b[1]:.2f}, std {c[0]:.2f} +- {c[1]:.2f})")
    return image, found


def confidence_warning(top_probability: float) -> str | None:
    """A note when the model is unsure: its most probable class below LOW_CONFIDENCE."""
    if math.isnan(top_probability) or top_probability >= LOW_CONFIDENCE:
        return None
    return f"low confidence: the most probable class has {top_probability:.0%}"


def _aspect(ratio: float) -> str:
    return "1:1, square" if abs(ratio - 1) < 0.01 else f"height/width {ratio:.2f}"
