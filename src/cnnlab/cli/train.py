"""`cnnlab train`: train a model; every option mirrors a field of cnnlab.training.TrainConfig."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from cnnlab.training.config import add_arguments

    p = sub.add_parser(
        "train",
        help="train a model (default: a small CNN chosen from the data, on the bundled digits, in seconds)",
        description="Train a model on a dataset. With no options: the bundled 8x8 digits, with the settings left "
        "open (model, epochs, batch size, learning rate, augmentation) chosen from the data. Runs land in "
        "runs/<model>-<dataset>-<time>/ with config.json, metrics.jsonl, checkpoints/, results.json and "
        "curves.png. Ctrl-C saves a checkpoint; --resume RUN continues exactly.",
        epilog="examples:\n  cnnlab train\n  cnnlab train --recipe seed-cnn\n"
        "  cnnlab train --model resnet9 --dataset cifar10 --download --epochs 24\n"
        "  cnnlab train --model small_convnet --dataset folder:photos/ --epochs 30\n"
        "  cnnlab train --resume runs/lenet-digits-20260101-120000\n  cnnlab train --resume last",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli.processes import pool_maker
    from cnnlab.data.loader import worker_processes
    from cnnlab.training import train
    from cnnlab.training.config import explicit_settings

    settings = explicit_settings(args)
    if settings.get("resume"):  # `last`, a bare run name, or a typo with the closest runs suggested
        from cnnlab.training.run import find_run

        settings["resume"] = str(find_run(settings["resume"], settings.get("runs_dir", "runs")))
    if settings.get("nproc", 1) > 1:
        from cnnlab.training.launch import launch

        return launch(settings)
    # A folder's first scan may read its files in worker processes: the command may fork, the library never does.
    with worker_processes(pool_maker()):
        result = train(**settings)
    if settings.get("quiet") and result.results:  # the library prints nothing when quiet; the command its result
        from cnnlab.training.console import result_lines

        print(result_lines(result.results))
    return 130 if result.status == "interrupted" else 0
