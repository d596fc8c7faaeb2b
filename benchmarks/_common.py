"""Shared by the benchmark scripts: the environment line every result is logged with, and medians."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from typing import Callable


def torchvision_version() -> str:
    """torchvision's version as its build names it (0.29.1+cu130), without importing it where it is not loaded yet:
    its import takes 2 s here, and most benchmarks (and `cnnlab train`) never need it."""
    from cnnlab.data.paths import package_file

    path = package_file("torchvision", "version.py") if "torchvision" not in sys.modules else None
    found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", path.read_text(), re.M) if path else None
    if found:
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
