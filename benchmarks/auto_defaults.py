"""Defaults that read the data: `cnnlab train --dataset folder:X` with no other option, against the best of a few
hand-picked configurations of the zoo, on folders made from real data (accuracy on each folder's test/ split, and
the wall time of the whole command, start-up and final test included).

    CNNLAB_DATA=/work/shared/data python benchmarks/auto_defaults.py [--folders mnist-8k,tiny-photos] [--quick]
        [--seeds 0,1,2]

The folders (PNG files in a temporary directory): MNIST and Fashion-MNIST with 8,000 training images and 2,000 test
images; the bundled 8x8 digits (one folder: cnnlab carves its test split); two-class subsets of 160 training images
(MNIST 4 vs 9, Fashion-MNIST shirt vs T-shirt); RGB photo crops of five sample photos (varied sizes, 60 per class).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_environment  # noqa: E402

OLD = ["--lr", "3e-3", "--select", "best"]  # the defaults before auto, where a configuration leaves them open
HAND = {  # the configurations tried by hand per folder (the best one is reported)
    "glyph": [["--model", "fastnet", "--augment", "translate=2", "--epochs", "15", "--batch-size", "64", *OLD],
              ["--model", "fastnet", "--augment", "translate=2", "--epochs", "30"],
              ["--model", "lenet"]],
    "fashion": [["--model", "fastnet", "--augment", "translate=2,flip", "--epochs", "15", "--batch-size", "64", *OLD],
                ["--model", "fastnet", "--augment", "flip", "--epochs", "30"]],
    "small": [["--model", "fastnet", "--augment", "translate=2,flip", "--epochs", "60", "--batch-size", "16"],
              ["--model", "fastnet", "--augment", "translate=2", "--epochs", "60", "--batch-size", "16"],
              ["--model", "lenet", "--epochs", "60"]],
    "photo": [["--model", "fastnet", "--input-size", "3x64x64", "--augment", "translate=8,flip", "--epochs", "60",
               "--batch-size", "16"],
              ["--model", "small_convnet", "--input-size", "3x64x64", "--augment", "flip", "--epochs", "30"]],
}


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_split(images, labels, names, root: Path, keep: dict[int, int] | None = None) -> None:
    """PNG files root/<class>/<i>.png; `keep` maps a label to the folder name (others skipped)."""
    for i, (img, y) in enumerate(zip(images, labels)):
        if keep is None or int(y) in keep:
            save_png(img, root / (keep[int(y)] if keep else names[int(y)]) / f"{i:05d}.png")


def mnist_like(name: str, root: Path, n_train: int, n_test: int, keep: dict[int, int] | None = None) -> None:
    from cnnlab.data import get_dataset

    data_dir = os.environ.get("CNNLAB_DATA")
    for split, n, out in (("train", n_train, "train"), ("test", n_test, "test")):
        data = get_dataset(name, split, data_dir, val_size=0) if split == "train" else get_dataset(name, "test",
                                                                                                    data_dir)
        idx = np.arange(len(data.targets))
        if keep:
            idx = idx[np.isin(data.targets.numpy(), list(keep))]
        idx = idx[:n]
        write_split(data.images[idx, 0].numpy(), data.targets[idx].numpy(), list(data.classes), root / out, keep)


def digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16 * 255).round().astype(np.uint8)
    write_split(imgs, d.target, [str(i) for i in range(10)], root)


def photo_crops(root: Path, per_class: int, n_test: int) -> None:
    """Crops of 40-120 px from five sample photos (each photo a class), RGB, each split from its own half."""
    src = Path(os.environ.get("CNNLAB_DATA", "")) / "images"
    rng = np.random.default_rng(0)
    for f in sorted(src.glob("*.*")):
        im = np.asarray(Image.open(f).convert("RGB"))
        h, w = im.shape[:2]
        for split, n, (x0, x1) in (("train", per_class, (0, w // 2)), ("test", n_test, (w // 2, w))):
            for i in range(n):
                s = int(rng.integers(40, min(120, h, x1 - x0)))
                y, x = int(rng.integers(0, h - s)), int(rng.integers(x0, x1 - s))
                save_png(np.ascontiguousarray(im[y:y + s, x:x + s]), root / split / f.stem / f"{i:04d}.png")


def build(name: str, root: Path, quick: bool) -> tuple[Path, str]:
    """Write one folder; (its path, its kind of hand configurations)."""
    k = 10 if quick else 1
    path = root / name
    if name == "mnist-8k":
        mnist_like("mnist", path, 8000 // k, 2000 // k)
    elif name == "fashion-8k":
        mnist_like("fashion-mnist", path, 8000 // k, 2000 // k)
    elif name == "digits":
        digits(path)
    elif name == "mnist-4v9-160":
        mnist_like("mnist", path, 160, 1000 // k, keep={4: "four", 9: "nine"})
    elif name == "fashion-shirts-160":
        mnist_like("fashion-mnist", path, 160, 1000 // k, keep={0: "tshirt", 6: "shirt"})
    elif name == "photo-crops":
        photo_crops(path, 60 // (2 if quick else 1), 40 // (2 if quick else 1))
    kind = {"mnist-8k": "glyph", "digits": "glyph", "fashion-8k": "fashion", "photo-crops": "photo"}.get(name, "small")
    return path, kind


def train(folder: Path, options: list[str], work: Path, quick: bool, threads: int = 0) -> dict:
    """One `cnnlab train` process: test accuracy, wall seconds, what auto chose."""
    out = work / f"run{len(list(work.iterdir()))}"
    extra = ["--epochs", "1"] if quick and "--epochs" not in options else []
    cmd = [sys.executable, "-m", "cnnlab", "train", "--dataset", f"folder:{folder}", *options, *extra,
           "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})  # the same for every run
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"acc": float("nan"), "wall": wall, "error": proc.stderr.strip().splitlines()[-1:]}
    results = json.loads((out / "results.json").read_text())
    auto = json.loads((out / "config.json").read_text()).get("auto") or {}
    return {"acc": results["test_acc"], "wall": wall, "line": auto.get("line", "")}


def train_seeds(folder: Path, options: list[str], work: Path, args: argparse.Namespace) -> dict:
    """train() once per seed: the mean accuracy, the mean wall time, each seed's accuracy."""
    runs = [train(folder, [*options, "--seed", seed], work, args.quick, args.threads) for seed in args.seeds.split(",")]
    accs = [r["acc"] for r in runs]
    return {**runs[0], "acc": sum(accs) / len(accs), "accs": accs, "wall": sum(r["wall"] for r in runs) / len(runs)}


