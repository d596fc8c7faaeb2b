"""`folder:PATH`: the user's own images, one sub-folder per class, with bad files listed and skipped."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import torch

from cnnlab.data.cache import CACHE_FORMAT, cached
from cnnlab.data.dataset import ImageData
from cnnlab.data.images import BadImageError, Small, image_to_array, image_to_tensor, open_image, small_to_array
from cnnlab.data.info import DatasetInfo
from cnnlab.data.loader import CHUNK, map_in_order
from cnnlab.data.scan import FolderScan, scan_folder
from cnnlab.data.split import stratified_split
from cnnlab.errors import CnnlabError

DEFAULT_IMAGE_SIZE = (64, 64)
IN_MEMORY_LIMIT = 1 << 30  # decoded bytes above which a folder streams from disk instead


def folder_splits(scan: FolderScan, val_size: int | float | None, split_seed: int) -> dict[str, tuple[list, list]]:
    """(files, targets) per split: the folder's own val/test, else stratified carve-outs of train."""
    files, targets = scan.files["train"], torch.tensor(scan.targets["train"])
    out: dict[str, tuple[list, list]] = {}
    keep = torch.arange(len(files))
    # The user's held-out folder is the test split; validation is then carved from train, so the test
    # split is never used for model selection.
    if "test" in scan.files:
        out["test"] = (scan.files["test"], scan.targets["test"])
        if "val" in scan.files:
            out["val"] = (scan.files["val"], scan.targets["val"])
    elif "val" in scan.files:
        out["test"] = (scan.files["val"], scan.targets["val"])
    else:
        keep, held = stratified_split(targets, 0.2, seed=split_seed)
        if not len(held):
            raise CnnlabError(f"{scan.root} has {len(files)} readable images: too few to hold out a fifth for the test "
                              f"split; add images (a few per class at least), or give it train/ and test/ folders")
        out["test"] = ([files[i] for i in held.tolist()], targets[held].tolist())
    if "val" not in out:
        holdout = 0.1 if val_size is None else val_size
        if holdout:
            k, h = stratified_split(targets[keep], holdout, seed=split_seed + 1)
            out["val"] = ([files[i] for i in keep[h].tolist()], targets[keep[h]].tolist())
            keep = keep[k]
    out["train"] = ([files[i] for i in keep.tolist()], targets[keep].tolist())
    return out


class FolderStream(torch.utils.data.Dataset):
    """A folder split too large for memory: each item is decoded from disk when asked for."""

    images = None  # not held in memory (see cnnlab.data.dataset.ImageDataset)

    def __init__(self, files: list[str], targets: list[int], info: DatasetInfo, split: str,
                 image_size: tuple[int, int]):
        self.files, self.targets, self.info, self.split = files, torch.tensor(targets), info, split
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        try:
            img = open_image(self.files[i], draft=self.image_size)
        except BadImageError as exc:  # changed on disk since the scan: dropped from the batch, and said
            print(f"skipped {exc}", file=sys.stderr)
            return None
        return image_to_tensor(img, self.info.channels, self.image_size), int(self.targets[i])

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def subset(self, keep: torch.Tensor) -> "FolderStream":
        """The files `keep` of this split (e.g. a stratified subset for a quick run)."""
        files = [self.files[i] for i in keep.tolist()]
        return FolderStream(files, self.targets[keep].tolist(), self.info, self.split, self.image_size)


def _decode_all(files: list[str], channels: int, size: tuple[int, int],
                kept: dict[str, Small]) -> dict[str, torch.Tensor]:
    """Every file decoded into one preallocated uint8 tensor (no second copy of a folder near the memory limit), and
    the indices of those that failed to decode (their rows stay zero). A file the scan already decoded (`kept`,
    taken from it) is not opened again."""
    out = torch.zeros(len(files), channels, *size, dtype=torch.uint8)
    rows = out.numpy()  # written through numpy: a tensor's row assignment costs more than a small image's decode

    def some(chunk: range) -> list[tuple[int, str]]:
        failed = []
        for i in chunk:
            try:
                small = kept.pop(files[i], None) if kept else None
                pixels = small_to_array(small, channels, size) if small is not None else None
                if pixels is None:
                    pixels = image_to_array(open_image(files[i], draft=size), channels, size)
                rows[i] = pixels.transpose(2, 0, 1)
            except BadImageError as exc:
                failed.append((i, exc.reason))
        return failed

    n = len(files)
    chunks = ((range(i, min(i + CHUNK, n)),) for i in range(0, n, CHUNK))
    bad = [r for failed in map_in_order(some, chunks, n) for r in failed]
    return {"images": out, "bad": torch.tensor([i for i, _ in bad], dtype=torch.long),
            "reasons": [reason for _, reason in bad]}


