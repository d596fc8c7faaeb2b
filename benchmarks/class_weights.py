"""Class weights on an unbalanced folder: accuracy, balanced accuracy and minority recall with `--class-weights none`
against `auto`, over a few seeds.

The folder is made from real MNIST digits written as PNGs to a temporary folder: train/ holds MAJORITY images of one
digit and MINORITY of another (e.g. 300 and 30, from MNIST's training split); test/ holds the same number of each
digit from MNIST's test split (balanced, so that the minority recall is measured on enough images). Every other
setting is the default, except `--augment translate=2` (the folder defaults flip, which changes a digit). All runs
train in this process, one after another, with the same seeds for both settings.

    CNNLAB_DATA=/work/shared/data python benchmarks/class_weights.py [--pairs 4,9 3,5] [--seeds 3]
        [--majority 300] [--minority 30] [--test 200] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from _common import print_environment
from PIL import Image


def write_folder(root: Path, pair: tuple[int, int], counts: dict[str, tuple[int, int]], data_dir: str) -> Path:
    """root/{train,test}/<digit>/*.png: counts[split] = (images of pair[0], images of pair[1])."""
    from cnnlab.data import get_dataset

    for split, (a, b) in counts.items():
        data = get_dataset("mnist", split, data_dir, val_size=0)
        for digit, n in zip(pair, (a, b)):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for i in (data.targets == digit).nonzero().flatten()[:n].tolist():
                Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i}.png")
    return root


def one_run(folder: Path, minority: str, setting: str, seed: int, epochs: int | None, out: Path) -> dict:
    import cnnlab

    extra = {"epochs": epochs} if epochs else {}
    run = cnnlab.train(dataset=f"folder:{folder}", class_weights=setting, augment="translate=2", seed=seed,
                       out=str(out), quiet=True, **extra)
    r = run.results
    recall = next(c["recall"] for c in r["per_class"] if c["class"] == minority)
    return {"acc": r["test_acc"], "balanced": r["test_balanced_acc"], "minority_recall": recall,
            "seconds": r["train_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=["4,9", "3,5"], help="majority,minority digits")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--majority", type=int, default=300)
    p.add_argument("--minority", type=int, default=30)
    p.add_argument("--test", type=int, default=200, help="test images of each digit")
    p.add_argument("--epochs", type=int, default=None, help="default: the default")
    args = p.parse_args()
    data_dir = os.environ.get("CNNLAB_DATA")
    print_environment()
    print(f"train {args.majority}:{args.minority}, test {args.test}:{args.test}, seeds 0-{args.seeds - 1}")
    print("pair  setting   accuracy  balanced  minority recall  (mean over seeds; min-max)  training s (median)")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.pairs:
            pair = tuple(int(d) for d in spec.split(","))
            folder = write_folder(Path(tmp) / spec.replace(",", "-"), pair,
                                  {"train": (args.majority, args.minority), "test": (args.test, args.test)}, data_dir)
            for setting in ("none", "auto"):
                rows = [one_run(folder, str(pair[1]), setting, s, args.epochs, Path(tmp) / f"{spec}-{setting}-{s}")
                        for s in range(args.seeds)]
                cells = []
                for key in ("acc", "balanced", "minority_recall"):
                    xs = [r[key] for r in rows]
                    cells.append(f"{statistics.mean(xs):.1%} ({min(xs):.1%}-{max(xs):.1%})")
                seconds = statistics.median(r["seconds"] for r in rows)
                print(f"{spec}   {setting:<8}  " + "  ".join(cells) + f"  {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
