"""A disk cache of decoded tensors, keyed by the source files (path, size, mtime), written atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from cnnlab.data.paths import decoded_cache_dir
from cnnlab.files import atomic_save

CACHE_FORMAT = 2  # bump when the decoded layout changes, so old caches are ignored


def source_key(files: Iterable[Path], **params: Any) -> str:
    """A hash of each file's path, size and modification time plus `params`: a changed file changes the key."""
    h = hashlib.sha1(f"cnnlab-cache-{CACHE_FORMAT}".encode())
    for f in files:
        st = Path(f).stat()
        h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def cached(name: str, key: str, build: Callable[[], dict[str, torch.Tensor]],
           valid: Callable[[dict[str, torch.Tensor]], bool] | None = None) -> dict[str, torch.Tensor]:
    """Load `<cache>/<name>-<key>.pt` (if `valid` accepts it), or build it, save it atomically and return it."""
    path = decoded_cache_dir() / f"{name}-{key}.pt"
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
            if valid is None or valid(data):
                return data
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only cache folder: rebuilt in memory each time
            pass
    data = build()
    try:
        atomic_save(data, path)
    except OSError:  # a read-only or full cache disk only costs speed, not correctness
        pass
    return data
