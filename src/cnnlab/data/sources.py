"""Readers for the built-in datasets: each returns the official train and test splits as uint8 tensors."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cnnlab.data.info import DatasetInfo
from cnnlab.errors import CnnlabError


class DatasetNotFoundError(CnnlabError):
    """The dataset's files are not in the data directory."""


@dataclass
class Arrays:
    """A dataset's official splits: images (N, C, H, W) uint8, targets (N,) int64."""

    train_images: torch.Tensor
    train_targets: torch.Tensor
    test_images: torch.Tensor
    test_targets: torch.Tensor


# ---------------------------------------------------------------- the MNIST family (IDX files)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_targets": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_targets": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not: magic 0x0000 08 NDIM, NDIM sizes, bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise CnnlabError(f"{path}: cannot read ({exc}); delete it and download again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise CnnlabError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise CnnlabError(f"{path}: truncated IDX file ({len(data) - offset} bytes for shape {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def idx_file(raw: Path, stem: str) -> Path | None:
    """The decompressed file if present, else the .gz, else None."""
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist_family_files(info: DatasetInfo, data_dir: Path) -> list[Path]:
    """The four IDX files of an MNIST-family dataset, or a DatasetNotFoundError naming what is missing."""
    raw = data_dir / info.source_folder / "raw"
    found = {k: idx_file(raw, stem) for k, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, v in found.items() if v is None]
    if missing:
        raise DatasetNotFoundError(
            f"{info.name} is not in {raw}: missing {', '.join(missing)} (each may also be .gz). "
            f"Add --download (download=True in Python) to fetch it, or point --data-dir / CNNLAB_DATA "
            f"at a folder that holds {info.source_folder}/raw/."
        )
    return [found[k] for k in MNIST_FILES]


def read_mnist_family(info: DatasetInfo, data_dir: Path) -> Arrays:
    """The four IDX files as tensors."""
    files = mnist_family_files(info, data_dir)
    ti, tt, vi, vt = (torch.from_numpy(read_idx(f).copy()) for f in files)
    if len(ti) != len(tt) or len(vi) != len(vt):
        raise CnnlabError(f"{info.name}: image and label counts differ in {files[0].parent}")
    return Arrays(ti[:, None], tt.long(), vi[:, None], vt.long())


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 (python pickle batches)


