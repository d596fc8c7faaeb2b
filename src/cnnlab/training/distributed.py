"""Several processes (torchrun): which rank this is, and the few collective operations training needs.

With one process every helper here is a no-op, so the training loop reads the same either way.
torchrun describes the job in the environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT);
`init_distributed` joins it with gloo on the CPU or NCCL on CUDA GPUs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from cnnlab.errors import CnnlabError

# A collective that waits longer than this fails instead of hanging: it bounds how long the other ranks wait
# for one that died or stalls (torchrun notices a dead local rank at once; this covers the other machines).
# It must exceed the longest stretch one rank works alone: validation, checkpoints and the test on rank 0.
DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT"

# How torch reports a collective whose peer went away or stopped answering: gloo's errors come as RuntimeError with
# these in the message (a closed or reset connection, a timeout); the store's as torch.distributed.DistError.
GLOO_PEER_ERRORS = ("gloo/transport/", "pair closure", "Connection closed by peer", "Connection reset by peer",
                    "Timed out waiting")


@dataclass(frozen=True)
class Peer:
    """Where one rank runs: its node (torchrun's GROUP_RANK), the host's name and the address gloo uses for it."""

    rank: int
    node: int
    host: str
    address: str

    def __str__(self) -> str:
        return f"rank {self.rank} (node {self.node}, host {self.host})"


@dataclass
class DistEnv:
    """This process's place in the job, and where every rank runs (to name one that is lost)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    peers: tuple[Peer, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over all ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Each flag: set on at least one rank (so every rank stops at the same step)."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([float(bool(f)) for f in flags], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [v > 0 for v in t.tolist()]

    def broadcast(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's numbers, on every rank (so all ranks take the same decisions)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's (picklable) object, on every rank: the run folder's path, or the error that prevented it."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's (picklable) object, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            # NCCL wants to know the GPU; gloo takes no device.
            dist.barrier(device_ids=[self.local_rank] if dist.get_backend() == "nccl" else None)

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on each machine's first process, then on the others (one download, one decode cache)."""
        if self.enabled and self.local_rank != 0:
            self.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            self.barrier()


def main_process() -> bool:
    """Whether this process is the job's first (rank 0), as torchrun's environment says; alone, it is."""
    return int(os.environ.get("RANK", "0")) == 0


def timeout_seconds() -> float:
    """The collective timeout: $CNNLAB_DIST_TIMEOUT seconds, else DEFAULT_TIMEOUT_S."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise CnnlabError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise CnnlabError(f"{TIMEOUT_ENV} must be positive, got {value}")
    return seconds


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group torchrun describes in the environment; one process: a no-op DistEnv."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                  int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    if device_type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise CnnlabError(f"{env.local_world_size} processes on this machine but only "
                              f"{torch.cuda.device_count()} CUDA GPUs; start one process per GPU "
                              f"(--nproc-per-node {torch.cuda.device_count()}) or train on the CPU (--device cpu)")
        torch.cuda.set_device(env.local_rank)
    elif device_type != "cpu":
        raise CnnlabError(f"several processes train on CPUs (gloo) or CUDA GPUs (NCCL), not on {device_type}; "
                          f"use --device cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds()))
    env.peers = tuple(env.all_gather_object(this_peer(env.rank)))
    return env


def this_peer(rank: int) -> Peer:
    """This process as a Peer, its address the first its host name resolves to (gloo's default device binds the
    first of them it can)."""
    host = socket.gethostname()
    try:
        address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        address = ""
    return Peer(rank, int(os.environ.get("GROUP_RANK", "0")), host, address)


def peer_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective (or the job's store) failing because another process is gone or silent."""
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in GLOO_PEER_ERRORS))


def describe_peer_failure(env: DistEnv, exc: BaseException) -> str:
    """'rank 0 (node 0, host a) lost its connection to rank 1 (node 1, host b)': what a peer_failure means here."""
    text = str(exc)
    address = re.search(r"\[([^\]\s]+)\]:\d+", text)
    who = lost_peer_name(env.peers, env.rank, address.group(1).removeprefix("::ffff:") if address else None)
    if not who:
        who = f"a process at {address.group(0)}" if address else "another process of the job"
    me = next((str(p) for p in env.peers if p.rank == env.rank), f"rank {env.rank}")
    if any(word in text.lower() for word in ("timed out", "timeout")):
        return f"{me} waited {timeout_seconds():g} s ({TIMEOUT_ENV}) for {who} in vain: it stopped or stalls"
    return f"{me} lost its connection to {who}: that process, its machine or the network failed"


def lost_peer_name(peers: tuple[Peer, ...], rank: int, address: str | None) -> str:
    """The rank (or the node) behind a failed connection, as far as it can be told: the only other rank; else the
    other ranks at the address gloo names, when they are one rank or share one node; else ''."""
    others = [p for p in peers if p.rank != rank]
    if len(others) > 1:
        others = [p for p in others if address and p.address == address]
    if len(others) == 1:
        return str(others[0])
    if others and len({p.node for p in others}) == 1:
        ranks = ", ".join(str(p.rank) for p in others)
        return f"a process of node {others[0].node} (host {others[0].host}: ranks {ranks})"
    return ""


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_process(requested: int, env: DistEnv) -> int:
    """--threads when given; with several processes on a machine, its cores shared out; else 0 (torch's default)."""
    if requested:
        return requested
    if env.enabled:
        return max(1, cpu_cores() // env.local_world_size)
    return 0


def check_sync_bn(device: torch.device) -> None:
    """torch's SyncBatchNorm synchronizes CUDA tensors only: refuse --sync-bn elsewhere before training starts."""
    if device.type != "cuda":
        raise CnnlabError(
            f"--sync-bn needs CUDA GPUs: torch {torch.__version__}'s SyncBatchNorm cannot synchronize {device.type} "
            f"tensors. On the CPU train without --sync-bn (each process normalizes with its own batch's statistics)"
        )


def shutdown(env: DistEnv) -> None:
    """Leave the process group once every rank is done with it.

    Why wait: a rank that tears its connections down and exits while rank 0 still finishes (the test evaluation,
    results.json) can abort in gloo's teardown ("terminate called without an active exception", SIGABRT), which
    fails the whole job after a complete run. Both callers are reached by every rank together.
    """
    if env.enabled and dist.is_initialized():
        env.barrier()
        dist.destroy_process_group()