def get_folder_dataset(
    path: str,
    split: str,
    *,
    val_size: int | float | None = None,
    split_seed: int = 0,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    in_memory_limit: int | None = None,
    stream: bool = False,
):
    """One split of a folder dataset, decoded at `image_size` into memory, or streamed from disk when too large for
    it or when `stream` says the images are used once (feature extraction embeds each once, and caches that)."""
    scan = scan_folder(Path(path).expanduser().resolve())
    size = tuple(image_size or DEFAULT_IMAGE_SIZE)
    ch = channels or (1 if scan.gray else 3)
    info = DatasetInfo(
        name=f"folder:{scan.root}",
        classes=scan.classes,
        channels=ch,
        size=None,
        mean=(0.5,) * ch,  # replaced by the training split's own statistics below
        std=(0.25,) * ch,
        description=f"your images in {scan.root}",
        source=str(scan.root),
        counts={k: len(v) for k, v in scan.files.items()},
        flip_ok=True,
        in_memory=True,
    )
    splits = folder_splits(scan, val_size, split_seed)
    if split not in splits:
        raise CnnlabError(f"{scan.root}: there is no {split} split (val_size=0?)")
    files, targets = splits[split]
    n_total = sum(len(f) for f, _ in splits.values())
    limit = IN_MEMORY_LIMIT if in_memory_limit is None else in_memory_limit
    if stream or n_total * ch * size[0] * size[1] > limit:
        sample = splits["train"][0][:: max(1, len(splits["train"][0]) // 500)][:500]
        info = _with_stats(info, _decode(sample, ch, size, scan, remember=False)[0])
        scan.kept.clear()  # what the scan kept is not held while the folder streams
        return FolderStream(files, targets, replace(info, in_memory=False), split, size)
    info = _with_stats(info, _decode(splits["train"][0], ch, size, scan)[0])
    images, good = _decode(files, ch, size, scan)
    return ImageData(images, torch.tensor(targets, dtype=torch.long)[good], info, split)


def _decode(files: list[str], channels: int, size: tuple[int, int], scan: FolderScan,
            remember: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(the images that decode, as one uint8 tensor; the mask of those files): cached on disk (and, `remember`, for
    this process) under a key of the files' paths, the scan's listing key (every file's path, size and modification
    time: any change in the folder is a new key), and the decoded size and channels. Files that fail to decode are
    said on every run, and left out every time."""
    h = hashlib.sha1(f"cnnlab-cache-{CACHE_FORMAT}|folder|{channels}|{tuple(size)}|{scan.key}\n".encode())
    h.update("\n".join(files).encode())
    key = h.hexdigest()[:20]
    if key not in _DECODED:
        while len(_DECODED) >= DECODED_MEMO:
            _DECODED.pop(next(iter(_DECODED)))
        shape = (len(files), channels, *size)
        decoded = cached("folder", key, lambda: _decode_all(files, channels, size, scan.kept), valid=lambda d: (
            _is_images(d.get("images"), shape) and _is_indices(d.get("bad"), len(files))
            and isinstance(d.get("reasons"), list) and len(d["reasons"]) == len(d["bad"])))
        good = torch.ones(len(files), dtype=torch.bool)
        good[decoded["bad"]] = False
        for i, reason in zip(decoded["bad"].tolist(), decoded["reasons"]):  # said on every run, as the scan's are
            print(f"skipped {files[i]}: {reason}", file=sys.stderr)
        if len(files) and not good.any():
            raise CnnlabError(f"none of the {len(files)} images decodes (e.g. {files[0]}: {decoded['reasons'][0]}): "
                              f"put readable images (PNG, JPEG, BMP, TIFF, WebP, ...) in the class folders")
        result = (decoded["images"] if good.all() else decoded["images"][good], good)
        if not remember:  # a sample, read once: not held for the rest of the process
            return result
        _DECODED[key] = result
    return _DECODED[key]


def _is_images(x: object, shape: tuple[int, ...]) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and tuple(x.shape) == shape


def _is_indices(x: object, n: int) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.long and x.dim() == 1 and bool(((x >= 0) & (x < n)).all())


DECODED_MEMO = 8  # the splits of a run, and a few more for a notebook that tries sizes
_DECODED: dict[str, torch.Tensor] = {}


def _with_stats(info: DatasetInfo, train_images: torch.Tensor) -> DatasetInfo:
    """The info with the per-channel mean and std of the training images, from their histograms (exact for uint8,
    and no float copy of the images)."""
    c = train_images.shape[1]
    hist = torch.zeros(c, 256, dtype=torch.float64)
    rows = max(1, (1 << 24) // max(train_images[0].numel(), 1)) if len(train_images) else 1
    for chunk in train_images.split(rows):
        for i in range(c):
            hist[i] += torch.bincount(chunk[:, i].reshape(-1), minlength=256).double()
    v = torch.arange(256, dtype=torch.float64) / 255.0
    n = hist.sum(1).clamp_min(1)
    mean = (hist * v).sum(1) / n
    var = (hist * (v - mean[:, None]).square()).sum(1) / (n - 1).clamp_min(1)
    std = var.sqrt().clamp_min(1e-3)
    return replace(info, mean=tuple(round(v, 4) for v in mean.tolist()), std=tuple(round(v, 4) for v in std.tolist()))


def write_image_folder(images: torch.Tensor, targets: torch.Tensor, classes: tuple[str, ...] | list[str],
                       folder: str | Path) -> Path:
    """uint8 images (N, 1 or 3, H, W) as PNG files in folder/<class>/<index>.png: a dataset `folder:` reads back."""
    from PIL import Image

    folder = Path(folder).expanduser()
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise CnnlabError(f"write_image_folder takes uint8 images (N, 1 or 3, H, W), got {images.dtype} "
                          f"{tuple(images.shape)}")
    for i, (image, target) in enumerate(zip(images, targets.tolist())):
        sub = folder / classes[target].replace("/", "-")  # "T-shirt/top" would be two folders
        sub.mkdir(parents=True, exist_ok=True)
        pixels = image.permute(1, 2, 0).numpy()
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(sub / f"{i:05d}.png")
    return folder
