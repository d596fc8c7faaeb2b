"""`folder:PATH`: the user's own images, one sub-folder per class, with bad files listed and skipped."""

from __future__ import annotations

import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from cnnlab.data.cache import cached, source_key
from cnnlab.data.dataset import ImageData
from cnnlab.data.images import BadImageError, image_to_tensor, is_single_channel, list_image_files, open_image
from cnnlab.data.info import DatasetInfo
from cnnlab.data.split import stratified_split
from cnnlab.errors import CnnlabError

DEFAULT_IMAGE_SIZE = (64, 64)
IN_MEMORY_LIMIT = 1 << 30  # decoded bytes above which a folder streams from disk instead
VAL_NAMES = ("val", "valid", "validation")


@dataclass
class FolderScan:
    """The files of one folder dataset, by split, with their class indices."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[Path]]  # split -> files ("train", and "val"/"test" when the folder has them)
    targets: dict[str, list[int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)
    gray: bool = False  # every image is single-channel


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_image(path: Path) -> tuple[bool, str | bool]:
    """(ok, reason or is_gray): a full decode, since a header check lets truncated files through."""
    try:
        img = open_image(path)
        return True, is_single_channel(img)
    except BadImageError as exc:
        return False, str(exc).split(": ", 1)[-1]


def _scan_split(folder: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[Path], list[int],
                                                                       list[tuple[Path, str]], bool]:
    dirs = _class_dirs(folder)
    names = tuple(d.name for d in dirs)
    if classes is not None and set(names) - set(classes):
        raise CnnlabError(f"{folder} has class folders not in train/: {sorted(set(names) - set(classes))}")
    classes = classes or names
    files, targets, skipped, gray = [], [], [], True
    for d in dirs:
        candidates, others = list_image_files(d)
        skipped += [(p, "not an image file (unknown extension)") for p in others]
        with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow decodes without the GIL
            checks = list(pool.map(_check_image, candidates))
        good = 0
        for path, (ok, extra) in zip(candidates, checks):
            if ok:
                files.append(path)
                targets.append(classes.index(d.name))
                gray = gray and bool(extra)
                good += 1
            else:
                skipped.append((path, str(extra)))
        if good == 0:
            raise CnnlabError(
                f"class folder {d} has no readable images: put images in it or remove it"
                + (f" ({len(candidates) + len(others)} unreadable files)" if candidates or others else "")
            )
    return classes, files, targets, skipped, gray


def scan_folder(root: Path) -> FolderScan:
    """Find the classes and image files under `root` (class folders, or train/ + val/ and/or test/).

    A scan opens every file, so it is kept for the next call (the train, val and test splits each ask), but only
    while no folder under `root` changed: adding, removing or renaming an image or a class folder changes its
    folder's modification time, and a notebook that adds images then sees them.
    """
    root = Path(root)
    if not root.is_dir():
        raise CnnlabError(f"{root} is not a folder: folder:PATH needs a folder with one sub-folder per class")
    return _scan_folder(root, folder_stamp(root))


def folder_stamp(root: Path) -> tuple[tuple[str, int], ...]:
    """Every folder under `root` (itself included) with its modification time."""
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    return tuple(sorted((str(d), d.stat().st_mtime_ns) for d in folders))


@functools.lru_cache(maxsize=8)
def _scan_folder(root: Path, stamp: tuple[tuple[str, int], ...]) -> FolderScan:
    """The scan itself; `stamp` only keys the cache."""
    layout = {"train": root / "train"} if (root / "train").is_dir() else {"train": root}
    if "train" in layout and layout["train"] != root:
        for n in VAL_NAMES:
            if (root / n).is_dir():
                layout["val"] = root / n
                break
        if (root / "test").is_dir():
            layout["test"] = root / "test"
    classes, files, targets, skipped, gray = _scan_split(layout["train"], None)
    if len(classes) < 2:
        raise CnnlabError(
            f"{layout['train']} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}): a classifier "
            f"needs at least two, one sub-folder per class (e.g. {root}/cats/, {root}/dogs/)"
        )
    scan = FolderScan(root, classes, {"train": files}, {"train": targets}, skipped, gray)
    for split in ("val", "test"):
        if split in layout:
            _, f, t, s, g = _scan_split(layout[split], classes)
            scan.files[split], scan.targets[split] = f, t
            scan.skipped += s
            scan.gray = scan.gray and g
    counts = torch.bincount(torch.tensor(targets), minlength=len(classes)).tolist()
    for name, n in zip(classes, counts):
        if n == 1 and len(layout) == 1:  # one folder for everything: its splits are carved from train
            print(f"warning: class {name!r} has one image in {root}: it cannot be in both the training and the test "
                  f"split (add images to {layout['train'] / name})", file=sys.stderr)
    if scan.skipped:
        print(f"skipped {len(scan.skipped)} unreadable file(s) in {root}:", file=sys.stderr)
        for path, reason in scan.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    return scan


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
        out["test"] = ([files[i] for i in held], targets[held].tolist())
    if "val" not in out:
        holdout = 0.1 if val_size is None else val_size
        if holdout:
            k, h = stratified_split(targets[keep], holdout, seed=split_seed + 1)
            out["val"] = ([files[i] for i in keep[h]], targets[keep[h]].tolist())
            keep = keep[k]
    out["train"] = ([files[i] for i in keep], targets[keep].tolist())
    return out


class FolderStream(torch.utils.data.Dataset):
    """A folder split too large for memory: each item is decoded from disk when asked for."""

    images = None  # not held in memory (see cnnlab.data.dataset.ImageDataset)

    def __init__(self, files: list[Path], targets: list[int], info: DatasetInfo, split: str,
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


def _decode_all(files: list[Path], channels: int, size: tuple[int, int]) -> torch.Tensor:
    def one(path: Path) -> torch.Tensor:
        return image_to_tensor(open_image(path, draft=size), channels, size)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return torch.stack(list(pool.map(one, files))) if files else torch.zeros(0, channels, *size, dtype=torch.uint8)


def get_folder_dataset(
    path: str,
    split: str,
    *,
    val_size: int | float | None = None,
    split_seed: int = 0,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    in_memory_limit: int = IN_MEMORY_LIMIT,
):
    """One split of a folder dataset, decoded at `image_size` into memory (or streamed when too large)."""
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
    if n_total * ch * size[0] * size[1] > in_memory_limit:
        sample = splits["train"][0][:: max(1, len(splits["train"][0]) // 500)][:500]
        info = _with_stats(info, _decode(sample, ch, size))
        return FolderStream(files, targets, replace(info, in_memory=False), split, size)
    info = _with_stats(info, _decode(splits["train"][0], ch, size))
    return ImageData(_decode(files, ch, size), torch.tensor(targets, dtype=torch.long), info, split)


def _decode(files: list[Path], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """The images decoded into one uint8 tensor, cached on disk under a key of the files and the size."""
    return _decode_memo(tuple(files), channels, tuple(size))


@functools.lru_cache(maxsize=8)
def _decode_memo(files: tuple[Path, ...], channels: int, size: tuple[int, int]) -> torch.Tensor:
    key = source_key(files, size=size, channels=channels)
    return cached("folder", key, lambda: {"images": _decode_all(list(files), channels, size)})["images"]


def _with_stats(info: DatasetInfo, train_images: torch.Tensor) -> DatasetInfo:
    """The info with the per-channel mean and std of the training images."""
    x = train_images.float() / 255.0
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return replace(info, mean=tuple(round(v, 4) for v in mean), std=tuple(round(v, 4) for v in std))
