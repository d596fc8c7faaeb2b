"""`cnnlab train --nproc N`: the same training in N processes on this machine, started through torchrun.

It runs `torchrun --standalone --nproc-per-node N -m cnnlab train <the same options, without --nproc>`:
a rendezvous on this machine's loopback interface with a free port, no restarts. torchrun's agent runs in a
child process (`python -m cnnlab.training.launch TORCHRUN-ARGS`) that reports a failed job in one line naming the
ranks, instead of torchrun's tracebacks. The exit code is the job's: 0; 130 after Ctrl-C; the failed ranks' exit
code when they agree (2 for a cnnlab error), else 1. Several machines: run torchrun on each (docs/howto/several-processes.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.training.distributed import cpu_cores

INTERRUPTED = 130  # what `cnnlab train` returns after Ctrl-C, one process or many


def launch(settings: dict[str, Any]) -> int:
    """Train with `settings` in settings["nproc"] processes under torchrun; return the job's exit code."""
    nproc = int(settings.get("nproc", 1))
    rest = {k: v for k, v in settings.items() if k != "nproc"}
    if "LOCAL_RANK" in os.environ:  # torchrun already started this process
        return _train_here(nproc, rest)
    check_before_launch(nproc, settings)
    threads = int(rest.get("threads") or max(1, cpu_cores() // nproc))
    args = torchrun_args(nproc, rest)
    if not (rest.get("quiet") or rest.get("json")):
        print(f"launching {nproc} processes, {threads} CPU thread{'s' if threads != 1 else ''} each: "
              f"{shlex.join(['torchrun', *args])}", flush=True)
    # torchrun would set OMP_NUM_THREADS=1 (with a warning); each rank sets its torch threads to this anyway.
    return run_job([sys.executable, "-m", "cnnlab.training.launch", *args],
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def torchrun_args(nproc: int, settings: dict[str, Any]) -> list[str]:
    """torchrun's arguments for these settings: standalone (loopback, a free port), N processes, cnnlab train."""
    return ["--standalone", f"--nproc-per-node={nproc}", "-m", "cnnlab", "train", *settings_to_argv(settings)]


def settings_to_argv(settings: dict[str, Any]) -> list[str]:
    """`cnnlab train` options that give back `settings` (the inverse of config.explicit_settings)."""
    argv = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            argv.append(f"{flag}={json.dumps(value)}")
        elif isinstance(value, float):
            argv.append(f"{flag}={value!r}")  # repr round-trips the exact float
        else:
            argv.append(f"{flag}={value}")  # `=`: a value starting with '-' stays a value
    return argv


def check_before_launch(nproc: int, settings: dict[str, Any]) -> None:
    """Catch the mistakes every process would make, once, before starting them."""
    from cnnlab.training.config import resolve
    from cnnlab.training.distributed import check_sync_bn
    from cnnlab.training.process import pick_device

    if nproc < 1:
        raise CnnlabError(f"--nproc must be at least 1, got {nproc}")
    cfg = resolve({k: v for k, v in settings.items() if k != "resume"})
    if settings.get("resume"):
        from cnnlab.training.checkpoint import find_checkpoint

        find_checkpoint(settings["resume"], "last")
        return
    from cnnlab.models import get_model_info

    if cfg.model != "auto":  # chosen from the data in each process
        get_model_info(cfg.model)
    device = pick_device(cfg.device)
    if device.type == "mps":
        raise CnnlabError("several processes train on CPUs or CUDA GPUs, not on Apple's MPS; add --device cpu")
    if cfg.sync_bn:
        check_sync_bn(device)
    if device.type == "cuda":
        import torch

        if nproc > torch.cuda.device_count():
            raise CnnlabError(f"--nproc {nproc} but this machine has {torch.cuda.device_count()} CUDA GPUs: "
                              f"use one process per GPU, or --device cpu")


def run_job(cmd: list[str], env: dict[str, str]) -> int:
    """Run torchrun, passing Ctrl-C and SIGTERM on to it (it stops the ranks, which save); return its exit code."""
    # Its own session: a Ctrl-C reaches torchrun once, from us, not also from the terminal.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    signalled = []

    def forward(signum, frame) -> None:
        signalled.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signalled and code != 0:
        return INTERRUPTED
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


def _die_with_parent() -> None:
    """In the child, before exec: if this launcher dies, torchrun gets SIGTERM and stops the ranks (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _train_here(nproc: int, settings: dict[str, Any]) -> int:
    """`--nproc N` given to a process torchrun started: train in it when N matches torchrun's processes."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if nproc != local:
        raise CnnlabError(f"--nproc {nproc}, but torchrun started {local} processes per machine; drop --nproc "
                          f"(torchrun's --nproc-per-node decides)")
    from cnnlab.training import train

    result = train(**settings)
    return INTERRUPTED if result.status == "interrupted" else 0


def run_torchrun(argv: list[str]) -> int:
    """torchrun's agent in this process; a failed job ends with one line naming its ranks, not tracebacks."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(argv)
    except SignalException as exc:  # Ctrl-C or SIGTERM: torchrun passed it on and the ranks stopped
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        print(describe_failures(exc.failures), file=sys.stderr, flush=True)
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode > 0]
        return codes[0] if len(set(codes)) == 1 else 1
    return 0


def describe_failures(failures: dict[int, Any]) -> str:
    """'error: ... rank 1 (pid 12, local rank 1) was killed by SIGKILL; then rank 0 ...': causes first."""

    def how(f) -> str:
        if f.exitcode < 0:
            return f"was killed by {f.signal_name()}"
        return f"exited with code {f.exitcode}"

    def likely_cause(f) -> int:
        # Killed (SIGKILL, out of memory, a crash) before an error exit, which may be a peer's lost connection;
        # SIGTERM last: torchrun sends it to the other ranks once one fails.
        return 2 if f.exitcode == -signal.SIGTERM else 0 if f.exitcode < 0 else 1

    order = sorted(failures.items(), key=lambda kv: (likely_cause(kv[1]), kv[1].timestamp, kv[0]))
    parts = [f"rank {rank} (pid {f.pid}, local rank {f.local_rank}) {how(f)}" for rank, f in order]
    return (f"error: the training job failed: {parts[0]}" + (f"; then {'; '.join(parts[1:])}" if parts[1:] else "")
            + ". A rank's own error, if it printed one, is above.")


if __name__ == "__main__":
    sys.exit(run_torchrun(sys.argv[1:]))
