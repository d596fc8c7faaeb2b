"""Scanning a `folder:PATH` dataset: its classes and files, each file's header (is it an image, its size, gray or
colour), kept on disk for the next run.

No pixel is decoded here: a folder's first run decodes each file once, when its images are needed (a truncated
file passes the scan and is skipped, and said, when it fails to decode). The results are kept, one JSON file per
folder, under the decoded-data cache: each file's result is reused while its size and modification time are
unchanged, so a rerun opens no file and an added or changed file is the only one read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from cnnlab.data.images import IMAGE_EXTENSIONS, Small, peek_files
from cnnlab.data.loader import CHUNK, map_in_order
from cnnlab.data.paths import decoded_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_path

SCAN_FORMAT = 2  # bump when a record's layout or meaning changes, so old scans are ignored
VAL_NAMES = ("val", "valid", "validation")
NOT_AN_IMAGE = "not an image file (unknown extension)"

Stamp = tuple[int, int]  # (size in bytes, modification time in ns)


@dataclass
class FolderScan:
    """The files of one folder dataset, by split, with their class indices."""

    root: Path
    classes: tuple[str, ...]
    # split -> files ("train", and "val"/"test" when the folder has them), as strings: a Path object per file would
    # be most of a large folder's scan in memory, and work for the garbage collector for the whole run
    files: dict[str, list[str]]
    targets: dict[str, list[int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)
    gray: bool = False  # every image is single-channel
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # split -> each file's (H, W), upright
    key: str = ""  # a hash of every file's split, class, path, size and modification time (listing_key)
    kept: dict[str, Small] = field(default_factory=dict, repr=False)  # small images this scan decoded, by path,
    # until their decode takes them (in a `listed_once` block only: dropped when it ends)


class Entry(NamedTuple):
    """One file found in a class folder: where, its class, and its stamp (None when stat fails: a broken link)."""

    path: str
    rel: str  # relative to the dataset's root, as the scan cache names it
    label: int
    stamp: Stamp | None
    image: bool  # an image file extension


def scan_folder(root: Path) -> FolderScan:
    """Find the classes and image files under `root` (class folders, or train/ + val/ and/or test/).

    Every file is listed and stat-ed on each call (once in a `listed_once` block); a file's header is read only
    when the scan cache has no result for its current size and modification time. Files that are not images are
    printed (path, reason) on every run.
    """
    root = Path(root).expanduser().resolve()
    pinned = _LISTED.get()
    if pinned is not None and root in pinned:
        return pinned[root]
    scan = _scan_now(root)
    if pinned is not None:
        pinned[root] = scan
    return scan


@contextmanager
def listed_once() -> Iterator[None]:
    """Within this block a folder is listed once: what asks for its scan again (a run's profile, then its train,
    val and test splits) gets that same scan, so all of them see the same files, and a large folder is not walked
    four times; a first scan keeps the pixels of small images for the decode that follows (each file opened once),
    until the block ends. Outside it, every call lists the folder afresh (a notebook sees the files it just added)."""
    token = _LISTED.set({})
    try:
        yield
    finally:
        for scan in _LISTED.get().values():
            scan.kept.clear()
        _LISTED.reset(token)


_LISTED: ContextVar[dict[Path, FolderScan] | None] = ContextVar("cnnlab_listed_once", default=None)


def _scan_now(root: Path) -> FolderScan:
    if not root.is_dir():
        raise CnnlabError(f"{root} is not a folder: folder:PATH needs a folder with one sub-folder per class")
    layout = split_folders(root)
    classes = tuple(d.name for d in class_dirs(layout["train"]))
    if len(classes) < 2:
        raise CnnlabError(
            f"{layout['train']} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}): a classifier "
            f"needs at least two, one sub-folder per class (e.g. {root}/cats/, {root}/dogs/)"
        )
    listing = {split: list_split(root, folder, classes) for split, folder in layout.items()}
    key = listing_key(root, listing)
    if key not in _MEMO:  # an unchanged folder, asked again in one process: its headers are not looked up again
        while len(_MEMO) >= MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _scan(root, classes, listing, key)
    return _MEMO[key]


MEMO_SIZE = 4
_MEMO: dict[str, FolderScan] = {}
# A first scan decodes images this small as it reads their headers, for the decode that follows in the same run:
# opening such a file costs more than decoding it (benchmarks/README.md, issue 29). At most KEEP_BYTES are kept.
SMALL_PIXELS = 64 * 64
KEEP_BYTES = 256 << 20


def split_folders(root: Path) -> dict[str, Path]:
    """split -> folder: train/ with val/ (or valid/, validation/) and test/ when present, else `root` for all."""
    if not (root / "train").is_dir():
        return {"train": root}
    layout = {"train": root / "train"}
    for name in VAL_NAMES:
        if (root / name).is_dir():
            layout["val"] = root / name
            break
    if (root / "test").is_dir():
        layout["test"] = root / "test"
    return layout


def class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_split(root: Path, folder: Path, classes: tuple[str, ...]) -> list[Entry]:
    """Every file of one split's class folders, in a fixed order, with its stamp (plain strings: this runs on
    every call, and pathlib would be most of its time)."""
    dirs = class_dirs(folder)
    extra = sorted({d.name for d in dirs} - set(classes))
    if extra:
        raise CnnlabError(f"{folder} has class folders not in train/: {extra}")
    entries: list[Entry] = []
    for d in dirs:
        walk_files(str(d), d.relative_to(root).as_posix(), classes.index(d.name), entries)
    return entries


def walk_files(folder: str, rel: str, label: int, out: list[Entry]) -> None:
    """Append the files under `folder` to `out`, each folder's entries by name (so in the order of their relative
    paths' parts); hidden ones skipped; links to files are followed, links to folders are not (no endless walk), a
    broken link is a file whose stat fails."""
    try:
        with os.scandir(folder) as it:
            found = sorted(it, key=attrgetter("name"))
    except OSError:
        return
    for e in found:
        name = e.name
        if name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            walk_files(e.path, f"{rel}/{name}", label, out)
            continue
        dot = name.rfind(".")
        image = dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS
        try:
            st = e.stat()
        except OSError:  # a broken link, or a link to itself: listed, so that it is reported
            if e.is_symlink():
                out.append(Entry(e.path, f"{rel}/{name}", label, None, image))
            continue
        if stat.S_ISREG(st.st_mode):
            out.append(Entry(e.path, f"{rel}/{name}", label, (st.st_size, st.st_mtime_ns), image))


def listing_key(root: Path, listing: dict[str, list[Entry]]) -> str:
    """A hash of every file's split, class, path, size and modification time."""
    h = hashlib.sha1(f"cnnlab-scan-{SCAN_FORMAT}|{root}".encode())
    for split, entries in listing.items():
        h.update("".join(f"{split}|{e.label}|{e.rel}|{e.stamp}\n" for e in entries).encode())
    return h.hexdigest()[:20]


