"""Batches for training and evaluation: from one uint8 tensor in memory, or streamed from a folder, decoded by
threads a few batches ahead.

Every epoch's order and every batch's augmentation come from generators seeded by (seed, epoch, batch), so
the same seed gives the same batches, and a run can resume in the middle of an epoch exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import BrokenExecutor, Executor, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import islice
from typing import Callable, TypeVar

import torch

from cnnlab.data.augment import Augment
from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError

MEMORY_LIMIT = 1 << 30  # convert (resize) the whole dataset up front when the result fits in this many bytes
PREFETCH = 2  # batches of a streamed split being decoded ahead of the one in use
CHUNK = 256  # files one thread takes in one go: a future per file costs more than a small file's work
THREADS_PAY_S = 300e-6  # a file takes longer than this: threads pay (benchmarks/README.md, issue 29)
PROCESSES_PAY_S = 1.0  # Python-bound work longer than this pays for starting worker processes (a fork: ~50 ms)

T = TypeVar("T")


def decode_threads(requested: int = 0) -> int:
    """Threads that decode images: as asked, else one per core this process may run on (Pillow decodes without
    the GIL, so threads decode in parallel, in this process: nothing is forked)."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def map_in_order(fn: Callable[..., list[T]], calls: Iterable[tuple], files: int,
                 processes: bool = False) -> Iterator[list[T]]:
    """fn(*args) for each args of `calls` (args[0]: a chunk of CHUNK files or fewer; `files` in all), yielded in
    order; `calls` is read a few ahead of what was yielded, so later calls may depend on the results so far.

    The first call runs here, timed. Where a file took longer than THREADS_PAY_S (waiting on a disk, or decoding a
    photo in C without the GIL), the rest run in decode_threads() threads. Where it took less, the work is
    Python-bound and threads fighting over the GIL would be slower than one: the rest run here, or, when
    `processes` (fn must then be a module-level function), a `worker_processes` block allows them and the rest
    would take longer than PROCESSES_PAY_S, in worker processes.
    """
    calls = iter(calls)
    first = next(calls, None)
    if first is None:
        return
    began = time.perf_counter()
    yield fn(*first)
    per_file = (time.perf_counter() - began) / max(1, len(first[0]))
    allowed = _PROCESSES.get()
    if per_file >= THREADS_PAY_S:
        workers = decode_threads()
        pool: Executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnlab-decode")
    elif processes and allowed and allowed[1] > 1 and per_file * (files - len(first[0])) > PROCESSES_PAY_S:
        make, workers = allowed
        pool = make(workers)
    else:
        for args in calls:
            yield fn(*args)
        return
    with pool:
        ahead = deque(pool.submit(fn, *args) for args in islice(calls, 2 * workers))
        while ahead:
            try:
                done = ahead.popleft().result()
            except BrokenExecutor as exc:  # a worker killed (out of memory, a signal): one line, not a traceback
                raise CnnlabError(f"a worker process reading the files stopped ({exc}): run the command again; "
                                  f"if it stops again, train with cnnlab.train in Python, which reads them in one "
                                  f"process") from None
            upcoming = next(calls, None)
            if upcoming is not None:
                ahead.append(pool.submit(fn, *upcoming))
            yield done


@contextmanager
def worker_processes(make: Callable[[int], Executor] | None, n: int = 0) -> Iterator[None]:
    """Within this block, reading many small files (a folder's first scan: Python-bound work that threads cannot
    share) may run in `n` worker processes (0: one per core) that `make(n)` starts when a read begins; the read
    shuts them down when it ends. Without such a block (or with `make` None) nothing runs outside this process:
    a library does not fork behind its caller's back; the `cnnlab` command opens one (cli/processes.py)."""
    token = _PROCESSES.set((make, n if n > 0 else decode_threads()) if make is not None else None)
    try:
        yield
    finally:
        _PROCESSES.reset(token)


_PROCESSES: ContextVar[tuple[Callable[[int], Executor], int] | None] = ContextVar("cnnlab_worker_processes",
                                                                                 default=None)


def _seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (distinct tuples give distinct streams in practice)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


