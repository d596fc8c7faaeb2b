"""Shared by the benchmark scripts: the environment line every result is logged with, and medians."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable


def torchvision_version() -> str:
    """torchvision's version as its build names it (0.29.1+cu130), without importing it where it is not loaded yet:
    its import takes 2 s here, and most benchmarks (and `cnnlab train`) never need it."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            try:
                text = (Path(folder) / "version.py").read_text()
            except OSError:
                continue
            if found := re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", text, re.M):
                return found.group(1)
    import torchvision

    return torchvision.__version__


def environment() -> dict:
    """Machine, cores, torch build and threads: printed with every result."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_environment() -> None:
    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)
