"""`cnnlab compare RUN RUN...`: runs side by side: the settings that differ, test metrics, curves in one PNG."""

from __future__ import annotations

import argparse
import json

from cnnlab.training.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="runs side by side: the settings that differ, test metrics, curves overlaid",
        description="Put two runs or more side by side: the settings in which they differ, their test metrics "
        "(accuracy with its 95% interval under 1,000 test images, balanced accuracy, loss, epochs, time), and "
        "their loss and accuracy curves overlaid in one PNG, one colour per run (cnnlab-figures/ unless --out "
        "says otherwise).",
        epilog="examples:\n  cnnlab compare runs/mlp-mnist-20261203-101500 runs/lenet-mnist-20261203-102000\n"
        "  cnnlab compare seed-mlp seed-lenet --runs-dir runs --out mlp-vs-lenet.png\n"
        "  cnnlab compare $(cnnlab runs mnist --sort acc --names | head -3) --json",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, names in --runs-dir, or last")
    p.add_argument("--runs-dir", default=TrainConfig.runs_dir, help="where bare run names are looked up "
                                                                    "(default: runs)")
    p.add_argument("-o", "--out", metavar="FILE", help="where to save the curves (default: "
                                                       "cnnlab-figures/compare-RUN-RUN.png)")
    p.add_argument("--json", action="store_true", help="print JSON: the runs, the settings that differ, the metrics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import re

    from cnnlab.training.compare import compare
    from cnnlab.viz.style import FIGURES_DIR, save_figure

    result = compare(*args.runs, runs_dir=args.runs_dir)
    path = None
    if any(r.history for r in result.runs):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-vs-".join(result.names))[:150]
        path = save_figure(result.figure(), args.out or FIGURES_DIR / f"compare-{slug}.png")
    if args.json:
        print(json.dumps(result.to_dict() | {"figure": str(path) if path else None}, indent=2))
        return 0
    print(result.table())
    print(f"\ncurves: {path}" if path else "\nno curves: no run has finished an epoch")
    return 0
