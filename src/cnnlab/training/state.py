"""What changes while training (`TrainState`), the checkpoint that holds it with everything else, and `restore`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.training.checkpoint import resume_position, rng_state, set_rng_state

if TYPE_CHECKING:
    from cnnlab.training.setup import Job


@dataclass
class EpochMeter:
    """Running sums of one training epoch (kept in the checkpoint so a mid-epoch resume counts exactly)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    # The training loss every few steps, [fractional epoch, mean loss of the window] (the epoch's row keeps it, so
    # curves.png draws a one-epoch run as a curve), and (loss_sum, seen) where the open window started.
    curve: list = field(default_factory=list)
    mark: list = field(default_factory=lambda: [0.0, 0])


@dataclass
class TrainState:
    """Everything that changes while training and must survive a resume."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_loss: float = math.inf  # breaks ties in accuracy (see runner.improved)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    elapsed: float = 0.0  # training seconds over all sessions
    meter: EpochMeter | None = None  # set while an epoch is in progress
    status: str = "running"


def checkpoint_state(job: "Job", state: TrainState) -> dict[str, Any]:
    """Everything needed to rebuild, resume and predict without the original command."""
    whole, data, cfg = job.classifier.module, job.data, job.cfg
    return {
        "model": whole.spec.to_dict(),
        "state_dict": job.classifier.state_dict(),
        "optimizer": job.optimizer.state_dict(),
        "scheduler": {"name": cfg.schedule, "step": state.step, "total_steps": job.schedule.total_steps},
        "scaler": job.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "loader": data.train.state_dict() if state.meter else {"epoch": state.epoch, "batch": 0},
        "meter": vars(state.meter) if state.meter else None,
        "rng": rng_state(),
        # What a resume with another number of processes needs to map the step and the loader position.
        "distributed": {"world_size": job.env.world_size, "global_batch": cfg.batch_size * job.env.world_size,
                        "steps_per_epoch": len(data.train)},
        "history": state.history,
        "best": {"val_acc": state.best_acc, "val_loss": state.best_loss, "epoch": state.best_epoch,
                 "bad_epochs": state.bad_epochs},
        "elapsed_s": state.elapsed,
        "status": state.status,
        "classes": list(data.info.classes),
        "dataset": data.info.name,
        "single_logit": job.criterion.single_logit,
        "class_weights": list(job.criterion.class_weights) if job.criterion.class_weights else None,
        "input_size": list(whole.spec.input_size),
        "pipeline": data.pipeline.to_dict(),
        "augment": data.augment.to_dict(),
        "config": cfg.to_dict(),
        "auto": job.auto,  # the settings chosen from the data, with their reasons (config.json shows them)
        "weights": getattr(whole, "weights_info", None) or cfg.weights,
        "budget": job.budget.to_dict() if job.budget is not None else None,  # the --budget plan a resume follows
    }


def progress(ckpt: dict[str, Any]) -> TrainState:
    """Where a checkpoint's run stands (epoch, step, best, time, the epoch in progress), as saved."""
    best = ckpt["best"]
    return TrainState(
        epoch=ckpt["epoch"], step=ckpt["step"], history=list(ckpt["history"]), best_acc=best["val_acc"],
        best_loss=best.get("val_loss", math.inf), best_epoch=best["epoch"], bad_epochs=best["bad_epochs"],
        elapsed=ckpt["elapsed_s"], meter=EpochMeter(**ckpt["meter"]) if ckpt.get("meter") else None,
        status=ckpt.get("status", "running"),
    )


def restore_class_weights(job: "Job", ckpt: dict[str, Any]) -> None:
    """The loss weighs the classes as the checkpoint's run did (None in runs older than class weights), whatever the
    training split's counts are now."""
    saved = ckpt.get("class_weights")
    weights = tuple(float(w) for w in saved) if saved else None
    if weights and len(weights) != len(job.data.info.classes):
        raise CnnlabError(f"the checkpoint holds {len(weights)} class weights for {len(job.data.info.classes)} "
                          f"classes: it is not this run's")
    if weights != job.criterion.class_weights:
        job.criterion = dataclasses.replace(job.criterion, class_weights=weights)
        job.class_weights_why = "as saved in the checkpoint" if weights else "none (as the checkpoint's run trained)"


def restore(job: "Job", ckpt: dict[str, Any]) -> TrainState:
    """Put a run back exactly as the checkpoint left it."""
    job.classifier.load_state_dict(ckpt["state_dict"])
    restore_class_weights(job, ckpt)
    job.optimizer.load_state_dict(ckpt["optimizer"])
    job.scaler.load_state_dict(ckpt["scaler"])
    state = progress(ckpt)
    # Another world size: the same epoch and fraction of the schedule, in this run's steps (see resume_position).
    state.step, loader = resume_position(ckpt, len(job.data.train), job.cfg.batch_size * job.env.world_size)
    if state.meter is not None and not job.env.is_main:  # the saved sums are the whole job's: rank 0 carries them
        state.meter = EpochMeter(seconds=state.meter.seconds)
    job.data.train.load_state_dict(loader)
    set_rng_state(ckpt["rng"])
    return state
