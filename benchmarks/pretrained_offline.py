"""Real ImageNet features offline: EfficientNet-Lite0 with the package's weights against random initialization.

A small photo folder is cut from scikit-image's sample photos (`--classes` photos, `--per-class` random square crops
of 15-30% of the shorter edge each, saved at 64x64): a few hundred images of a few classes, as a user might have.
Each configuration trains once per seed (`cnnlab.train`, input 96x96, the folder's default split) and prints its
test accuracy (mean over seeds, and each) and median wall seconds; the figures go to benchmarks/README.md.

    python benchmarks/pretrained_offline.py [--seeds 3] [--per-class 50] [--epochs 8] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from _common import print_environment
from PIL import Image

import cnnlab

CLASSES = ("astronaut", "chelsea", "coffee")


def make_folder(root: Path, classes: tuple[str, ...], per_class: int, seed: int = 1) -> Path:
    """One class per sample photo: `per_class` random crops (15-30% of the shorter edge), 64x64, PNG."""
    rng = random.Random(seed)
    for name in classes:
        img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        w, h = img.size
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            s = int(min(w, h) * rng.uniform(0.15, 0.3))
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            img.crop((x, y, x + s, y + s)).resize((64, 64), Image.BILINEAR).save(root / name / f"{k:03d}.png")
    return root


def configurations(epochs: int) -> dict[str, dict]:
    """Name -> the `cnnlab.train` settings that differ between configurations."""
    return {
        "efficientnet_lite0 ImageNet, --feature-extraction": dict(
            model="efficientnet_lite0", weights="DEFAULT", feature_extraction=True),
        f"efficientnet_lite0 ImageNet, fine-tuned ({epochs} epochs, unfrozen after 2)": dict(
            model="efficientnet_lite0", weights="DEFAULT", epochs=epochs, unfreeze_after=2),
        f"efficientnet_lite0 ImageNet, fine-tuned ({epochs} epochs, unfrozen after 2, lr 1e-3)": dict(
            model="efficientnet_lite0", weights="DEFAULT", epochs=epochs, unfreeze_after=2, lr=1e-3),
        "efficientnet_lite0 random, --feature-extraction": dict(
            model="efficientnet_lite0", weights="none", feature_extraction=True),
        f"efficientnet_lite0 random, trained ({epochs} epochs)": dict(
            model="efficientnet_lite0", weights="none", epochs=epochs),
        f"resnet18 random, trained ({epochs} epochs)": dict(model="resnet18", weights="none", epochs=epochs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--classes", nargs="+", default=list(CLASSES))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a loaded machine)")
    p.add_argument("--only", help="run the configurations whose name contains this text")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print_environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "crops", tuple(args.classes), args.per_class)
        print(f"folder: {len(args.classes)} classes x {args.per_class} crops of skimage.data photos, 64x64")
        for name, settings in configurations(args.epochs).items():
            if args.only and args.only not in name:
                continue
            accs, secs = [], []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                run = cnnlab.train(dataset=f"folder:{folder}", input_size="96x96", seed=seed, quiet=True,
                                   out=str(Path(tmp) / f"run-{len(rows)}-{seed}"), **settings)
                secs.append(time.perf_counter() - t0)
                accs.append(run.results["test_acc"])
            rows.append({"config": name, "test_acc_mean": statistics.mean(accs), "test_accs": accs,
                         "seconds_median": statistics.median(secs), "seconds": secs})
            print(f"{name:62s} acc {statistics.mean(accs):6.1%} ({', '.join(f'{a:.1%}' for a in accs)})  "
                  f"{statistics.median(secs):6.1f} s median", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
