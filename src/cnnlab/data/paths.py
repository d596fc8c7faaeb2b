"""Where datasets and decoded caches live: --data-dir > $CNNLAB_DATA > the user cache directory."""

from __future__ import annotations

import importlib.util
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


def package_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed top-level package, found without importing it; None where there is none."""
    spec = importlib.util.find_spec(package)  # a top-level package's spec: nothing is imported
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder, *parts)
        if path.is_file():
            return path
    return None


def sklearn_data_file(*parts: str) -> Path | None:
    """A file scikit-learn ships under sklearn/datasets/ (its digits, its sample photos), found without importing
    sklearn.datasets, whose imports (scipy.stats and more) take 1.5 s; None where this scikit-learn has no such file."""
    return package_file("sklearn", "datasets", *parts)
