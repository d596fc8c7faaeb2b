"""Folders at in-memory speed: start-up of a first and a second run on a PNG folder, and epoch throughput of a
folder held in memory vs one streamed from disk, each against built-in MNIST measured in the same run.

Real MNIST training images (from CNNLAB_DATA) are written as a PNG folder (one sub-folder per digit) to a temp
dir. Start-up is wall time from starting a `python` process to the end of the first optimizer step of
`cnnlab.train(dataset="folder:...", model="fastnet", epochs=1)`: with an empty cache (first run) and again with
the cache that run left (second run); the baselines are the same run on built-in `mnist` (its decode cache warm)
and a process that only imports what every run imports (cnnlab, torch, torch._dynamo). Epochs are one pass of
`BatchLoader` (augmented, normalized batches of 256, no model) over the folder's training split held in memory,
over the same split streamed from disk by decoding threads (forced with a small in-memory limit), and over as many
built-in MNIST images. Medians of the rounds; rounds interleave the variants so drifts hit all alike.

    CNNLAB_DATA=../shared/data python benchmarks/folder_cache.py [--images 8000] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, print_environment, timed

CHILD = """
import os, sys, time
import cnnlab
from cnnlab.training import setup
load_splits = setup.load_splits
def timed_splits(*a, **k):
    t = time.perf_counter(); out = load_splits(*a, **k)
    print(f"DATA {time.perf_counter() - t:.4f}", flush=True)
    return out
setup.load_splits = timed_splits
class FirstStep(cnnlab.Callback):
    def on_step_end(self, step, loss):
        print(f"STEP {time.time():.4f}", flush=True)
        os._exit(0)
cnnlab.train(dataset=sys.argv[1], model="fastnet", epochs=1, seed=0, quiet=True, out=sys.argv[2],
             subset=int(sys.argv[3]), callbacks=[FirstStep()])
"""
FLOOR = "import time, cnnlab.training, torch, torch._dynamo; print(f'STEP {time.time():.4f}', flush=True)"


def write_png_folder(root: Path, n: int) -> None:
    """The first `n` MNIST training images as root/<digit>/<index>.png."""
    from PIL import Image

    from cnnlab.data import get_dataset

    data = get_dataset("mnist", "train", val_size=0)
    for i in range(n):
        folder = root / str(int(data.targets[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i:05d}.png")


def start_up(args: list[str], cache: Path) -> tuple[float, float | None]:
    """(seconds from process start to the end of the first step, seconds spent loading the splits)."""
    env = dict(os.environ, CNNLAB_CACHE=str(cache))
    t0 = time.time()
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line[:5] in ("STEP ", "DATA "))
    if "STEP" not in lines:
        raise SystemExit(f"the child process failed:\n{out.stderr[-2000:]}")
    return float(lines["STEP"]) - t0, float(lines["DATA"]) if "DATA" in lines else None


def start_up_rounds(folder: Path, n: int, rounds: int, work: Path) -> dict[str, list[tuple[float, float | None]]]:
    runs = work / "runs"
    child = ["-c", CHILD]
    shared = work / "cache-mnist"
    start_up([*child, "mnist", str(runs / "warm"), str(n)], shared)  # fill built-in MNIST's decode cache once
    out: dict[str, list] = {"first run on the folder": [], "second run on the folder": [],
                            f"built-in mnist, {n:,} images": [], "imports only": []}
    for r in range(rounds):
        cache = work / f"cache-{r}"
        out["first run on the folder"].append(start_up([*child, f"folder:{folder}", str(runs / f"a{r}"), "0"], cache))
        out["second run on the folder"].append(start_up([*child, f"folder:{folder}", str(runs / f"b{r}"), "0"], cache))
        out[f"built-in mnist, {n:,} images"].append(start_up([*child, "mnist", str(runs / f"m{r}"), str(n)], shared))
        out["imports only"].append(start_up(["-c", FLOOR], shared))
    return out


def epoch_rounds(folder: Path, rounds: int, workers: int) -> dict[str, list[float]]:
    import torch

    from cnnlab.data import Augment, BatchLoader, Pipeline, get_dataset
    from cnnlab.data.folder import get_folder_dataset

    memory = get_dataset(f"folder:{folder}", "train", image_size=(28, 28), val_size=0)
    mnist = get_dataset("mnist", "train", val_size=0).subset(torch.arange(len(memory)))
    stream = get_folder_dataset(str(folder), "train", image_size=(28, 28), val_size=0, in_memory_limit=1)
    pipe = Pipeline.build(1, (1, 28, 28), memory.info.mean, memory.info.std)
    aug = Augment(degrees=10, translate=3)
    loaders = {
        f"built-in mnist, {len(mnist):,} images, in memory": BatchLoader(mnist, 256, pipe, augment=aug, shuffle=True),
        f"folder, {len(memory):,} images, in memory": BatchLoader(memory, 256, pipe, augment=aug, shuffle=True),
        f"folder, streamed ({workers} threads)": BatchLoader(stream, 256, pipe, augment=aug, shuffle=True,
                                                             num_workers=workers),
    }
    gc.collect()
    gc.freeze()
    results: dict[str, list[float]] = {k: [] for k in loaders}
    names = list(loaders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # each loader takes each place in turn
            loader = loaders[name]
            gc.collect()
            results[name] += timed(lambda loader=loader: [None for _ in loader], 1)
    return {k: [len(loaders[k].targets) / s for s in v] for k, v in results.items()}


def print_start_up(starts: dict[str, list[tuple[float, float | None]]], args: argparse.Namespace) -> None:
    base = median([s for s, _ in starts["imports only"]])
    print(f"\nstart-up, process start to the end of the first step (fastnet, {args.images:,} 28x28 PNGs), "
          f"median of {args.rounds}:")
    for name, values in starts.items():
        total = median([s for s, _ in values])
        data = [d for _, d in values if d is not None]
        load = f"  loading the splits {median(data):6.2f} s" if data else ""
        print(f"  {name:32s} {total:6.2f} s  {total / base:5.2f}x imports only{load}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads of the streamed folder")
    ap.add_argument("--epochs-only", action="store_true", help="skip the start-up runs")
    args = ap.parse_args()
    print_environment()
    with tempfile.TemporaryDirectory(prefix="cnnlab-folder-bench-") as tmp:
        work = Path(tmp)
        folder = work / "mnist-png"
        write_png_folder(folder, args.images)
        if not args.epochs_only:
            print_start_up(start_up_rounds(folder, args.images, args.rounds, work), args)
        os.environ["CNNLAB_CACHE"] = str(work / "cache-epochs")
        rates = epoch_rounds(folder, args.rounds, args.workers)
        ref = median(next(iter(rates.values())))
        print(f"\none augmented epoch (batch 256, no model), median of {args.rounds}:")
        for name, values in rates.items():
            print(f"  {name:40s} {median(values):>10,.0f} images/s  {median(values) / ref:5.2f}x built-in mnist")


if __name__ == "__main__":
    main()
