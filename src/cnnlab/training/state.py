"""What changes while training (`TrainState`, with the running sums of an epoch), and where a checkpoint's run
stands (`progress`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


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
    best_loss: float = math.inf  # breaks ties in accuracy (see runner.is_better)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    elapsed: float = 0.0  # training seconds over all sessions
    meter: EpochMeter | None = None  # set while an epoch is in progress
    status: str = "running"
    stopped: str | None = None  # why a callback (a stopping rule) stopped training before its last epoch


def progress(ckpt: dict[str, Any]) -> TrainState:
    """Where a checkpoint's run stands (epoch, step, best, time, the epoch in progress), as saved."""
    best = ckpt["best"]
    return TrainState(
        epoch=ckpt["epoch"], step=ckpt["step"], history=list(ckpt["history"]), best_acc=best["val_acc"],
        best_loss=best.get("val_loss", math.inf), best_epoch=best["epoch"], bad_epochs=best["bad_epochs"],
        elapsed=ckpt["elapsed_s"], meter=EpochMeter(**ckpt["meter"]) if ckpt.get("meter") else None,
        status=ckpt.get("status", "running"), stopped=ckpt.get("stopped"),
    )