def _scan(root: Path, classes: tuple[str, ...], listing: dict[str, list[Entry]], key: str) -> FolderScan:
    """Results for every file (from the scan cache, else read from its header), gathered into a FolderScan."""
    known = load_records(root)
    records: dict[str, list[Any]] = {}
    todo = []
    for entries in listing.values():
        for e in entries:
            if not e.image:
                continue
            old = known.get(e.rel)
            if e.stamp is not None and old is not None and tuple(old[:2]) == e.stamp:
                records[e.rel] = old
            else:
                todo.append(e)
    scan = FolderScan(root, classes, {}, {}, gray=True, key=key)
    room = KEEP_BYTES if _LISTED.get() is not None else 0  # for the pixels of small images, kept for the decode

    def calls():  # read lazily, a few chunks ahead of the results: the room left decides what the next one keeps
        for i in range(0, len(todo), CHUNK):
            yield [e.path for e in todo[i: i + CHUNK]], SMALL_PIXELS if room > 0 else 0

    results = map_in_order(peek_files, calls(), len(todo), processes=True)
    for i, chunk in enumerate(results):
        for e, result in zip(todo[i * CHUNK: (i + 1) * CHUNK], chunk):
            if isinstance(result, str):
                records[e.rel] = [*(e.stamp or (-1, -1)), result]
                continue
            header, small = result
            if small is not None and room > 0:
                scan.kept[e.path] = small
                room -= small[0].nbytes
            records[e.rel] = [*(e.stamp or (-1, -1)), *header]
    keep = {rel: r for rel, r in records.items() if r[0] >= 0}  # broken links are never kept: checked each run
    if keep != known:
        save_records(root, keep)
    for split, entries in listing.items():
        _gather(scan, split, entries, records)
    _report(scan, listing)
    return scan


