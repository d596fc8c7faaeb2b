"""Where datasets and decoded caches live: --data-dir > $CNNLAB_DATA > the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """cnnlab's cache root: $CNNLAB_CACHE, else $XDG_CACHE_HOME/cnnlab, else ~/.cache/cnnlab."""
    if os.environ.get("CNNLAB_CACHE"):
        return Path(os.environ["CNNLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cnnlab"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $CNNLAB_DATA, else <user cache>/data."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get("CNNLAB_DATA"):
        return Path(os.environ["CNNLAB_DATA"]).expanduser().resolve()
    return (user_cache_dir() / "data").resolve()


def decoded_cache_dir() -> Path:
    """Folder for decoded uint8 tensors (kept apart from the data, which may be read-only)."""
    return user_cache_dir() / "decoded"
