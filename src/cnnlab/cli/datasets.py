"""`cnnlab datasets [--show NAME]`: the datasets, whether their files are here, and a grid of samples."""

from __future__ import annotations

import argparse
import json
import re


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="list datasets, or show samples of one",
        description="List the built-in datasets with classes, image size, channels, number of images and "
        "whether their files are in the data directory (--data-dir > $CNNLAB_DATA > ~/.cache/cnnlab/data). "
        "Your own images work as folder:PATH (one sub-folder per class).",
        epilog="examples:\n  cnnlab datasets\n"
        "  cnnlab datasets --show mnist            # -> cnnlab-figures/mnist-samples.png\n"
        "  cnnlab datasets --show folder:photos --per-class 4 --out photos.png\n"
        "  cnnlab datasets --show cifar10 --download\n"
        "  cnnlab datasets --show folder:photos --augment   # what training sees",
    )
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder holding the datasets (default: $CNNLAB_DATA or ~/.cache/cnnlab/data)")
    p.add_argument("--show", metavar="NAME", help="write a PNG grid of samples per class of this dataset")
    p.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="split to sample (--show; default: train)")
    p.add_argument("--per-class", type=int, metavar="N", default=8,
                   help="samples per class in the grid (default: 8)")
    p.add_argument("--out", metavar="FILE", help="PNG path for --show (default: cnnlab-figures/<name>-samples.png)")
    p.add_argument("--augment", nargs="?", const="auto", metavar="SPEC",
                   help="with --show: originals above augmented draws of them, as training sees them (the "
                   "augmentation `cnnlab train` would choose, or SPEC, e.g. translate=2,flip)")
    p.add_argument("--download", action="store_true", help="download the dataset first if it is missing")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.show and args.augment:
        return show_augmented(args)
    if args.show:
        return show(args)
    from cnnlab.data import get_dataset_info, is_present, list_datasets, resolve_data_dir
    from cnnlab.text import format_table

    root = resolve_data_dir(args.data_dir)
    records = []
    for name in list_datasets():
        info = get_dataset_info(name)
        records.append(
            {
                "name": name,
                "classes": len(info.classes),
                "examples": list(info.classes[:4]),
                "size": list(info.size),
                "channels": info.channels,
                "train": info.counts.get("train"),
                "test": info.counts.get("test"),
                "present": is_present(name, root),
                "description": info.description,
            }
        )
    if args.json:
        print(json.dumps({"data_dir": str(root), "datasets": records}, indent=2))
        return 0
    rows = [
        [
            r["name"],
            f"{r['classes']} ({', '.join(r['examples'])}{', ...' if r['classes'] > 4 else ''})",
            "x".join(map(str, r["size"])),
            r["channels"],
            f"{r['train']:,} / {r['test']:,}",
            "bundled" if r["name"] == "digits" else ("yes" if r["present"] else "no"),
        ]
        for r in records
    ]
    print(format_table(["name", "classes", "size", "ch", "train / test", "present"], rows, align="llrrrl"))
    print(f"\ndata directory: {root}")
    print("missing ones: add --download to `cnnlab train` or `cnnlab datasets --show NAME`.")
    print("your own images: folder:PATH, with one sub-folder of images per class.")
    return 0


def show(args: argparse.Namespace) -> int:
    from cnnlab.data import get_dataset
    from cnnlab.viz import save_figure
    from cnnlab.viz.datasets import plot_class_samples
    from cnnlab.viz.style import FIGURES_DIR

    data = get_dataset(args.show, args.split, args.data_dir, download=args.download)
    fig = plot_class_samples(data, per_class=args.per_class)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", args.show.rstrip("/").split("/")[-1] or "folder")
    out = args.out or FIGURES_DIR / f"{stem}-samples.png"
    save_figure(fig, out)
    print(f"wrote {out}: {min(len(data.classes), 20)} classes x {args.per_class} {args.split} samples of {args.show}")
    return 0


def show_augmented(args: argparse.Namespace) -> int:
    """Originals above three augmented draws of them, at the input size and with the augmentation training uses."""
    import textwrap

    import torch

    from cnnlab.data import get_dataset, parse_augment, take
    from cnnlab.data.profile import profile_dataset
    from cnnlab.training.auto import choose
    from cnnlab.viz import save_figure
    from cnnlab.viz.datasets import plot_augmented
    from cnnlab.viz.style import FIGURES_DIR

    choice = choose(profile_dataset(args.show, args.data_dir))
    later = args.augment == "auto" and "augment_on_overfit" in choice.settings  # the rest, added once it memorizes
    chosen = "augment_on_overfit" if later else "augment"
    spec, why = (choice.settings[chosen], choice.reasons[chosen]) if args.augment == "auto" else (args.augment, "given")
    side = int(choice.settings.get("input_size", "1x64x64").split("x")[-1])
    data = get_dataset(args.show, args.split, args.data_dir, download=args.download, image_size=(side, side))
    augment = parse_augment(spec, data.info)
    n = min(args.per_class, len(data))
    idx = torch.linspace(0, len(data) - 1, n).round().long()  # spread over the (class-sorted) images
    images, targets = take(data, idx)
    x = images.float() / 255.0
    if x.shape[-2:] != (side, side):  # built-in datasets keep their size; training resizes them
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    g = torch.Generator().manual_seed(0)
    draws = [augment(x, g) for _ in range(3)]
    title = textwrap.fill(f"{args.show}: augment {spec} ({why})", width=max(40, 14 * n))
    fig = plot_augmented(x, draws, [data.classes[int(t)] for t in targets], title)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", args.show.rstrip("/").split("/")[-1] or "folder")
    out = args.out or FIGURES_DIR / f"{stem}-augmented.png"
    save_figure(fig, out)
    print(f"wrote {out}: {n} {args.split} images of {args.show} above 3 draws of --augment {spec}"
          + (" (what training adds once the network memorizes its images)" if later else ""))
    return 0