def _accs(r: dict) -> str:
    return "" if len(r["accs"]) == 1 else " (seeds: " + ", ".join(f"{a:.2%}" for a in r["accs"]) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folders", default="mnist-8k,fashion-8k,digits,mnist-4v9-160,fashion-shirts-160,photo-crops")
    p.add_argument("--quick", action="store_true", help="smaller folders, one epoch, one hand configuration")
    p.add_argument("--hand", type=int, default=0, help="try only the first N hand configurations (0: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds: each configuration runs once per seed and "
                   "is reported by its mean (one run's accuracy on 1,000 test images is +-2.5 points at 95%%)")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run (0: unset): on a shared "
                   "machine, one thread per process avoids oversubscription")
    args = p.parse_args()
    print_environment()
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp), Path(tmp) / "runs"
        work.mkdir()
        rows = []
        for name in args.folders.split(","):
            folder, kind = build(name, root, args.quick)
            auto = train_seeds(folder, [], work, args)
            tried = HAND[kind][: 1 if args.quick else (args.hand or None)]
            hands = [(opts, train_seeds(folder, opts, work, args)) for opts in tried]
            best_opts, best = max(hands, key=lambda h: h[1]["acc"])
            print(f"{name}: {auto.get('line') or auto.get('error')}\n  auto: {auto['acc']:.2%}{_accs(auto)} in "
                  f"{auto['wall']:.0f} s")
            for opts, r in hands:
                print(f"  hand {' '.join(opts)}: {r['acc']:.2%}{_accs(r)} in {r['wall']:.0f} s")
            rows.append((name, auto, best, " ".join(best_opts)))
            sys.stdout.flush()
        mean = " (means over seeds " + args.seeds + ")" if "," in args.seeds else ""
        print(f"\n{'folder':<20} {'auto':>8} {'wall':>6}   {'hand best':>9} {'wall':>6}   gap    hand configuration{mean}")
        for name, auto, best, opts in rows:
            gap = (auto["acc"] - best["acc"]) * 100
            print(f"{name:<20} {auto['acc']:>8.2%} {auto['wall']:>5.0f}s   {best['acc']:>9.2%} {best['wall']:>5.0f}s   "
                  f"{gap:+5.1f}  {opts}")


if __name__ == "__main__":
    main()
