"""Folders of any size: what a first and a second run on a folder of N small images cost, for N = 10,000, 100,000 and
1,000,000, and MNIST as 70,000 PNGs against the same run on its IDX files.

    CNNLAB_DATA=../shared/data python benchmarks/folder_scale.py                   # 10k, 100k, 1M, and MNIST
    CNNLAB_DATA=../shared/data python benchmarks/folder_scale.py --sizes 2000 --no-mnist   # a smoke run
    CNNLAB_DATA=../shared/data python benchmarks/folder_scale.py --sizes 10000 --repeats 5  # MNIST, five rounds

A folder of N images: MNIST's training digits as 28x28 gray PNGs in ten class folders, cycled (and shifted by a
pixel or two after the first pass, so that no two files are alike) to N. Each run is `cnnlab.train(dataset=
"folder:DIR", model="fastnet", epochs=1, batch_size=256, val_size=0.05)` (MNIST: 5000, as the IDX run's) in a fresh
process: the first with an empty cache, the second with the cache the first left. Measured: the scan alone (first,
then again: the second is the stat-only pass over the files), seconds to the end of the first optimizer step, the
whole run, the process's peak memory, and the cache's size on disk. Costs should grow linearly: the exponent between
two sizes is log(cost ratio) / log(size ratio) (1.0 is linear). The MNIST runs go in rounds (IDX, PNG first run,
PNG second run), their medians compared, once with the library (one process) and once with the `cnnlab train`
command (which reads a first scan in worker processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_environment

CHILD = """
import os, sys, time
import cnnlab
class FirstStep(cnnlab.Callback):
    seen = False
    def on_step_end(self, step, loss):
        if not self.seen:
            self.seen = True
            print(f"STEP {time.time():.4f}", flush=True)
argv = sys.argv[1:]
cnnlab.train(dataset=argv[0], model="fastnet", epochs=1, batch_size=256, val_size=float(argv[2]), seed=0,
             quiet=True, out=argv[1], overwrite=True, callbacks=[FirstStep()])
