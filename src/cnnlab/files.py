"""Atomic writes: a temp file in the same folder, flushed to disk, then renamed over the target."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


def _file_mode() -> int:
    """The mode a plain `open()` would give a new file (0o666 minus the umask), read once at import."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


STALE_AFTER_S = 60.0  # a temp file this old is a killed writer's, not one being written now


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path` in one rename, on failure it is removed.

    Temp files of earlier writes of `path` that a killed process left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600 files; results should be as readable as any other file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_orphans(path: Path, suffix: str = ".tmp") -> None:
    """Delete `.<name>.*<suffix>` files beside `path` older than STALE_AFTER_S: left by a writer that was killed."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"):
        try:
            if now - tmp.stat().st_mtime > STALE_AFTER_S:
                tmp.unlink()
        except OSError:  # gone already, or not ours to delete: it costs only disk space
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, atomically: a reader (or a crash) never sees a partial file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON (indented, keys in insertion order) atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, default=str) + "\n", path)
