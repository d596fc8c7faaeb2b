"""`cnnlab runs [PATTERN]`: every run in runs/, one line each: what it trained, how it ended, what it reached."""

from __future__ import annotations

import argparse
import json

from cnnlab.training.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list the runs in runs/: model, dataset, status, epochs, test accuracy, time",
        description="List the runs in runs/ (or --runs-dir), one line each: name, model, dataset, status (running, "
        "stopped, completed, failed), epochs trained (of those planned), test accuracy (with its 95% interval "
        "under 1,000 test images), training time and start date. A run another process is writing shows as "
        "running; a damaged folder as failed, saying why.",
        epilog="examples:\n  cnnlab runs\n  cnnlab runs lenet --sort acc\n  cnnlab runs 'fastnet-mnist-*' --json\n"
        "  cnnlab compare $(cnnlab runs mnist --sort acc --names | head -2)",
    )
    p.add_argument("pattern", nargs="?", help="runs whose name matches: shell-style ('lenet-*'), or a word the name "
                                              "contains (default: all)")
    p.add_argument("--runs-dir", default=TrainConfig.runs_dir, help="the folder holding the runs (default: runs)")
    p.add_argument("--sort", choices=("date", "acc", "name"), default="date",
                   help="date: oldest first (default); acc: best test accuracy first; name")
    p.add_argument("--reverse", action="store_true", help="the other way round")
    p.add_argument("--names", action="store_true", help="print only the run folders, one a line (for other commands)")
    p.add_argument("--json", action="store_true", help="print JSON: one object per run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.training.runinfo import counts_text, runs

    if not Path(args.runs_dir).is_dir():
        raise CnnlabError(f"there is no folder {args.runs_dir}/: train a run with `cnnlab train`, or give "
                          f"--runs-dir")
    infos = runs(args.runs_dir, args.pattern, args.sort, args.reverse)
    if args.json:
        print(json.dumps([r.to_dict() for r in infos], indent=2))
    elif args.names:
        print("\n".join(str(r.path) for r in infos))
    elif not infos:
        print(f"no runs{f' matching {args.pattern!r}' if args.pattern else ''} in {args.runs_dir}/")
    else:
        print(infos.table())
        print(f"\n{counts_text(infos, args.runs_dir)}")
    return 0
