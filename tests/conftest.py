"""Shared fixtures: the real data directory (required, never skipped) and a quiet matplotlib."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Decoded-data caches go to a fresh folder per test session, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CNNLAB_CACHE", str(tmp_path_factory.mktemp("cnnlab-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; a missing folder fails the test, it does not skip it."""
    value = os.environ.get("CNNLAB_DATA")
    assert value, "set CNNLAB_DATA to the shared data folder (e.g. CNNLAB_DATA=../shared/data)"
    path = Path(value).expanduser().resolve()
    assert (path / "MNIST" / "raw").is_dir(), f"CNNLAB_DATA={value} has no MNIST/raw folder"
    return path


@pytest.fixture(scope="session")
def photos_dir(data_dir: Path) -> Path:
    """The shared sample photographs."""
    path = data_dir / "images"
    assert path.is_dir() and any(path.iterdir()), f"no sample photos in {path}"
    return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet trained on the bundled digits for a few epochs (about 95% test accuracy), shared by tests."""
    import cnnlab

    out = tmp_path_factory.mktemp("runs") / "lenet-digits"
    run = cnnlab.train(model="lenet", dataset="digits", epochs=4, seed=0, out=str(out), quiet=True)
    assert run.results["test_acc"] > 0.85
    return out
