"""Datasets on the real MNIST files, CIFAR/SVHN in their real formats, folders of odd images, and the loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cnnlab.data import Augment, BatchLoader, Pipeline, get_dataset, get_dataset_info, parse_augment
from cnnlab.data.augment import affine_grid, random_translate
from cnnlab.data.cache import source_key
from cnnlab.data.sources import DatasetNotFoundError, read_idx
from cnnlab.data.split import stratified_split
from cnnlab.errors import CnnlabError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- real MNIST / Fashion-MNIST


def test_mnist_splits_sizes_counts_and_range(data_dir: Path) -> None:
    train = get_dataset("mnist", "train", data_dir)
    val = get_dataset("mnist", "val", data_dir)
    test = get_dataset("mnist", "test", data_dir)
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.images.shape == (55000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255
    assert torch.bincount(test.targets).tolist() == MNIST_TEST_COUNTS
    assert (torch.bincount(train.targets) + torch.bincount(val.targets)).tolist() == MNIST_TRAIN_COUNTS
    # Stratified: every class keeps its share of the 5,000 within one image.
    expected = torch.tensor(MNIST_TRAIN_COUNTS) * 5000 / 60000
    assert (torch.bincount(val.targets) - expected).abs().max() <= 1


def test_mnist_train_and_val_are_disjoint_and_cover_the_training_set(data_dir: Path) -> None:
    train, val = get_dataset("mnist", "train", data_dir), get_dataset("mnist", "val", data_dir)
    a, b = set(train.indices.tolist()), set(val.indices.tolist())
    assert not a & b and len(a | b) == 60000
    again = get_dataset("mnist", "val", data_dir, split_seed=0)
    other = get_dataset("mnist", "val", data_dir, split_seed=1)
    assert torch.equal(again.indices, val.indices) and not torch.equal(other.indices, val.indices)


def test_mnist_gzip_and_decompressed_files_give_the_same_arrays(data_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (data_dir / "MNIST" / "raw").glob("*.gz"):
        (raw / gz.name).symlink_to(gz)
    from_gz = get_dataset("mnist", "test", tmp_path)
    plain = get_dataset("mnist", "test", data_dir)
    assert torch.equal(from_gz.images, plain.images) and torch.equal(from_gz.targets, plain.targets)


def test_fashion_mnist_has_balanced_classes(data_dir: Path) -> None:
    test = get_dataset("fashion-mnist", "test", data_dir)
    train = get_dataset("fashion-mnist", "train", data_dir)
    val = get_dataset("fashion-mnist", "val", data_dir)
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    assert (torch.bincount(train.targets) + torch.bincount(val.targets)).tolist() == [6000] * 10
    assert test.classes[0] == "T-shirt/top" and test.info.flip_ok


def test_idx_reader_rejects_truncated_file(tmp_path: Path) -> None:
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(10))
    with pytest.raises(CnnlabError, match="truncated"):
        read_idx(bad)


def test_offline_error_names_files_folder_and_flag(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset("fashion-mnist", "train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "--download" in msg and "CNNLAB_DATA" in msg


def test_batches_are_deterministic_for_a_seed(data_dir: Path) -> None:
    train = get_dataset("mnist", "val", data_dir)
    pipe = Pipeline.build(1, (1, 28, 28), train.info.mean, train.info.std)
    aug = Augment(translate=2, degrees=10, cutout=6)

    def first_batches(seed: int, epoch: int = 0):
        loader = BatchLoader(train, 128, pipe, augment=aug, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    a, b, c, d = first_batches(7), first_batches(7), first_batches(8), first_batches(7, epoch=1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][1], d[0][1])


def test_loader_resumes_mid_epoch_exactly(data_dir: Path) -> None:
    data = get_dataset("digits", "train")
    pipe = Pipeline.build(1, (1, 28, 28), data.info.mean, data.info.std)
    full = BatchLoader(data, 100, pipe, augment=Augment(translate=2), shuffle=True, seed=3)
    full.set_epoch(2)
    straight = list(full)
    part = BatchLoader(data, 100, pipe, augment=Augment(translate=2), shuffle=True, seed=3)
    part.set_epoch(2)
    it = iter(part)
    next(it), next(it), next(it)
    state = part.state_dict()
    resumed = BatchLoader(data, 100, pipe, augment=Augment(translate=2), shuffle=True, seed=3)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert state == {"epoch": 2, "batch": 3} and len(rest) == len(straight) - 3
    for (xa, ya), (xb, yb) in zip(straight[3:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_shards_across_ranks(data_dir: Path) -> None:
    data = get_dataset("digits", "train")
    pipe = Pipeline.build(1, (1, 8, 8), data.info.mean, data.info.std)
    shards = [BatchLoader(data, 64, pipe, shuffle=True, seed=1, rank=r, world_size=2).order() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(data) // 2
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_every_image_seen_once_per_epoch(data_dir: Path) -> None:
    data = get_dataset("digits", "test")
    pipe = Pipeline.build(1, (1, 8, 8), data.info.mean, data.info.std)
    ys = torch.cat([y for _, y in BatchLoader(data, 50, pipe, shuffle=True, seed=0)])
    assert torch.equal(torch.bincount(ys), torch.bincount(data.targets))


# ---------------------------------------------------------------- bundled digits


def test_digits_is_bundled_and_split_is_fixed_and_stratified() -> None:
    train, val, test = (get_dataset("digits", s) for s in ("train", "val", "test"))
    assert len(train) + len(val) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    assert torch.bincount(test.targets).min() >= 34  # about 20% of each ~180-image class
    assert torch.equal(get_dataset("digits", "test").targets, test.targets)


def test_scikit_learns_files_read_directly_equal_its_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The digits and the sample photos come from scikit-learn's files without importing sklearn.datasets (1.5 s);
    read so, they are its loaders' arrays, which are still used where the files are not found."""
    from cnnlab.conv.images import sample_image
    from cnnlab.data import paths
    from cnnlab.data.sources import read_digits

    def read() -> list[torch.Tensor]:
        digits = read_digits(get_dataset_info("digits"), Path("."))
        return [digits.train_images, digits.train_targets, digits.test_images, digits.test_targets,
                sample_image("china.jpg"), sample_image("flower.jpg", gray=True, size=64)]

    direct = read()
    assert paths.sklearn_data_file("data", "digits.csv.gz") is not None  # this scikit-learn has the files
    monkeypatch.setattr(paths, "sklearn_data_file", lambda *parts: None)
    assert all(torch.equal(a, b) for a, b in zip(direct, read(), strict=True))