"""


def write_folder(root: Path, n: int, test: int = 0) -> Path:
    """n MNIST training digits (cycled, shifted after the first pass) as PNGs; with `test`, train/ and test/ (the
    real test digits)."""
    import numpy as np
    from PIL import Image

    from cnnlab.data import get_dataset

    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{n} {test}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    train = get_dataset("mnist", "train", val_size=0)
    images, targets = train.images[:, 0].numpy(), train.targets.numpy()
    base = root / "train" if test else root
    for d in range(10):
        (base / str(d)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k, lap = i % len(images), i // len(images)
        img = images[k] if not lap else np.roll(images[k], (lap % 3 - 1, lap // 3 % 3 - 1), axis=(0, 1))
        Image.fromarray(img).save(base / str(int(targets[k])) / f"{i:07d}.png", compress_level=1)
    if test:
        data = get_dataset("mnist", "test")
        for d in range(10):
            (root / "test" / str(d)).mkdir(parents=True, exist_ok=True)
        for i, (img, t) in enumerate(zip(data.images[:test, 0].numpy(), data.targets[:test].numpy())):
            Image.fromarray(img).save(root / "test" / str(int(t)) / f"{i:05d}.png", compress_level=1)
    marker.write_text(f"{n} {test}")
    return root


def scan_seconds(folder: Path, cache: Path) -> tuple[float, float]:
    """(first scan, second scan) in fresh processes sharing `cache`."""
    code = ("import sys, time; from pathlib import Path; from cnnlab.data.scan import scan_folder; "
            "t = time.perf_counter(); scan_folder(Path(sys.argv[1])); print(time.perf_counter() - t)")
    env = {**os.environ, "CNNLAB_CACHE": str(cache)}
    return tuple(float(subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True,
                                      text=True, check=True).stdout.split()[-1]) for _ in range(2))


def one_run(dataset: str, out: Path, cache: Path, val_size: float = 0.05, command: bool = False) -> dict:
    """Seconds to the first step (None for the command) and in all, peak memory (MiB), of `cnnlab.train` in a fresh
    process, or with `command`, of `cnnlab train` (which may read a first scan in worker processes: their memory,
    forked copies of the process, is not counted)."""
    env = {**os.environ, "CNNLAB_CACHE": str(cache)}
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", CHILD, dataset, str(out), str(val_size)]
    if command:
        argv = [sys.executable, "-m", "cnnlab", "train", "--dataset", dataset, "--model", "fastnet", "--epochs", "1",
                "--batch-size", "256", "--val-size", str(val_size), "--seed", "0", "--quiet", "--out", str(out),
                "--overwrite"]
    with open(log, "w") as f:
        t0 = time.time()
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak
        seconds = time.time() - t0
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0 or ("STEP " not in text and not command):
        raise SystemExit(f"the run on {dataset} failed:\n{text[-3000:]}")
    step = None if command else float(next(line.split()[1] for line in text.splitlines()
                                            if line.startswith("STEP "))) - t0
    results = json.loads((out / "results.json").read_text())
    return {"first_step_s": step, "run_s": seconds, "peak_mib": usage.ru_maxrss / 1024, "test_acc": results["test_acc"]}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def exponent(a: tuple[int, float], b: tuple[int, float]) -> float:
    return math.log(b[1] / a[1]) / math.log(b[0] / a[0])


def compare_mnist(folder: Path, work: Path, repeats: int, command: bool) -> None:
    """MNIST as PNGs against its IDX files, in rounds (IDX, PNG first run, PNG second run: a drift in the machine's
    speed falls on all three), compared by their medians."""
    rounds = []
    for _ in range(repeats):
        cache = work / "cache-mnist-png"
        shutil.rmtree(cache, ignore_errors=True)
        idx = one_run("mnist", work / "runs" / "idx", work / "cache-idx", 5000, command)
        first = one_run(f"folder:{folder}", work / "runs" / "png-first", cache, 5000, command)
        second = one_run(f"folder:{folder}", work / "runs" / "png-second", cache, 5000, command)
        rounds.append((idx, first, second))
        print(f"  round {len(rounds)}: IDX {idx['run_s']:.1f} s, PNG first {first['run_s']:.1f} s "
              f"({first['run_s'] / idx['run_s']:.2f}x), second {second['run_s']:.1f} s "
              f"({second['run_s'] / idx['run_s']:.2f}x)", flush=True)
    idx_s, first_s, second_s = (statistics.median(r[k]["run_s"] for r in rounds) for k in range(3))
    peaks = [statistics.median(r[k]["peak_mib"] for r in rounds) for k in range(3)]
    accs = " / ".join(f"{r['test_acc']:.2%}" for r in rounds[-1])
    how = "`cnnlab train` (the command)" if command else "`cnnlab.train` (the library)"
    print(f"MNIST, one epoch of fastnet, {how}, median of {len(rounds)}: IDX files {idx_s:.1f} s; as 70,000 PNGs: "
          f"first run {first_s:.1f} s ({first_s / idx_s:.2f}x, goal <= 1.6x), second run {second_s:.1f} s "
          f"({second_s / idx_s:.2f}x, goal <= 1.25x); peak {peaks[0]:.0f} / {peaks[1]:.0f} / {peaks[2]:.0f} MiB; "
          f"test accuracy {accs}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="folder sizes (default: 10000,100000,1000000)")
    ap.add_argument("--work", type=Path, help="where the folders are made and kept (default: a temporary folder)")
    ap.add_argument("--no-mnist", action="store_true", help="skip MNIST as 70,000 PNGs against its IDX files")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the MNIST runs (IDX, PNG first, PNG second), "
                    "in turn; medians are compared (default: 3)")
    args = ap.parse_args()
    print_environment()
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnlab-folder-scale-"))
    rows = []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            folder = write_folder(work / f"folder-{n}", n)
            cache = work / f"cache-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            scans = scan_seconds(folder, cache)
            shutil.rmtree(cache, ignore_errors=True)
            first = one_run(f"folder:{folder}", work / "runs" / f"first-{n}", cache)
            size = folder_bytes(cache)
            second = one_run(f"folder:{folder}", work / "runs" / f"second-{n}", cache)
            rows.append((n, scans, first, second, size))
            print(f"{n:>9,} images: scan {scans[0]:6.1f} s, again {scans[1]:5.1f} s | first run: first step "
                  f"{first['first_step_s']:6.1f} s, all {first['run_s']:6.1f} s, peak {first['peak_mib']:5.0f} MiB | "
                  f"second run: first step {second['first_step_s']:5.1f} s, all {second['run_s']:6.1f} s, peak "
                  f"{second['peak_mib']:5.0f} MiB | cache {size / 2**20:6.0f} MiB", flush=True)
        for a, b in zip(rows, rows[1:]):
            print(f"exponent {a[0]:,} -> {b[0]:,}: scan {exponent((a[0], a[1][0]), (b[0], b[1][0])):.2f}, "
                  f"second scan {exponent((a[0], a[1][1]), (b[0], b[1][1])):.2f}, first run "
                  f"{exponent((a[0], a[2]['run_s']), (b[0], b[2]['run_s'])):.2f}, second run "
                  f"{exponent((a[0], a[3]['run_s']), (b[0], b[3]['run_s'])):.2f}, cache "
                  f"{exponent((a[0], a[4]), (b[0], b[4])):.2f}")
        if not args.no_mnist:
            folder = write_folder(work / "mnist-png", 60_000, test=10_000)
            one_run("mnist", work / "runs" / "idx", work / "cache-idx", 5000)  # its decode cache filled once
            for command in (False, True):
                compare_mnist(folder, work, args.repeats, command)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
