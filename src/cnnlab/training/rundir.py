"""The run folder: its name, its creation (checked writable and with room before training), config.json's facts."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_write_json
from cnnlab.training.config import TrainConfig
from cnnlab.training.distributed import DistEnv


def run_name(cfg: TrainConfig) -> str:
    """<model>-<dataset>-<YYYYmmdd-HHMMSS>, the dataset of a folder named after the folder."""
    dataset = cfg.dataset
    if dataset.startswith("folder:"):
        dataset = "folder-" + (Path(dataset[7:]).name or "root")
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset)
    return f"{cfg.model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "curves.png", "report.html", "checkpoints", "probes",
             "tb", "model.onnx", "model.torchscript")  # what a run writes into its folder (eval-*, explain-* too)


class RunLock:
    """This process's hold on a run folder while it writes it: an OS file lock, so a killed process lets go, and
    a note of who holds it, so a second process can say which one is in its way."""

    def __init__(self, folder: Path):
        from filelock import FileLock

        self.folder = folder
        self._lock = FileLock(folder / ".lock", timeout=0)
        self._owner = folder / ".lock-owner.json"

    def acquire(self) -> "RunLock":
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise CnnlabError(f"{self.folder} is in use by another cnnlab process ({self.owner()}): wait for it to "
                              f"finish, or choose another --out") from None
        atomic_write_json({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S"),
                           "command": " ".join(sys.argv)}, self._owner)
        return self

    def owner(self) -> str:
        try:
            o = json.loads(self._owner.read_text())
            return f"pid {int(o['pid'])} on {o['host']}, since {o['since']}: {str(o['command'])[:80]}"
        except (OSError, ValueError, KeyError, TypeError):
            return "unknown process"

    def release(self) -> None:
        if self._lock.is_locked:
            self._owner.unlink(missing_ok=True)
            self._lock.release()

    @staticmethod
    def holder(folder: Path) -> str | None:
        """Who writes the folder now (pid, host, since when, command), or None. Taken from no one: a writer leaves
        its note beside the lock, and only where there is one is the lock tried, and let go at once (a killed
        writer's note stays, but its lock is free)."""
        from filelock import Timeout

        lock = RunLock(folder)
        if not lock._owner.exists():
            return None
        try:
            lock._lock.acquire()
        except Timeout:
            return lock.owner()
        except OSError:  # a folder we may not write: no one we can see is writing it either
            return None
        lock._lock.release()
        return None


def holds_run(folder: Path) -> bool:
    """Whether a folder already holds (part of) a run: its config, metrics, results or checkpoint files."""
    return (any((folder / name).exists() for name in ("config.json", "metrics.jsonl", "results.json"))
            or any((folder / "checkpoints").glob("*.pt")))


def clear_run(folder: Path) -> None:
    """Delete what a run wrote into `folder` (and only that): for --overwrite."""
    for path in [folder / name for name in RUN_FILES] + [*folder.glob("eval-*"), *folder.glob("explain-*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def new_run_dir(cfg: TrainConfig) -> Path:
    """--out, else runs/<model>-<dataset>-<time> (with -2, -3, ... when that exists)."""
    if cfg.out:
        return Path(cfg.out)
    path, n = Path(cfg.runs_dir) / run_name(cfg), 1
    while path.exists():
        n += 1
        path = Path(cfg.runs_dir) / f"{run_name(cfg)}-{n}"
    return path


def prepare_run_dir(cfg: TrainConfig, needed_bytes: int, existing: Path | None = None) -> tuple[Path, RunLock]:
    """Create (or, resuming, take back) the run folder and lock it; check, before training, that it is writable
    and the disk has room. A new run never mixes its files with an old run's: --overwrite, or another folder."""
    path = existing or new_run_dir(cfg)
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        lock = RunLock(path).acquire()
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CnnlabError(f"cannot write the run folder {path}: {exc.strerror or exc}. Choose another --out.") from None
    if existing is None and holds_run(path):
        if not cfg.overwrite:
            lock.release()
            raise CnnlabError(f"{path} already holds a run: continue it with --resume {path}, choose another --out, "
                              f"or replace it with --overwrite")
        clear_run(path)
        (path / "checkpoints").mkdir()
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        lock.release()
        raise CnnlabError(
            f"only {free / 2**20:.0f} MiB free on the disk of {path}; checkpoints of this run need about "
            f"{needed_bytes / 2**20:.0f} MiB. Free some space or choose another --out."
        )
    return path, lock


def shared_run_dir(cfg: TrainConfig, env: DistEnv, needed_bytes: int,
                   existing: Path | None = None) -> tuple[Path, RunLock | None]:
    """Rank 0 prepares and locks the run folder (its default name has a timestamp) and tells the other ranks its
    path; they hold no lock (rank 0 alone writes)."""
    path, lock, error = None, None, None
    if env.is_main:
        try:
            path, lock = prepare_run_dir(cfg, needed_bytes, existing)
        except CnnlabError as exc:
            error = exc
    # Every rank gets the path or rank 0's error, so none waits forever for a folder that will not come.
    path, message = env.broadcast_object((str(path) if path else None, str(error) if error else None))
    if error is not None:
        raise error
    if message is not None:
        raise CnnlabError(f"rank 0 could not prepare the run folder: {message}")
    return Path(path), lock


def checkpoint_bytes(net: torch.nn.Module) -> int:
    """Room the checkpoints need: last.pt and best.pt, each with weights and up to two optimizer moments, plus a
    temporary copy while one is written."""
    return sum(p.numel() * p.element_size() for p in net.parameters()) * 3 * 3 + (16 << 20)


def environment() -> dict[str, Any]:
    """Versions and machine, for config.json."""
    from cnnlab import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _installed_version("torchvision"),
        "numpy": np.__version__,
        "cnnlab": __version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _installed_version(package: str) -> str | None:
    """A package's installed version, read from its metadata: importing torchvision only to ask would cost
    0.1 s and 15 MiB per run (more when torch._dynamo is not loaded yet)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
