"""Peak resident memory of `cnnlab train --recipe fast-mnist`, next to what `import torch` alone costs.

Each measurement is one child process; its peak resident set size comes from wait4 (ru_maxrss), so the figure
includes everything the process ever touched: the torch libraries, the data, training and the exit. This process
never imports torch: a child's ru_maxrss starts from its parent's resident size at the fork.

    CNNLAB_DATA=/work/shared/data python benchmarks/memory.py [--recipe fast-mnist] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from time_to_accuracy import print_environment_from_a_child


def peak_mib(cmd: list[str]) -> tuple[float, int]:
    """(peak RSS in MiB, exit code) of one child."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="fast-mnist")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: train on 1,000 images with one thread, one baseline")
    args = ap.parse_args()
    print_environment_from_a_child()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="cnnlab-mem-") as tmp:
        train = [py, "-m", "cnnlab", "train", "--recipe", args.recipe, "--out", os.path.join(tmp, "run"), "--quiet"]
        if args.quick:
            train += ["--subset", "1000", "--threads", "1"]
        rows = [
            ("python -c 'import torch', exiting with os._exit (no teardown)",
             [py, "-c", "import os, torch; os._exit(0)"]),
            ("python -c 'import torch' (normal exit)", [py, "-c", "import torch"]),
            ("python -c 'import torch, torch._dynamo' (torch.optim imports dynamo)",
             [py, "-c", "import torch, torch._dynamo"]),
            (f"cnnlab train --recipe {args.recipe}" + (" (quick)" if args.quick else ""), train),
        ]
        if args.quick:  # the smoke test: one baseline and the run
            rows = rows[1:2] + rows[3:]
        print("\npeak resident memory (one child process each):")
        for label, cmd in rows:
            mib, code = peak_mib(cmd)
            print(f"  {label:75s} {mib:7.0f} MiB" + ("" if code == 0 else f"  (exit code {code})"), flush=True)
    print("goal for fast-mnist: <= 1024 MiB (1 GiB)")


if __name__ == "__main__":
    main()
