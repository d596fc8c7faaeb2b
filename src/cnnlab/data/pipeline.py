"""The conversion every image goes through, in training and in prediction alike: channels, size, normalization."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.domain import Domain, InputCheck, check_input
from cnnlab.data.images import ImageLike, has_colour, image_to_tensor, load_image, to_pil

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, the weights Pillow's "L" conversion uses


@dataclass(frozen=True)
class Pipeline:
    """uint8 images of the dataset -> float tensors the model takes: (channels, size) and (x - mean) / std."""

    channels: int  # the model's input channels
    size: tuple[int, int]  # the model's input (H, W)
    mean: tuple[float, ...]  # per model channel
    std: tuple[float, ...]
    source_channels: int  # channels the images are stored with (1 or 3)
    domain: Domain | None = None  # what the training images looked like (polarity, statistics), if recorded

    @classmethod
    def build(cls, source_channels: int, input_size: tuple[int, int, int], mean: tuple[float, ...],
              std: tuple[float, ...], domain: Domain | None = None) -> "Pipeline":
        """A pipeline for a model input (C, H, W); `mean`/`std` are the source's, adapted to C channels."""
        c = input_size[0]
        if len(mean) != c:
            mean, std = adapt_stats(mean, std, c)
        return cls(c, (input_size[1], input_size[2]), tuple(mean), tuple(std), source_channels, domain)

    def to_dict(self) -> dict:
        return asdict(self) | {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                               "domain": self.domain.to_dict() if self.domain else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        return cls(int(d["channels"]), tuple(d["size"]), tuple(d["mean"]), tuple(d["std"]),
                   int(d["source_channels"]), Domain.from_dict(d.get("domain")))

    def needs_convert(self, shape: torch.Size) -> bool:
        """Whether stored images of this shape differ from the model's input in channels or size."""
        return shape[-3] != self.channels or tuple(shape[-2:]) != self.size

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C0, H0, W0) -> uint8 (N, C, H, W): channels first, then an antialiased resize."""
        x = images
        if x.shape[1] != self.channels:
            x = convert_channels(x, self.channels)
        if tuple(x.shape[-2:]) != self.size:
            y = F.interpolate(x.float(), size=self.size, mode="bilinear", antialias=True, align_corners=False)
            x = y.round_().clamp_(0, 255).to(torch.uint8)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float [0, 1] -> (x - mean) / std per channel."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalized float batch, with no augmentation (evaluation and prediction)."""
        return self.normalize(self.convert(images).float() / 255.0)

    def load(self, source: ImageLike) -> torch.Tensor:
        """One image from a file, bytes, PIL image, array or tensor, as the model sees it: (1, C, H, W)."""
        return self(load_image(source, self.source_channels, self.size)[None])

    def load_checked(self, source: ImageLike, invert: bool = True) -> tuple[torch.Tensor, InputCheck]:
        """`load`, and the image compared with the training images: inverted when its background is the opposite
        of theirs (unless `invert` is False), with a note for whatever is unlike them."""
        img = to_pil(source, draft=self.size)
        t = image_to_tensor(img, self.source_channels, self.size)
        w, h = img.info.get("source_size", img.size)  # as stored, not as a reduced JPEG decode
        t, found = check_input(self.domain, t, (h, w), has_colour(img), self.source_channels, invert)
        return self(t[None]), found

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo `normalize`, for showing a model input as a picture in [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C0, H, W) to C channels: gray is repeated to RGB, RGB is reduced by luminance."""
    c0 = images.shape[1]
    if c0 == channels:
        return images
    if c0 == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if channels == 1 and c0 == 3:
        w = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c0}-channel images to {channels} channels")


def adapt_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> tuple[tuple, tuple]:
    """Mean/std of the converted images: repeated for gray -> RGB, luminance-weighted for RGB -> gray."""
    if len(mean) == 1:
        return tuple(mean) * channels, tuple(std) * channels
    if channels == 1 and len(mean) == 3:
        return (sum(m * w for m, w in zip(mean, LUMA)),), (sum(s * w for s, w in zip(std, LUMA)),)
    raise ValueError(f"cannot adapt {len(mean)}-channel statistics to {channels} channels")
