"""What a run changes about itself after an epoch: the augmentation it adds once its network memorizes its training
images (--augment-on-overfit), and a --budget plan re-made from the speed training runs at (budget.revise_job).
The augmentation is decided from the finished epochs alone, so a resumed run decides alike (a resumed --budget run
follows its plan unrevised: budget.resumed_plan)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cnnlab.training import budget
from cnnlab.training.auto import FIT_RATIO, fits_beyond_validation

if TYPE_CHECKING:
    from cnnlab.training.console import Printer
    from cnnlab.training.setup import Job
    from cnnlab.training.state import TrainState


def after_epoch(job: "Job", state: "TrainState", row: dict[str, Any], out: "Printer") -> bool:
    """After a finished epoch (`row`, its metrics): True when the run's settings changed (config.json is rewritten)."""
    added = add_on_overfit(job, row, out)
    revised = budget.revise_job(job, state.step, state.epoch, out)
    return added or revised


def add_on_overfit(job: "Job", row: dict[str, Any], out: "Printer") -> bool:
    """Train with --augment-on-overfit from the next epoch on when the network memorizes its training images (judged
    by rank 0, which validates, for every process); the epoch's row records it."""
    spec = job.cfg.augment_on_overfit
    if not spec:
        return False
    validated = row.get("val_acc") is not None  # rank 0's row
    fits = validated and fits_beyond_validation(row["train_acc"], row["val_acc"], row["epoch"], job.cfg.epochs)
    if not job.env.broadcast([float(fits)], job.device)[0]:
        return False
    budget.use_augment(job, spec)
    job.cfg = dataclasses.replace(job.cfg, augment_on_overfit="")  # done: a resume goes on with `spec`
    row["augment_added"] = spec
    if validated:  # rank 0 says why
        out.note(f"from epoch {row['epoch'] + 1}: --augment {spec} (the network memorizes its training images: "
                 f"after epoch {row['epoch']}, its training error {1 - row['train_acc']:.2%} is at most "
                 f"{FIT_RATIO:.0%} of its validation error {1 - row['val_acc']:.2%})")
    return True