class CifarUnpickler(pickle.Unpickler):
    """Unpickles exactly what a CIFAR batch holds (dicts, lists, strings, bytes, numbers, numpy arrays) and refuses
    anything else: a pickle can name any function to call, so a crafted batch file could otherwise run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),  # numpy 1 and 2
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # arrays in protocol 5
        ("_codecs", "encode"),  # how protocol 2 pickles store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which no CIFAR batch contains")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CnnlabError(f"{path} is not a CIFAR batch file ({exc}); refused, nothing in it was run") from None
    if not isinstance(batch, dict):
        raise CnnlabError(f"{path} is not a CIFAR batch file (it holds a {type(batch).__name__}, not a dict)")
    return batch


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """(images (N, 3, 32, 32) uint8, labels) of one batch file, its shape and labels checked."""
    batch = _unpickle(path)
    try:
        data, labels = np.asarray(batch["data"]), [int(v) for v in batch[label_key]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a CIFAR batch file (no usable 'data' and {label_key!r}: {exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise CnnlabError(f"{path} is not a CIFAR batch file: 'data' is {data.dtype} of shape {data.shape} for "
                          f"{len(labels)} labels; expected uint8 of shape (N, 3072) with N labels")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_batches(paths: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for p in paths:
        data, targets = _cifar_batch(p, label_key)
        images.append(data)
        labels.extend(targets)
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def cifar_files(info: DatasetInfo, data_dir: Path) -> list[Path]:
    """The pickle batches of CIFAR-10/100, or a DatasetNotFoundError naming what is missing."""
    folder, train, test, _ = CIFAR_LAYOUT[info.name]
    paths = [data_dir / folder / f for f in train + test]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{info.name} is not in {data_dir / folder}: missing {', '.join(missing)}. "
            f"Add --download (download=True in Python) to fetch it, or point --data-dir / CNNLAB_DATA at a "
            f"folder that holds {folder}/ (extracted from the python version of the archive)."
        )
    return paths


def read_cifar(info: DatasetInfo, data_dir: Path) -> Arrays:
    """CIFAR's python pickle batches (read directly: torchvision's class insists on the official checksums)."""
    folder, train, test, label_key = CIFAR_LAYOUT[info.name]
    paths = cifar_files(info, data_dir)
    ti, tt = _cifar_batches(paths[: len(train)], label_key)
    vi, vt = _cifar_batches(paths[len(train) :], label_key)
    return Arrays(ti, tt, vi, vt)


# ---------------------------------------------------------------- SVHN (MATLAB files)


def svhn_files(info: DatasetInfo, data_dir: Path) -> list[Path]:
    paths = [data_dir / "svhn" / "train_32x32.mat", data_dir / "svhn" / "test_32x32.mat"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"svhn is not in {data_dir / 'svhn'}: missing {', '.join(missing)}. Add --download (download=True "
            f"in Python) to fetch it, or point --data-dir / CNNLAB_DATA at a folder that holds svhn/."
        )
    return paths


def read_svhn(info: DatasetInfo, data_dir: Path) -> Arrays:
    """SVHN's cropped-digit .mat files; label 10 means the digit 0."""
    from scipy.io import loadmat

    out = []
    for path in svhn_files(info, data_dir):
        mat = loadmat(path)
        images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
        targets = torch.from_numpy(mat["y"].astype(np.int64).flatten()) % 10
        out += [images, targets]
    return Arrays(*out)


# ---------------------------------------------------------------- digits (bundled with scikit-learn)


def read_digits(info: DatasetInfo, data_dir: Path) -> Arrays:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to 0..255), split 80/20, stratified, seed 0."""
    from cnnlab.data.paths import sklearn_data_file
    from cnnlab.data.split import stratified_split

    path = sklearn_data_file("data", "digits.csv.gz")
    if path is not None:  # the file load_digits() reads, read as it does: 64 pixels and the label per row
        rows = np.loadtxt(path, delimiter=",")
        pixels, labels = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        pixels, labels = d.images, d.target
    images = torch.from_numpy(np.round(pixels * (255.0 / 16.0)).astype(np.uint8))[:, None]
    targets = torch.from_numpy(labels.astype(np.int64))
    train, test = stratified_split(targets, 0.2, seed=0)
    return Arrays(images[train], targets[train], images[test], targets[test])


# ---------------------------------------------------------------- downloads (torchvision's downloaders)


def download(info: DatasetInfo, data_dir: Path) -> None:
    """Fetch a dataset with torchvision's downloader into the layout the readers expect."""
    import torchvision.datasets as tvd

    data_dir.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], object]] = {
        "mnist": lambda: tvd.MNIST(str(data_dir), download=True),
        "fashion-mnist": lambda: tvd.FashionMNIST(str(data_dir), download=True),
        "kmnist": lambda: tvd.KMNIST(str(data_dir), download=True),
        "cifar10": lambda: tvd.CIFAR10(str(data_dir), download=True),
        "cifar100": lambda: tvd.CIFAR100(str(data_dir), download=True),
        "svhn": lambda: [tvd.SVHN(str(data_dir / "svhn"), split=s, download=True) for s in ("train", "test")],
    }
    if info.name not in makers:
        return
    try:
        makers[info.name]()
    except Exception as exc:  # network errors come in many types (URLError, socket, HTTP, checksum)
        raise CnnlabError(
            f"downloading {info.name} into {data_dir} failed: {exc}. Check the network, or copy the files "
            f"there by hand (see `cnnlab datasets` for the expected layout)."
        ) from None