class BatchLoader:
    """Shuffled (or ordered), augmented, normalized batches as (x float, y int64) on `device`.

    `data` is a dataset split (cnnlab.data.ImageDataset). With `pipeline=None` the stored tensors are the batches
    as they are (feature extraction batches embeddings this way).
    """

    def __init__(
        self,
        data,
        batch_size: int,
        pipeline: Pipeline | None,
        *,
        augment: Augment | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        num_workers: int = 0,
    ):
        self.batch_size, self.pipeline = int(batch_size), pipeline
        self.augment = augment if augment is not None and augment.active else None
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, int(seed)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.channels_last, self.num_workers = channels_last, num_workers
        self.data = data
        self.targets = data.targets.to(self.device)
        self.streaming = data.images is None
        self.images = None if self.streaming else self._prepare_images(data.images)
        self.epoch, self.position, self._start = 0, 0, 0

    def _prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Move the uint8 tensor to the device, converted once to the model's size when that fits in memory."""
        if self.pipeline is not None and self.pipeline.needs_convert(images.shape):
            n = len(images)
            out_bytes = n * self.pipeline.channels * self.pipeline.size[0] * self.pipeline.size[1]
            if out_bytes <= MEMORY_LIMIT:
                # In chunks, so the float intermediate of the resize stays small.
                images = torch.cat([self.pipeline.convert(c) for c in images.split(4096)]) if n else images
        return images.to(self.device)

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (ranks get equal shares; the remainder is dropped)."""
        n = len(self.targets)
        return n // self.world_size if self.world_size > 1 else n

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration replays."""
        self.epoch = int(epoch)

    @property
    def resume_batch(self) -> int:
        """The batch the next iteration starts at (0 unless resuming mid-epoch)."""
        return self._start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Resume at (epoch, batch): the next iteration starts at that batch of that epoch."""
        self.epoch, self._start = int(state["epoch"]), int(state["batch"])

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch."""
        n = len(self.targets)
        if self.shuffle:
            g = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world_size > 1:
            idx = idx[: self.num_samples * self.world_size][self.rank :: self.world_size]
        return idx

    def index_batches(self) -> list[torch.Tensor]:
        batches = list(self.order().split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self):
        batches = self.index_batches()
        start, self._start = self._start, 0
        source = self._stream(batches, start) if self.streaming else self._memory(batches, start)
        for b, (images, targets) in enumerate(source, start=start):
            self.position = b + 1
            yield (images if self.pipeline is None else self._model_input(images, b)), targets
        self.position = 0

    def _model_input(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        """uint8 images -> the model's size and channels -> [0, 1] -> augmented -> normalized."""
        x = self.pipeline.convert(images).float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x, torch.Generator().manual_seed(self._augment_seed(batch)))
        x = self.pipeline.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _augment_seed(self, batch: int) -> int:
        """The seed of a batch's augmentation: other ranks draw their own (rank 0 keeps the one-process stream)."""
        rank = (self.rank,) if self.rank else ()
        return _seed(self.seed, self.epoch, batch, 1, *rank)

    def _memory(self, batches: list[torch.Tensor], start: int):
        for idx in batches[start:]:
            idx = idx.to(self.device)
            # index_select, not images[idx]: the same rows, ~10x faster on a CPU (6 vs 65 us for 256 MNIST images)
            yield self.images.index_select(0, idx), self.targets.index_select(0, idx)

    def _stream(self, batches: list[torch.Tensor], start: int):
        """Each batch decoded from disk by a pool of threads, PREFETCH batches ahead of the one in use: decoding
        overlaps whatever the caller does with a batch, and memory holds a few batches, whatever the split's size."""
        threads = decode_threads(self.num_workers)
        todo = iter(batches[start:])
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cnnlab-decode") as pool:
            def submit(idx: torch.Tensor) -> list:
                chunks = idx.tolist()
                size = max(1, math.ceil(len(chunks) / threads))
                return [pool.submit(self._decode, chunks[i: i + size]) for i in range(0, len(chunks), size)]

            ahead = deque(submit(idx) for idx in (next(todo, None) for _ in range(PREFETCH + 1)) if idx is not None)
            while ahead:
                items = [item for future in ahead.popleft() for item in future.result()]
                upcoming = next(todo, None)
                if upcoming is not None:
                    ahead.append(submit(upcoming))
                images, targets = _collate(items)
                if self.device.type == "cuda":
                    images, targets = images.pin_memory(), targets.pin_memory()
                yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def _decode(self, indices: list[int]) -> list:
        return [self.data[i] for i in indices]


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack decoded (image, label) pairs, dropping files that failed to decode."""
    items = [it for it in items if it is not None]
    if not items:
        return torch.zeros(0, 1, 1, 1, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return torch.stack([im for im, _ in items]), torch.tensor([t for _, t in items], dtype=torch.long)
