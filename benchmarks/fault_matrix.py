"""Fault matrix: a training run killed with SIGKILL at many instants of its life, each resumed to the end.

The uninterrupted run is timed first; then, for each of N instants spread evenly over that time (from the process
start: imports, data, the first checkpoints, mid-epoch steps, epoch ends, the final test, results.json and
curves.png), a fresh run is started, killed with SIGKILL at that instant, and resumed with `--resume` until it
finishes (a kill before the run folder holds a checkpoint means starting again, as a user would). For every
instant it checks that the final weights (last.pt and best.pt) and results.json's test accuracy are bit-identical
to the uninterrupted run's, and how much training the kill cost (steps the resume had to repeat).

    CNNLAB_DATA=/work/shared/data python benchmarks/fault_matrix.py [--kills 32] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_environment

# mnist_cnn has dropout and augmentation is on: the RNG states and the batch generators must all resume.
SETTINGS = ["--model", "mnist_cnn", "--dataset", "digits", "--epochs", "6", "--batch-size", "128", "--subset", "900",
            "--augment", "translate=1,cutout=4", "--seed", "5", "--checkpoint-every", "0.5", "--quiet",
            "--lr", "3e-3", "--select", "best"]
QUICK = ["--model", "lenet", "--epochs", "2", "--subset", "300", "--checkpoint-every", "0.1"]  # the smoke test


def run(args: list[str], kill_after: float | None = None) -> tuple[int, float, float | None]:
    """(exit code, wall seconds, the time.time() of the kill or None) of `cnnlab train ARGS`, killed with SIGKILL
    after `kill_after` seconds if it is still running then."""
    t0, killed_at = time.perf_counter(), None
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode not in (0, -signal.SIGKILL):
        print(err[-2000:], file=sys.stderr)
    return proc.returncode, time.perf_counter() - t0, killed_at


def fingerprint(run_dir: Path) -> dict:
    """What must match: both checkpoints' weights (as hashes) and the test accuracy."""
    from cnnlab.training.checkpoint import load_checkpoint
    from cnnlab.models.weights import weights_digest

    out = {name: weights_digest(load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")["state_dict"])
           for name in ("last", "best")}
    out["test_acc"] = json.loads((run_dir / "results.json").read_text())["test_acc"]
    return out


def kill_and_resume(out: Path, instant: float) -> tuple[bool, str]:
    """(finished, what happened) for one run killed `instant` seconds after its start, then resumed."""
    code, _, killed_at = run([*SETTINGS, "--out", str(out)], kill_after=instant)
    if killed_at is None:
        return code == 0, "finished before the kill"
    if (out / "results.json").is_file():  # killed on its way out: complete, nothing to resume (resume says so)
        return True, "killed after its results were written: complete"
    last = out / "checkpoints" / "last.pt"
    if not last.is_file():  # killed before the first checkpoint: nothing to resume, start again
        shutil.rmtree(out, ignore_errors=True)
        code, _, _ = run([*SETTINGS, "--out", str(out)])
        return code == 0, "killed before any checkpoint: started again"
    since = killed_at - last.stat().st_mtime  # work done after the last checkpoint: what the kill cost
    code, _, _ = run(["--resume", str(out), "--quiet"])
    return code == 0, f"resumed; {since:.2f} s since the last checkpoint"


def last_value(args: list[str], flag: str) -> str:
    """The value the command uses for `flag`: its last one (later flags win)."""
    return args[len(args) - 1 - args[::-1].index(flag) + 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=32, help="instants to kill at (default: 32)")
    ap.add_argument("--quick", action="store_true", help="smoke test: one kill, half-way")
    args = ap.parse_args()
    kills = 1 if args.quick else args.kills
    if args.quick:
        SETTINGS.extend(QUICK)  # later flags win
    print_environment()  # in this process: no child's memory is measured here, and fingerprint() needs torch anyway
    with tempfile.TemporaryDirectory(prefix="cnnlab-faults-") as tmp:
        os.environ.setdefault("CNNLAB_CACHE", str(Path(tmp) / "cache"))
        reference = Path(tmp) / "reference"
        code, wall, _ = run([*SETTINGS, "--out", str(reference)])
        assert code == 0, "the uninterrupted run failed"
        expected = fingerprint(reference)
        print(f"uninterrupted: {wall:.2f} s wall, test accuracy {expected['test_acc']:.2%}; a checkpoint every "
              f"{last_value(SETTINGS, '--checkpoint-every')} s inside epochs")
        identical = 0
        for i in range(kills):
            instant = wall * (i + 0.5) / kills
            out = Path(tmp) / f"kill-{i:02d}"
            done, what = kill_and_resume(out, instant)
            same = done and fingerprint(out) == expected
            identical += same
            print(f"  kill at {instant:6.2f} s: {what}; {'bit-identical' if same else 'DIFFERENT'}")
            shutil.rmtree(out, ignore_errors=True)
        print(f"{identical} of {kills} killed runs ended bit-identical to the uninterrupted run "
              f"({identical / kills:.0%})")


if __name__ == "__main__":
    main()
