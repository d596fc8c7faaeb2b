"""`cnnlab report RUN`: one self-contained HTML page about a trained run."""

from __future__ import annotations

import argparse
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description=textwrap.fill(
            "Write one HTML file about a run: its settings, training curves, test metrics, per-class "
            "table, confusion matrix, the worst mistakes with Grad-CAM, the first-layer filters and the feature maps "
            "of a few test images; and, if it was trained with --probe-every N, how filters and feature maps changed "
            "epoch by epoch. Images are embedded: the file opens offline, with no scripts and no network."),
        epilog="examples:\n  cnnlab report last\n  cnnlab train --epochs 10 --probe-every 1 --out runs/demo\n"
        "  cnnlab report runs/demo --out demo.html --mistakes 24",
    )
    p.add_argument("run", metavar="RUN", help="run folder (runs/...; last: the newest run) or checkpoint file")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN/report.html)")
    p.add_argument("--mistakes", type=int, default=12, metavar="N", help="images in the mistakes gallery (default: 12)")
    p.add_argument("--images", type=int, default=3, metavar="N",
                   help="test images whose feature maps are shown (default: 3)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the datasets (default: the run's own)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.apps.report import build_report
    from cnnlab.errors import CnnlabError

    if args.mistakes < 0 or args.images < 0:
        raise CnnlabError("--mistakes and --images cannot be negative")
    path = build_report(args.run, args.out, mistakes=args.mistakes, feature_images=args.images,
                        data_dir=args.data_dir)
    print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB); open it in any browser")
    return 0