def _gather(scan: FolderScan, split: str, entries: list[Entry], records: dict[str, list[Any]]) -> None:
    files, targets, sizes = [], [], []
    gray = True
    for e in entries:
        record = records[e.rel] if e.image else [-1, -1, NOT_AN_IMAGE]
        if len(record) == 3:
            scan.skipped.append((Path(e.path), record[2]))
            continue
        files.append(e.path)
        targets.append(e.label)
        sizes.append((record[3], record[4]))
        gray = gray and record[2]
    scan.files[split] = files
    scan.targets[split], scan.sizes[split] = targets, sizes
    scan.gray = scan.gray and bool(gray)


def _report(scan: FolderScan, listing: dict[str, list[Entry]]) -> None:
    """Bad files listed by path; a clear error for no readable image at all, or a class with none."""
    root = scan.root
    if not scan.files["train"] and scan.skipped:
        path, reason = scan.skipped[0]
        raise CnnlabError(f"no readable image in {root}: {len(scan.skipped)} file(s) found, none decodes (e.g. "
                          f"{path}: {reason}); put images (PNG, JPEG, BMP, TIFF, WebP, ...) in its class folders")
    if scan.skipped:
        print(f"skipped {len(scan.skipped)} unreadable file(s) in {root}:", file=sys.stderr)
        for path, reason in scan.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    for split, folder in split_folders(root).items():
        present = {scan.classes.index(d.name) for d in class_dirs(folder)}
        for label in sorted(present - set(scan.targets[split])):
            bad = sum(1 for e in listing[split] if e.label == label)
            raise CnnlabError(f"class folder {folder / scan.classes[label]} has no readable images: put images in "
                              f"it or remove it" + (f" ({bad} unreadable files)" if bad else ""))
    if len(scan.files) == 1:  # one folder for everything: its splits are carved from train
        counts = Counter(scan.targets["train"])
        lonely = [scan.classes[c] for c in sorted(counts) if counts[c] == 1]
        if len(lonely) == 1:
            print(f"warning: class {lonely[0]!r} has one image in {root}: it cannot be in both the training and the "
                  f"test split (add images to {root / lonely[0]})", file=sys.stderr)
        elif lonely:
            names = ", ".join(repr(c) for c in lonely[:8]) + (", ..." if len(lonely) > 8 else "")
            print(f"warning: {len(lonely)} classes have one image each in {root} ({names}): such a class cannot be "
                  f"in both the training and the test split (add images to their folders)", file=sys.stderr)


# ---------------------------------------------------------------- the scan cache (one JSON file per folder)


def records_path(root: Path) -> Path:
    return decoded_cache_dir() / f"scan-{hashlib.sha1(str(root).encode()).hexdigest()[:20]}.json"


def load_records(root: Path) -> dict[str, list[Any]]:
    """rel path -> [size, mtime_ns, is_gray, H, W] or [size, mtime_ns, reason]; {} when absent, unreadable or not
    exactly what a scan writes (then the folder is scanned afresh and the file replaced)."""
    try:
        data = json.loads(records_path(root).read_text())
    except (OSError, ValueError):
        return {}
    if not (isinstance(data, dict) and data.get("format") == SCAN_FORMAT and data.get("root") == str(root)
            and isinstance(data.get("files"), dict)):
        return {}
    files = data["files"]
    return files if all(_valid(r) for r in files.values()) else {}


def _valid(r: Any) -> bool:
    """[size, mtime_ns, is_gray, H, W] or [size, mtime_ns, reason] (unrolled: this runs for every file of a folder)."""
    if type(r) is not list:
        return False
    if len(r) == 5:
        size, mtime, gray, h, w = r
        return (type(size) is int and type(mtime) is int and size >= 0 and mtime >= 0 and type(gray) is bool
                and type(h) is int and type(w) is int and h > 0 and w > 0)
    if len(r) == 3:
        size, mtime, reason = r
        return type(size) is int and type(mtime) is int and size >= 0 and mtime >= 0 and type(reason) is str
    return False


def save_records(root: Path, records: dict[str, list[Any]]) -> None:
    """Written atomically; a read-only or full cache folder only costs the next run its speed."""
    try:
        with atomic_path(records_path(root)) as tmp:
            tmp.write_text(json.dumps({"format": SCAN_FORMAT, "root": str(root), "files": records}))
    except OSError:
        pass
