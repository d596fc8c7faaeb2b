"""The run folder: its name, its creation (checked writable and with room before training), config.json's facts."""

from __future__ import annotations

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
from cnnlab.training.config import TrainConfig
from cnnlab.training.distributed import DistEnv


def run_name(cfg: TrainConfig) -> str:
    """<model>-<dataset>-<YYYYmmdd-HHMMSS>, the dataset of a folder named after the folder."""
    dataset = cfg.dataset
    if dataset.startswith("folder:"):
        dataset = "folder-" + (Path(dataset[7:]).name or "root")
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset)
    return f"{cfg.model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(cfg: TrainConfig, needed_bytes: int) -> Path:
    """Create the run folder and check, before training, that it is writable and the disk has room."""
    if cfg.out:
        path = Path(cfg.out)
    else:
        path = Path(cfg.runs_dir) / run_name(cfg)
        n = 1
        while path.exists():
            n += 1
            path = Path(cfg.runs_dir) / f"{run_name(cfg)}-{n}"
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CnnlabError(f"cannot write the run folder {path}: {exc.strerror or exc}. Choose another --out.") from None
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise CnnlabError(
            f"only {free / 2**20:.0f} MiB free on the disk of {path}; checkpoints of this run need about "
            f"{needed_bytes / 2**20:.0f} MiB. Free some space or choose another --out."
        )
    return path


def shared_run_dir(cfg: TrainConfig, env: DistEnv, needed_bytes: int) -> Path:
    """Rank 0 creates the run folder (its default name has a timestamp) and tells the other ranks its path."""
    path, error = None, None
    if env.is_main:
        try:
            path = prepare_run_dir(cfg, needed_bytes)
        except CnnlabError as exc:
            error = exc
    # Every rank gets the path or rank 0's error, so none waits forever for a folder that will not come.
    path, message = env.broadcast_object((str(path) if path else None, str(error) if error else None))
    if error is not None:
        raise error
    if message is not None:
        raise CnnlabError(f"rank 0 could not prepare the run folder: {message}")
    return Path(path)


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
