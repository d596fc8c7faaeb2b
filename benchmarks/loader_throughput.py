"""Images/s of one augmented MNIST epoch: cnnlab's in-memory batch loader vs torchvision's per-sample DataLoader.

Both apply a small random affine (rotation up to 10 degrees, shift up to ~3 pixels) and normalize; both are
measured in the same process, in rounds of one epoch per loader, and the median of the rounds is reported.

    CNNLAB_DATA=../shared/data python benchmarks/loader_throughput.py [--repeats 5] [--limit N]
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torchvision.transforms as T
from _common import median, print_environment, timed
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import MNIST

from cnnlab.cli.tuning import tune_malloc
from cnnlab.data import Augment, BatchLoader, Pipeline, get_dataset, resolve_data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke runs)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader workers to try")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    # As in `cnnlab train`: glibc keeps freed batch-sized blocks in the heap instead of mapping them anew. It is a
    # process-wide setting, so torchvision's loader (and its forked workers) runs under it too.
    tune_malloc()
    print_environment()
    root = resolve_data_dir()

    train = get_dataset("mnist", "train")
    if args.limit:
        train.images, train.targets = train.images[: args.limit], train.targets[: args.limit]
    n = len(train)
    pipe = Pipeline.build(1, (1, 28, 28), train.info.mean, train.info.std)
    ours = BatchLoader(train, args.batch_size, pipe, augment=Augment(degrees=10, translate=3), shuffle=True)

    def ours_epoch() -> None:
        for x, y in ours:
            pass

    tv = MNIST(str(root), train=True, download=False, transform=T.Compose([
        T.RandomAffine(degrees=10, translate=(0.1, 0.1)), T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]))
    tv = Subset(tv, range(n))

    epochs = {"cnnlab BatchLoader (in memory, batched augmentation)": ours_epoch}
    for workers in args.workers:
        loader = DataLoader(tv, batch_size=args.batch_size, shuffle=True, num_workers=workers)

        def tv_epoch(loader=loader) -> None:
            for x, y in loader:
                pass

        epochs[f"torchvision DataLoader, {workers} workers"] = tv_epoch
    # Rounds of one epoch per loader, so drifts in the machine's speed hit every loader alike. As in `cnnlab`'s
    # CLI, the objects alive after set-up (torch's, mostly) are frozen out of the cyclic garbage collector, and
    # each epoch starts after a collection: otherwise a full collection, triggered by the per-sample loader's
    # garbage, lands in whichever epoch comes next and costs it ~0.3 s.
    gc.collect()
    gc.freeze()
    results: dict[str, list[float]] = {name: [] for name in epochs}
    for _ in range(args.repeats):
        for name, epoch in epochs.items():
            gc.collect()
            results[name] += timed(epoch, 1)

    ours_rate = n / median(results["cnnlab BatchLoader (in memory, batched augmentation)"])
    best_tv = max(n / median(v) for k, v in results.items() if k.startswith("torchvision"))
    print(f"\none augmented epoch of {n:,} MNIST images, batch {args.batch_size}, median of {args.repeats}:")
    for name, secs in results.items():
        print(f"  {name:55s} {median(secs):7.3f} s  {n / median(secs):>10,.0f} images/s")
    print("  every epoch (s): " + "; ".join(f"{k.split(' (')[0]}: {', '.join(f'{v:.2f}' for v in vs)}"
                                          for k, vs in results.items()))
    print(f"  speed-up over the best torchvision setting: {ours_rate / best_tv:.1f}x")


if __name__ == "__main__":
    main()
