"""`cnnlab lr-find`: the learning-rate range test for a model and dataset, with the options of `cnnlab train`."""

from __future__ import annotations

import argparse
from pathlib import Path

# Options of `cnnlab train` that mean nothing for a range test (no run folder, no schedule, no stopping rules).
SKIPPED = ("out", "overwrite", "runs_dir", "resume", "epochs", "lr", "schedule", "warmup_epochs", "step_epochs",
           "gamma", "target_acc", "patience", "max_time", "budget", "checkpoint_every", "tensorboard", "probe_every",
           "nproc", "sync_bn", "tta", "json", "quiet", "feature_extraction")


def register(sub: argparse._SubParsersAction) -> None:
    from cnnlab.training.config import add_arguments
    from cnnlab.training.schedule import RANGE_TEST

    START_LR, END_LR, NUM_STEPS = RANGE_TEST

    p = sub.add_parser(
        "lr-find",
        help="find a learning rate: a short run with the rate rising, the loss plotted against it",
        description="The learning-rate range test (Leslie Smith; fastai's lr_find): train a few steps with the rate "
        "rising exponentially from --start-lr to --end-lr, stop when the smoothed loss passes 4x its minimum, plot "
        "the loss against the rate (log scale) and print the suggestion: halfway (in log scale) down the fall of the "
        "smoothed loss, from where it had made a tenth of its fall to its minimum. `cnnlab train --lr auto` runs the "
        "same test and trains with the suggestion (the peak of one-cycle). Takes the options of `cnnlab train`; "
        "nothing is saved but the plot.",
        epilog="examples:\n  cnnlab lr-find\n  cnnlab lr-find --model fastnet --dataset fashion\n"
        "  cnnlab lr-find --optimizer sgd --momentum 0.9 --batch-size 256 --out lr.png\n"
        "  cnnlab train --model fastnet --dataset fashion --lr auto",
    )
    add_arguments(p, skip=SKIPPED)
    p.add_argument("--start-lr", type=float, default=START_LR, metavar="X", help=f"the first rate (default: "
                   f"{START_LR:g})")
    p.add_argument("--end-lr", type=float, default=END_LR, metavar="X", help=f"the last rate (default: {END_LR:g})")
    p.add_argument("--steps", type=int, default=NUM_STEPS, metavar="N", help=f"steps of the test, at most (default: "
                   f"{NUM_STEPS})")
    p.add_argument("-o", "--out", metavar="FILE", help="where to save the plot (default: "
                   "cnnlab-figures/lr-find-<model>-<dataset>.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import CnnlabError
    from cnnlab.training.config import explicit_settings, resolve
    from cnnlab.training.lr_find import plot
    from cnnlab.training.prepare import lr_range_test, settle

    cfg, choice = settle(resolve(explicit_settings(args)))
    if choice is not None:
        print(choice.line)
    result, dataset = lr_range_test(cfg, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps)
    title = f"{cfg.model} on {dataset}, {cfg.optimizer}, batch {cfg.batch_size}"
    name = f"lr-find-{cfg.model}-{dataset}.png".replace("/", "-").replace(":", "-")
    path = plot(result, Path(args.out) if args.out else Path("cnnlab-figures") / name, title) if result.lrs else None
    stopped = {"end": "", "diverged": ", stopped when the smoothed loss passed 4x its minimum",
               "nonfinite": ", stopped at a NaN or infinite loss"}[result.stopped]
    last = f" to {result.lrs[-1]:.2g}" if result.lrs else ""
    print(f"range test: {cfg.model} on {dataset}, {len(result.lrs)} steps from {args.start_lr:.2g}{last}{stopped} "
          f"({result.seconds:.1f} s)")
    if path is not None:
        print(f"plot: {path}")
    if result.suggestion is None:
        raise CnnlabError(f"{result.problem}; the model may diverge at any rate (check the inputs, try --grad-clip "
                          f"1.0) or need more steps (--steps)")
    print(f"suggested learning rate: {result.suggestion:.3g} (the peak rate for one-cycle; "
          f"`cnnlab train --lr auto` finds and uses it)")
    return 0
