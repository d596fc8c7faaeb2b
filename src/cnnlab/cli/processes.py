"""Worker processes for the `cnnlab` command: a library must not fork behind its caller's back; the command, which
runs one thing and exits, may where it pays (benchmarks/README.md, "Folders of any size, second pass")."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Callable


def fork_pool(workers: int) -> Executor:
    """`workers` processes forked from this one: each starts in milliseconds with the imports already done (a
    spawned one would import torch again, for seconds)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def pool_maker() -> Callable[[int], Executor] | None:
    """fork_pool where a fork is the platform's usual start (Linux), else None: no worker processes."""
    return fork_pool if sys.platform.startswith("linux") else None
