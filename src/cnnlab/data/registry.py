"""The dataset registry: `list_datasets`, `get_dataset_info`, `get_dataset`, with a seeded validation split."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from cnnlab.data import sources
from cnnlab.data.cache import cached, source_key
from cnnlab.data.dataset import ImageData
from cnnlab.data.info import DatasetInfo
from cnnlab.data.paths import resolve_data_dir
from cnnlab.data.split import stratified_split
from cnnlab.errors import CnnlabError

SPLITS = ("train", "val", "test")

CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class Entry:
    info: DatasetInfo
    read: Callable[[DatasetInfo, Path], sources.Arrays]
    files: Callable[[DatasetInfo, Path], list[Path]] | None  # the source files (None: bundled)


_ENTRIES: dict[str, Entry] = {}


def _add(info: DatasetInfo, read, files) -> None:
    _ENTRIES[info.name] = Entry(info, read, files)


_add(
    DatasetInfo(
        "digits", DIGITS, 1, (8, 8), (0.3053,), (0.3759,),
        "1,797 8x8 handwritten digits bundled with scikit-learn: works offline on a fresh machine",
        "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), via sklearn.datasets.load_digits",
        {"train": 1438, "test": 359}, dark_background=True,
    ),
    sources.read_digits, None,
)
_add(
    DatasetInfo(
        "mnist", DIGITS, 1, (28, 28), (0.1307,), (0.3081,),
        "70,000 28x28 handwritten digits", "LeCun, Cortes, Burges: The MNIST database",
        {"train": 60000, "test": 10000}, dark_background=True, source_folder="MNIST",
    ),
    sources.read_mnist_family, sources.mnist_family_files,
)
_add(
    DatasetInfo(
        "fashion-mnist",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        1, (28, 28), (0.2860,), (0.3530,),
        "70,000 28x28 Zalando article images", "Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747",
        {"train": 60000, "test": 10000}, flip_ok=True, dark_background=True, source_folder="FashionMNIST",
    ),
    sources.read_mnist_family, sources.mnist_family_files,
)
_add(
    DatasetInfo(
        "kmnist", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), 1, (28, 28), (0.1918,), (0.3483,),
        "70,000 28x28 cursive Japanese (Kuzushiji) characters", "Clanuwat et al. 2018, arXiv:1812.01718",
        {"train": 60000, "test": 10000}, dark_background=True, source_folder="KMNIST",
    ),
    sources.read_mnist_family, sources.mnist_family_files,
)
_add(
    DatasetInfo(
        "cifar10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "60,000 32x32 colour photos in 10 classes", "Krizhevsky 2009, 'Learning multiple layers of features'",
        {"train": 50000, "test": 10000}, flip_ok=True, source_folder="cifar-10-batches-py",
    ),
    sources.read_cifar, sources.cifar_files,
)
_add(
    DatasetInfo(
        "cifar100", tuple(CIFAR100_CLASSES), 3, (32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        "60,000 32x32 colour photos in 100 classes", "Krizhevsky 2009, 'Learning multiple layers of features'",
        {"train": 50000, "test": 10000}, flip_ok=True, source_folder="cifar-100-python",
    ),
    sources.read_cifar, sources.cifar_files,
)
_add(
    DatasetInfo(
        "svhn", DIGITS, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        "99,289 32x32 house-number digits from Street View", "Netzer et al. 2011, NIPS workshop",
        {"train": 73257, "test": 26032}, source_folder="svhn",
    ),
    sources.read_svhn, sources.svhn_files,
)


def list_datasets() -> list[str]:
    """Names of the built-in datasets (plus `folder:PATH` for your own images)."""
    return list(_ENTRIES)


def get_dataset_info(name: str) -> DatasetInfo:
    """The info of a built-in dataset; an unknown name lists the close ones."""
    if name in _ENTRIES:
        return _ENTRIES[name].info
    close = difflib.get_close_matches(name, list(_ENTRIES), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise CnnlabError(
        f"unknown dataset {name!r}.{hint} Known: {', '.join(_ENTRIES)}, or folder:PATH for your own images."
    )


def source_files(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files a dataset is read from (raises DatasetNotFoundError naming missing ones)."""
    entry = _ENTRIES[name]
    return entry.files(entry.info, resolve_data_dir(data_dir)) if entry.files else []


def is_present(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether the dataset can be loaded without a download."""
    try:
        source_files(name, data_dir)
        return True
    except sources.DatasetNotFoundError:
        return False


@functools.lru_cache(maxsize=4)
def _arrays(name: str, data_dir: Path) -> sources.Arrays:
    entry = _ENTRIES[name]
    if entry.files is None:
        return entry.read(entry.info, data_dir)
    files = entry.files(entry.info, data_dir)
    tensors = cached(name, source_key(files), lambda: vars(entry.read(entry.info, data_dir)))
    return sources.Arrays(**tensors)


def default_val_size(info: DatasetInfo, n_train: int) -> int:
    """5,000 images for the MNIST family (the usual carve-out), else 10% of the training split."""
    return 5000 if info.source_folder in ("MNIST", "FashionMNIST", "KMNIST") else round(0.1 * n_train)


def get_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = False,
    *,
    val_size: int | float | None = None,
    split_seed: int = 0,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    stream: bool = False,
):
    """One split of a dataset: "train" (minus the validation carve-out), "val" or "test".

    `val_size` is a count or a fraction of the training split (0 disables validation); the carve-out is
    stratified and fixed by `split_seed`, so it never changes between runs. `image_size`/`channels`/`stream` only
    matter for `folder:PATH` datasets, whose images are decoded at that size (`stream`: from disk as needed,
    never all in memory).
    """
    if split not in SPLITS:
        raise CnnlabError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if name.startswith("folder:"):
        from cnnlab.data.folder import get_folder_dataset

        return get_folder_dataset(name[len("folder:") :], split, val_size=val_size, split_seed=split_seed,
                                  image_size=image_size, channels=channels, stream=stream)
    info = get_dataset_info(name)
    root = resolve_data_dir(data_dir)
    if download and not is_present(name, root):
        sources.download(info, root)
    arrays = _arrays(name, root)
    if split == "test":
        return ImageData(arrays.test_images, arrays.test_targets, info, "test")
    n_train = len(arrays.train_targets)
    holdout = default_val_size(info, n_train) if val_size is None else val_size
    if not holdout:
        if split == "val":
            raise CnnlabError(f"{name}: there is no validation split when val_size=0")
        # All of the training split: the cached tensors themselves, not an identical copy (47 MB for MNIST).
        return ImageData(arrays.train_images, arrays.train_targets, info, "train", torch.arange(n_train))
    keep, held = stratified_split(arrays.train_targets, holdout, seed=split_seed)
    if split == "val":
        return ImageData(arrays.train_images[held], arrays.train_targets[held], info, "val", held)
    return ImageData(arrays.train_images[keep], arrays.train_targets[keep], info, "train", keep)


def with_classes(info: DatasetInfo, classes: tuple[str, ...]) -> DatasetInfo:
    """A copy of `info` with other class names (e.g. read from a dataset's own metadata file)."""
    return replace(info, classes=classes)