def test_pipeline_resizes_digits_to_the_model_input() -> None:
    data = get_dataset("digits", "test")
    pipe = Pipeline.build(1, (3, 28, 28), data.info.mean, data.info.std)
    x, _ = next(iter(BatchLoader(data, 16, pipe)))
    assert x.shape == (16, 3, 28, 28)
    assert torch.allclose(x[:, 0], x[:, 1]) and pipe.mean == data.info.mean * 3


# ---------------------------------------------------------------- CIFAR and SVHN in their real formats


def _write_cifar(root: Path, name: str, per_batch: int) -> dict:
    rng = np.random.default_rng(0)
    folder, files, key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels"),
    }[name]
    (root / folder).mkdir(parents=True)
    written = {}
    for f in files:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10 if name == "cifar10" else 100, size=per_batch).tolist()
        with open(root / folder / f, "wb") as fh:
            pickle.dump({"data": data, key: labels, "batch_label": f}, fh)
        written[f] = (data, labels)
    return written


def test_cifar10_loader_reads_the_pickle_batch_format(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path, "cifar10", per_batch=20)
    train = get_dataset("cifar10", "train", tmp_path, val_size=0)
    test = get_dataset("cifar10", "test", tmp_path)
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # Row 3 of batch 2: 1024 red values, then green, then blue, each row-major 32x32.
    assert torch.equal(train.images[23], torch.from_numpy(data[3].reshape(3, 32, 32)))
    assert int(train.targets[23]) == labels[3]
    assert train.classes[3] == "cat" and train.info.flip_ok


def test_cifar100_loader_and_missing_files(tmp_path: Path) -> None:
    _write_cifar(tmp_path, "cifar100", per_batch=30)
    test = get_dataset("cifar100", "test", tmp_path)
    assert len(test) == 30 and len(test.classes) == 100 and test.classes[:2] == ("apple", "aquarium_fish")
    with pytest.raises(DatasetNotFoundError, match="data_batch_1"):
        get_dataset("cifar10", "train", tmp_path)


