"""What a dataset is like, measured cheaply before training: image size and channels, images per class, class balance,
and whether the images look like glyphs / line art or like photos. `training/auto.py` chooses defaults from it.

Glyph-like (handwriting, symbols, line art, objects drawn on a plain background) vs photo-like is read from three
signals on a sample of training images, each robust on its own terms and all three needed:
- most pixels are near-black or near-white (>= GLYPH_EXTREMES of them within 0.1 of 0 or 1): ink on paper;
  photos spread over the mid-tones (5-30% extremes in natural photos, measured);
- the background is plain: the border of >= 90% of the images is consistently dark or consistently light
  (`domain.measure_domain`), as a sheet of paper or a scanner's black is;
- edges are sharp: >= GLYPH_EDGES (1%) of neighbouring pixel pairs differ by more than a quarter of the range (strokes);
  a dark, smooth night photo has many near-black pixels but few such steps.
Built-in datasets say what they are in their DatasetInfo (a plain background, whether a mirror keeps the label),
so no pixel of them is read (CIFAR-10 need not be on disk).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.domain import measure_domain

SAMPLE_IMAGES = 256  # images decoded to measure the pixels (spread over the classes)
MEASURE_SIDE = 64  # pixels are measured at the original size, at most this many pixels a side
GLYPH_EXTREMES = 0.5  # share of pixels within 0.1 of black or white (MNIST 0.91, digits 0.65, photos 0.01-0.26)
GLYPH_EDGES = 0.01  # share of neighbour steps > 0.25 (MNIST 0.11, digits 0.50, smooth photo crops 0.00-0.01)


@dataclass(frozen=True)
class DataProfile:
    """The facts the automatic choices read (see training/auto.py)."""

    name: str
    channels: int  # 1: every image is gray; 3: colour
    size: tuple[int, int]  # typical original (H, W): the median of each
    sizes_vary: bool  # the originals do not all have one size
    num_classes: int
    per_class: tuple[int, ...]  # training images per class (before the validation carve-out)
    train_images: int  # images training sees with the default validation carve-out ...
    val_images: int  # ... and the size of that carve-out
    kind: str  # "glyph" (glyphs, line art, plain background) or "photo"
    kind_reason: str  # what the kind was read from, in words
    flip_ok: bool | None  # known from the dataset's info (built-ins); None: unknown, decided from the kind
    measures: dict[str, float | str | None]  # the pixel statistics behind `kind` (empty for built-ins)
    subset: int = 0  # training on a subset of this many images (train_images is then at most that)

    @property
    def side(self) -> int:
        """The typical original image's shorter side."""
        return min(self.size)

    @property
    def imbalance(self) -> float:
        """The largest class over the smallest (1.0: balanced)."""
        return max(self.per_class) / max(min(self.per_class), 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size), "per_class": list(self.per_class)}


def pixel_kind(images: torch.Tensor) -> tuple[str, str, dict[str, float | str | None]]:
    """(kind, reason, measures) of a uint8 (N, C, H, W) sample: "glyph" when all three signals agree, else "photo"."""
    g = images.float().mean(1) / 255.0
    extremes = ((g < 0.1) | (g > 0.9)).float().mean().item()
    steps = torch.cat([(g[:, :, 1:] - g[:, :, :-1]).abs().flatten(), (g[:, 1:] - g[:, :-1]).abs().flatten()])
    edges = (steps > 0.25).float().mean().item() if steps.numel() else 0.0
    background = measure_domain(images).background if len(images) else None
    colourful = images.shape[1] == 3 and (images.float().std(1) / 255.0).mean().item() > 0.05
    measures = {"extremes": round(extremes, 3), "edges": round(edges, 3), "background": background,
                "colour_spread": round((images.float().std(1) / 255.0).mean().item(), 3) if images.shape[1] == 3
                else 0.0}
    said = f"{extremes:.0%} near-black/white pixels, {edges:.0%} sharp steps, " + (
        f"a plain {background} background" if background else "no plain background")
    glyph = extremes >= GLYPH_EXTREMES and edges >= GLYPH_EDGES and background is not None and not colourful
    return ("glyph" if glyph else "photo"), said, measures


def profile_dataset(name: str, data_dir: str | Path | None = None, val_size: int | float | None = None,
                    subset: int = 0) -> DataProfile:
    """The profile of a built-in dataset (from its info) or of `folder:PATH` (scanned, a sample measured)."""
    if name.startswith("folder:"):
        return _profile_folder(name[len("folder:"):], val_size, subset)
    return _profile_builtin(name, val_size, subset)


def _holdout(n: int, val_size: int | float | None, default: int) -> int:
    if val_size is None:
        return min(default, n)
    return round(val_size * n) if 0 < val_size < 1 else min(int(val_size), n)


def _profile_builtin(name: str, val_size: int | float | None, subset: int) -> DataProfile:
    from cnnlab.data.registry import default_val_size, get_dataset_info

    info = get_dataset_info(name)
    n = info.counts.get("train", 0)
    val = _holdout(n, val_size, default_val_size(info, n))
    train = n - val if not subset else min(subset, n - val)
    per = [max(1, round(n / info.num_classes))] * info.num_classes  # the built-ins are balanced (near enough)
    plain = info.dark_background is not None
    kind, reason = ("glyph", "the dataset's info: symbols or objects on a plain background") if plain else (
        "photo", "the dataset's info: photos")
    return DataProfile(info.name, info.channels, tuple(info.size), False, info.num_classes, tuple(per), train, val,
                       kind, reason, info.flip_ok, {}, subset)


def _profile_folder(path: str, val_size: int | float | None, subset: int) -> DataProfile:
    from cnnlab.data.folder import folder_splits, scan_folder

    scan = scan_folder(Path(path).expanduser().resolve())
    splits = folder_splits(scan, val_size, 0)
    targets = scan.targets["train"]
    per = torch.bincount(torch.tensor(targets), minlength=len(scan.classes)).tolist()
    train_n = len(splits["train"][0]) if not subset else min(subset, len(splits["train"][0]))
    val_n = len(splits.get("val", ([], []))[0])
    sizes = scan.sizes["train"]  # every file's upright (H, W), recorded by the scan (cached: no file is opened)
    size = (int(statistics.median(h for h, _ in sizes)), int(statistics.median(w for _, w in sizes)))
    channels = 1 if scan.gray else 3
    side = min(MEASURE_SIDE, min(size))
    sample = _decode_sample(splits["train"][0], channels, (side, side))
    kind, reason, measures = pixel_kind(sample)
    return DataProfile(f"folder:{scan.root}", channels, size, len(set(sizes)) > 1, len(scan.classes), tuple(per),
                       train_n, val_n, kind, reason, None, measures, subset)


def _decode_sample(files: list[str], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An evenly spread sample of the training files, decoded at `size`."""
    from cnnlab.data.images import BadImageError, image_to_tensor, open_image

    picked = files[:: max(1, len(files) // SAMPLE_IMAGES)][:SAMPLE_IMAGES]
    out = []
    for f in picked:
        try:
            out.append(image_to_tensor(open_image(f, draft=size), channels, size))
        except BadImageError:
            continue
    return torch.stack(out) if out else torch.zeros(0, channels, *size, dtype=torch.uint8)
