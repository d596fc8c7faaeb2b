"""Checkpoints: everything needed to rebuild, resume and predict, written atomically, read safely."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_save

FORMAT = "cnnlab.checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """The state of every random generator a run draws from (Python, NumPy, torch CPU and CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        # As plain values, so the checkpoint loads with torch.load(weights_only=True).
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """random.setstate needs tuples where a serializer may have produced lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically: a process killed at any instant leaves the previous file loadable."""
    return atomic_save({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (tensors and plain values only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    if is_torchscript_archive(path):
        raise CnnlabError(f"{path} is a TorchScript model, not a cnnlab checkpoint: it holds code, and cnnlab reads "
                          f"only weights from a run folder (to predict with it anyway: cnnlab predict --trust-code)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CnnlabError(f"{path} is corrupt or not a checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise CnnlabError(f"{path} was written by a newer cnnlab (format {ckpt['version']}); upgrade cnnlab")
    return ckpt


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether a file is a TorchScript archive (a zip with compiled code inside), whatever its name."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """A run folder's checkpoint (best, else last), or the path itself when it is a file."""
    run = Path(run)
    if run.is_file():
        return run
    folder = run / "checkpoints"
    order = [which, "last" if which == "best" else "best"]
    for name in order:
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt"
    raise CnnlabError(f"{run} holds no checkpoint (looked for {', '.join(str(folder / f'{n}.pt') for n in order)})")


def resume_position(ckpt: dict[str, Any], steps_per_epoch: int, global_batch: int) -> tuple[int, dict[str, int]]:
    """(optimizer step, loader state) that continue `ckpt` in a run with these steps per epoch and global batch.

    With the world size (and so the global batch) of the run that saved it: the saved values, exactly. With
    another: the same epoch; within a half-done epoch, the batch holding the first image not yet seen (ranks take
    interleaved shares of one permutation, so b steps have seen its first b x global-batch images; at most one
    global batch is seen twice); and the step scaled to this run's steps per epoch, so the learning-rate schedule
    continues at the same fraction of training.
    """
    loader = {"epoch": int(ckpt["loader"]["epoch"]), "batch": int(ckpt["loader"]["batch"])}
    saved = ckpt.get("distributed") or {}
    saved_batch = int(saved.get("global_batch", global_batch))
    saved_steps = int(saved.get("steps_per_epoch", steps_per_epoch))
    if saved_batch == global_batch and saved_steps == steps_per_epoch:
        return int(ckpt["step"]), loader
    loader["batch"] = min(loader["batch"] * saved_batch // global_batch, steps_per_epoch)
    return round(int(ckpt["step"]) * steps_per_epoch / max(saved_steps, 1)), loader
