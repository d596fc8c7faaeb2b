"""A folder too large for memory streams from disk: decoded by threads in this process (nothing forked), a few
batches ahead, with memory flat from the first epoch to the last."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.data import folder
from cnnlab.data.folder import FolderStream, get_folder_dataset

SIDE, PER_CLASS = 64, 1000  # 3,000 RGB images of 64 px: 36.9 MB decoded
LIMIT = 12 << 20  # the in-memory limit of this test: the folder is three times it


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, (name, tint) in enumerate((("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200)))):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            noise = rng.normal(0, 40, (SIDE, SIDE, 3))
            pixels = np.clip(np.array(tint) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.jpg", quality=85)
    return root


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def children() -> list[str]:
    """The processes whose parent is this one (threads are not processes: they are not listed)."""
    me, found = str(os.getpid()), []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[1] == me:
                found.append(p)
        except OSError:  # a process that ended while being read
            pass
    return found


class Watch(cnnlab.Callback):
    """Memory after each epoch; any child process seen during training."""

    def __init__(self) -> None:
        self.epochs, self.kids = [], set()

    def on_train_begin(self, run) -> None:
        self.data = run.data

    def on_step_end(self, step: int, loss: float) -> None:
        self.kids.update(children())

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        self.epochs.append(rss_mib())


@pytest.mark.slow
def test_a_folder_three_times_the_memory_limit_streams_with_flat_memory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(tmp_path / "big")
    monkeypatch.setattr(folder, "IN_MEMORY_LIMIT", LIMIT)
    decoded_mib = 3 * PER_CLASS * 3 * SIDE * SIDE / 2**20
    assert decoded_mib > 3 * LIMIT / 2**20 - 1
    watch = Watch()
    run = cnnlab.train(dataset=f"folder:{root}", model="fastnet", input_size=f"3x{SIDE}x{SIDE}", epochs=4,
                       batch_size=128, eval_batch_size=128, augment="none", threads=2, seed=0,
                       out=str(tmp_path / "run"), quiet=True, callbacks=[watch])
    assert isinstance(watch.data.train.data, FolderStream) and watch.data.train.streaming
    assert run.results["test_acc"] > 0.9  # the colours are easy: it learned from what it streamed
    assert watch.kids == set()  # decoded by threads: no process was forked
    # Batches kept from one epoch to the next would add the decoded size, 37 MB, at each of the three epochs after the
    # first; what the allocator keeps and returns moves memory by up to about 16 MB, either way, from epoch to epoch.
    growth = max(watch.epochs) - watch.epochs[0]
    assert growth < decoded_mib, f"memory grew {growth:.0f} MiB over the epochs: {watch.epochs}"


def test_a_streamed_split_yields_what_the_in_memory_one_does(tmp_path: Path) -> None:
    root = tmp_path / "small"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    streamed = get_folder_dataset(str(root), "train", image_size=(16, 16), stream=True)
    memory = get_folder_dataset(str(root), "train", image_size=(16, 16))
    assert isinstance(streamed, FolderStream) and memory.images is not None and len(streamed) == len(memory)
    for i in range(len(memory)):
        image, target = streamed[i]
        assert (image == memory.images[i]).all() and target == int(memory.targets[i])
    sub = streamed.subset(streamed.targets.new_tensor([0, 5, 9]))
    assert isinstance(sub, FolderStream) and [str(f) for f in sub.files] == [str(streamed.files[i]) for i in (0, 5, 9)]
