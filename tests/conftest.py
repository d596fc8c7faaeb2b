"""Shared fixtures: the real datasets (found, or fetched once, never skipped), sample photos from scikit-image,
a quiet matplotlib, and a small trained run.

Where the MNIST and Fashion-MNIST files come from, first match wins: $CNNLAB_DATA, then `../shared/data` beside
the checkout, then the user cache (`~/.cache/cnnlab/data`); with none of them, torchvision's downloaders fetch
them once into the user cache. Offline with the files nowhere, the tests that need them fail with one line saying
what to put where.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable, Iterable

import matplotlib
import pytest
import torch

from cnnlab.data.paths import user_cache_dir

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")  # the `cnnlab` processes some tests start draw headless too
torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parent.parent
TEST_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # name -> folder, in torchvision's layout
USER_DATA = user_cache_dir() / "data"  # read before the session points the cache elsewhere (_private_cache)
# The photos the tests use, all bundled with scikit-image (skimage.data), written once per session.
PHOTOS = {"astronaut.png": "astronaut", "camera.png": "camera", "chelsea.png": "chelsea", "coffee.png": "coffee",
          "rocket.jpg": "rocket"}


def data_places(env_value: str | None = None, checkout: Path = ROOT,
                cache: Path = USER_DATA) -> list[tuple[str, Path]]:
    """Where the test data may be, in the order they are tried."""
    places = [("$CNNLAB_DATA", Path(env_value).expanduser())] if env_value else []
    return places + [("../shared/data beside the checkout", checkout.parent / "shared" / "data"),
                     ("the user cache", cache)]


def find_test_data(places: Iterable[tuple[str, Path]], cache: Path,
                   fetch: Callable[[str, Path], None] | None = None) -> Path:
    """The first place holding every test dataset; else the cache, filled by `fetch` (torchvision's downloaders).

    Raises RuntimeError with one line saying what to put where when nothing is found and fetching fails.
    """
    from cnnlab.data import is_present

    places = list(places)
    for _, path in places:
        if all(is_present(name, path) for name in TEST_DATASETS):
            return path.resolve()
    fetch = fetch or _download
    try:
        for name in TEST_DATASETS:
            if not is_present(name, cache):
                fetch(name, cache)
    except Exception as exc:  # offline, a proxy, a full disk: all end in the same instruction
        folders = " and ".join(f"{f}/raw/" for f in TEST_DATASETS.values())
        where = "; ".join(f"{label} ({path})" for label, path in places)
        why = " ".join(str(exc).split())[:300]  # one line, whatever the downloader said
        raise RuntimeError(
            f"the tests need MNIST and Fashion-MNIST ({folders} with the IDX files, torchvision's layout) in one of: "
            f"{where}; downloading them into {cache} failed ({type(exc).__name__}: {why}): copy them there, or set "
            f"CNNLAB_DATA to a folder that holds them") from None
    return cache.resolve()


def _download(name: str, cache: Path) -> None:
    from cnnlab.data import get_dataset_info
    from cnnlab.data.sources import download

    print(f"downloading {name} into {cache} (once; later runs read it from there)")
    download(get_dataset_info(name), cache)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Decoded-data caches go to a fresh folder per test session, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CNNLAB_CACHE", str(tmp_path_factory.mktemp("cnnlab-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST/Fashion-MNIST folder (set as $CNNLAB_DATA for the session); missing data fails, never skips."""
    try:
        path = find_test_data(data_places(os.environ.get("CNNLAB_DATA")), USER_DATA)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("CNNLAB_DATA", str(path))  # for code under test that reads the default data directory
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """astronaut.png, camera.png, chelsea.png, coffee.png and rocket.jpg from scikit-image's bundled samples."""
    import numpy as np
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name, attr in PHOTOS.items():
        Image.fromarray(np.asarray(getattr(skimage.data, attr)())).save(folder / name, quality=95)
    return folder


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet trained on the bundled digits for a few epochs (about 95% test accuracy), shared by tests."""
    import cnnlab

    out = tmp_path_factory.mktemp("runs") / "lenet-digits"
    run = cnnlab.train(recipe="digits", epochs=4, seed=0, out=str(out), quiet=True)
    assert run.results["test_acc"] > 0.85
    return out


@pytest.fixture(scope="session")
def fastnet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fastnet (BatchNorm, stride 2, a global max pool) trained on the bundled digits for two epochs."""
    import cnnlab

    out = tmp_path_factory.mktemp("runs") / "fastnet-digits"
    cnnlab.train(model="fastnet", dataset="digits", epochs=2, seed=0, out=str(out), quiet=True)
    return out


@pytest.fixture(scope="session")
def lite0_run(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo model: EfficientNet-Lite0's ImageNet features (offline, the `pretrained` extra) with a head fitted on
    crops of three sample photos (astronaut, chelsea, coffee) at 96x96."""
    import random

    import cnnlab
    from PIL import Image

    root = tmp_path_factory.mktemp("photo-crops")
    rng = random.Random(0)
    for name in ("astronaut", "chelsea", "coffee"):
        img = Image.open(photos_dir / f"{name}.png").convert("RGB")
        (root / name).mkdir()
        w, h = img.size
        for k in range(10):
            s = int(min(w, h) * rng.uniform(0.3, 0.6))
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            img.crop((x, y, x + s, y + s)).resize((64, 64), Image.Resampling.BILINEAR).save(root / name / f"{k}.png")
    out = tmp_path_factory.mktemp("runs") / "lite0-photos"
    cnnlab.train(model="efficientnet_lite0", dataset=f"folder:{root}", input_size="96x96", weights="DEFAULT",
                 feature_extraction=True, epochs=3, seed=0, out=str(out), quiet=True)
    return out


class SignalAt:
    """A callback that sends this process a real signal (Ctrl-C unless told otherwise) after the given step."""

    def __init__(self, step: int, sig: int = signal.SIGINT) -> None:
        self.step, self.sig = step, sig

    def on_step_end(self, step: int, loss: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.sig)