def test_svhn_loader_reads_mat_files_and_maps_10_to_0(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    rng = np.random.default_rng(1)
    written = {}
    for split, n in (("train", 12), ("test", 5)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # SVHN stores (H, W, C, N)
        y = np.array([[10], [1], [2], [3], [4]] * (n // 5) + [[10]] * (n % 5), dtype=np.uint8)
        savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = x
    test = get_dataset("svhn", "test", tmp_path)
    assert test.images.shape == (5, 3, 32, 32) and test.targets.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(test.images[2], torch.from_numpy(written["test"][:, :, :, 2]).permute(2, 0, 1))


# ---------------------------------------------------------------- folders of the user's own images


def _png(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _make_folder(root: Path) -> dict[str, Path]:
    """Two classes of odd images, plus corrupt, truncated and non-image files."""
    rng = np.random.default_rng(0)
    made = {}
    for cls, base in (("bright", 200), ("dark", 40)):
        for i in range(12):
            arr = np.clip(rng.normal(base, 20, size=(20 + i, 24, 3)), 0, 255).astype(np.uint8)
            made[f"{cls}{i}"] = _png(root / cls / f"{i}.png", Image.fromarray(arr))
    made["rgba"] = _png(root / "bright" / "rgba.png", Image.new("RGBA", (30, 30), (250, 250, 250, 255)))
    made["gray16"] = _png(root / "bright" / "deep.png", Image.fromarray(np.full((16, 16), 60000, np.uint16)))
    made["gray"] = _png(root / "dark" / "gray.png", Image.new("L", (10, 10), 30))
    made["tiny"] = _png(root / "dark" / "tiny.png", Image.new("RGB", (1, 1), (35, 35, 35)))
    made["huge"] = root / "bright" / "huge.jpg"
    Image.new("RGB", (4000, 3000), (210, 200, 190)).save(made["huge"], quality=70)
    made["palette"] = _png(root / "dark" / "pal.png", Image.new("RGB", (12, 12), (30, 30, 30)).convert("P"))
    made["cmyk"] = root / "dark" / "cmyk.jpg"
    Image.new("CMYK", (12, 12), (0, 0, 0, 220)).save(made["cmyk"])
    good = (root / "bright" / "0.png").read_bytes()
    (root / "bright" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dark" / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (root / "dark" / "notes.txt").write_text("not an image")
    return made


def test_folder_dataset_converts_odd_images_and_skips_bad_files(tmp_path: Path, capfd) -> None:
    _make_folder(tmp_path / "imgs")
    splits = {s: get_dataset(f"folder:{tmp_path / 'imgs'}", s, image_size=(16, 16)) for s in ("train", "val", "test")}
    err = capfd.readouterr().err
    for bad in ("truncated.png", "garbage.jpg", "notes.txt"):
        assert bad in err, f"{bad} was not reported"
    total = sum(len(d) for d in splits.values())
    assert total == 12 * 2 + 7  # every readable image, none of the 3 bad files
    train = splits["train"]
    assert train.classes == ("bright", "dark") and train.images.shape[1:] == (3, 16, 16)
    # Labels follow folders: bright images are bright, dark images are dark, after any conversion.
    means = train.images.float().mean(dim=(1, 2, 3))
    assert (means[train.targets == 0] > 120).all() and (means[train.targets == 1] < 120).all()
    assert 0.0 < train.info.std[0] < 1.0 and train.info.mean[0] > 0.2


def test_folder_train_and_test_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("test", 3)):
        for cls, v in (("a", 10), ("b", 240)):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", Image.new("L", (9, 9), v))
    test = get_dataset(f"folder:{tmp_path}", "test", image_size=(8, 8))
    train = get_dataset(f"folder:{tmp_path}", "train", image_size=(8, 8), val_size=0)
    assert len(test) == 6 and len(train) == 12 and test.images.shape[1] == 1  # all gray: one channel


def test_folder_errors_for_empty_class_and_single_class(tmp_path: Path) -> None:
    _png(tmp_path / "one" / "cat" / "0.png", Image.new("RGB", (4, 4)))
    with pytest.raises(CnnlabError, match="at least two"):
        get_dataset(f"folder:{tmp_path / 'one'}", "train")
    _png(tmp_path / "empty" / "cat" / "0.png", Image.new("RGB", (4, 4)))
    (tmp_path / "empty" / "dog").mkdir()
    with pytest.raises(CnnlabError, match="dog has no readable images"):
        get_dataset(f"folder:{tmp_path / 'empty'}", "train")
    with pytest.raises(CnnlabError, match="not a folder"):
        get_dataset(f"folder:{tmp_path / 'missing'}", "train")


def test_large_folder_streams_through_workers(tmp_path: Path) -> None:
    from cnnlab.data.folder import FolderStream, get_folder_dataset

    _make_folder(tmp_path / "imgs")
    stream = get_folder_dataset(str(tmp_path / "imgs"), "train", image_size=(16, 16), in_memory_limit=10)
    memory = get_dataset(f"folder:{tmp_path / 'imgs'}", "train", image_size=(16, 16))
    assert isinstance(stream, FolderStream) and len(stream) == len(memory)
    pipe = Pipeline.build(3, (3, 16, 16), memory.info.mean, memory.info.std)
    a = list(BatchLoader(stream, 8, pipe, num_workers=2))
    b = list(BatchLoader(memory, 8, pipe, num_workers=0))
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_every_split_follows_one_protocol(tmp_path: Path, data_dir: Path) -> None:
    """Built-in, in-memory folder and streamed folder splits give the same things: uint8 (C, H, W) and an int."""
    from cnnlab.data import take
    from cnnlab.data.folder import get_folder_dataset

    _make_folder(tmp_path / "imgs")
    splits = [get_dataset("mnist", "test", data_dir), get_dataset("digits", "train"),
              get_dataset(f"folder:{tmp_path / 'imgs'}", "train", image_size=(16, 16)),
              get_folder_dataset(str(tmp_path / "imgs"), "train", image_size=(16, 16), in_memory_limit=10)]
    for data in splits:
        image, target = data[3]
        assert image.dtype == torch.uint8 and image.dim() == 3 and isinstance(target, int), data
        assert image.shape[0] == data.info.channels and data.targets.dtype == torch.long
        images, targets = take(data, [3, 0])
        assert torch.equal(images[0], image) and targets.tolist() == [target, int(data.targets[0])]
        assert (data.images is None) == (data is splits[-1])  # held in memory, except the streamed one


# ---------------------------------------------------------------- splits, augmentation, cache


def test_stratified_split_exact_total_and_shares() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(y, 10, seed=0)
    assert len(held) == 10 and torch.bincount(y[held]).tolist() == [5, 3, 2]
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))


def test_augmentations_move_content_but_keep_it() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    shifted = Augment(translate=3)(x, g)
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # a small shift loses nothing
    assert not torch.equal(shifted, x)
    flipped = Augment(flip=True)(torch.arange(4.0).view(1, 1, 1, 4).repeat(100, 1, 1, 1), g)
    n_flipped = int((flipped[:, 0, 0, 0] == 3).sum())
    assert 30 < n_flipped < 70
    cut = Augment(cutout=6)(torch.ones(8, 3, 28, 28), g)
    assert ((cut == 0).sum(dim=(1, 2, 3)) > 0).all()


def test_translate_is_an_exact_whole_pixel_shift_with_black_fill() -> None:
    """The same shift computed twice: by padding and slicing each image, and by the batched augmentation."""
    x = torch.rand(32, 3, 20, 24)
    pad = 4
    got = random_translate(x, pad, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order
    dy = torch.randint(0, 2 * pad + 1, (32,), generator=g) - pad
    dx = torch.randint(0, 2 * pad + 1, (32,), generator=g) - pad
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(32):  # output pixel (r, c) is input pixel (r + dy, c + dx), black outside
        top, left = pad + int(dy[i]), pad + int(dx[i])
        assert torch.equal(got[i], padded[i, :, top:top + 20, left:left + 24]), i


def test_rotation_zoom_and_shift_match_torchvision_affine() -> None:
    """One resampling of the batch equals torchvision's affine() of each image with the same draws."""
    n, h, w = 24, 28, 28
    x = torch.rand(n, 1, h, w)
    got = Augment(degrees=10, scale=0.1, translate=3)(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order: angle, zoom, dy, dx
    angle = (torch.rand(n, generator=g) * 2 - 1) * 10
    zoom = 1 + (torch.rand(n, generator=g) * 2 - 1) * 0.1
    dy = torch.randint(0, 7, (n,), generator=g) - 3
    dx = torch.randint(0, 7, (n,), generator=g) - 3
    for i in range(n):  # the grid's angle and shift point the other way from torchvision's arguments
        want = TF.affine(x[i], angle=-float(angle[i]), translate=[-int(dx[i]), -int(dy[i])], scale=float(zoom[i]),
                         shear=[0.0, 0.0], interpolation=TF.InterpolationMode.BILINEAR)
        assert torch.allclose(got[i], want, atol=1e-5), i


def test_affine_grid_matches_torch() -> None:
    for n, h, w in [(256, 28, 28), (3, 32, 20), (2, 150, 150)]:
        theta = torch.randn(n, 2, 3)
        want = torch.nn.functional.affine_grid(theta, [n, 1, h, w], align_corners=False)
        assert torch.allclose(affine_grid(theta, h, w), want, atol=1e-5)


def test_flip_is_refused_for_digits() -> None:
    with pytest.raises(CnnlabError, match="flip would change the labels"):
        parse_augment("translate=2,flip", get_dataset_info("mnist"))
    assert parse_augment("translate=2,cutout=8", get_dataset_info("mnist")) == Augment(translate=2, cutout=8)
    assert parse_augment("auto", get_dataset_info("cifar10")).flip


def test_cache_key_changes_when_a_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    k1 = source_key([f])
    f.write_bytes(b"three")
    assert source_key([f]) != k1
