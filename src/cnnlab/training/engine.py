"""One training step and one training epoch, from the pieces: model, loss, optimizer, schedule, loader, device.

Each can be called on its own (a tiny model and a list of batches will do); `runner.fit` calls them for a run.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.outputs import predictions
from cnnlab.training.loss import Criterion
from cnnlab.training.state import EpochMeter, TrainState


class NonFiniteLoss(CnnlabError):
    """The loss became NaN or infinite."""

    def __init__(self, message: str, step: int = -1, value: float = float("nan"), lr: float = float("nan"),
                 last_finite: float | None = None):
        super().__init__(message)
        self.step, self.value, self.lr, self.last_finite = step, value, lr, last_finite


def autocast(device: torch.device, amp: str):
    """Mixed-precision context for the device ("bf16" or "fp16" autocast), or a no-op for "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The rate for this step in every param group, times the group's `lr_scale` (a fine-tuned backbone's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_step(model: nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, *, scaler: torch.amp.GradScaler | None = None, amp: str = "off",
               grad_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and one optimizer step on a batch; (the loss, the logits), detached."""
    with autocast(x.device, amp):
        loss, logits = criterion(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():  # fp16 on CUDA: scaled, so small gradients do not vanish
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return loss.detach(), logits.detach()


def train_one_epoch(model: nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer,
                    schedule: Callable[[int], float], loader: Iterable, device: torch.device, state: TrainState, *,
                    scaler: torch.amp.GradScaler | None = None, amp: str = "off", grad_clip: float = 0.0,
                    should_stop: Callable[[], bool] | None = None,
                    on_step: Callable[[TrainState, float], None] | None = None, progress=None) -> bool:
    """Train until the loader is exhausted (True) or `should_stop()` says so after a step (False).

    The model is put in training mode unless it already is (a caller may have frozen parts of it: they stay so).
    `state` counts steps, time and the epoch's sums (`state.meter`); `progress.update(meter)` is told of each step,
    then `on_step(state, loss)`.
    """
    if not model.training:
        model.train()
    meter = state.meter = state.meter or EpochMeter()
    check_every = 1 if device.type == "cpu" else 25  # a NaN check syncs with the GPU: not every step there
    pending: list[tuple[int, float, torch.Tensor]] = []
    last_finite: float | None = None  # the loss of the last step before a NaN, for its message
    t0 = time.perf_counter()
    for x, y in loader:
        lr = schedule(state.step)
        set_lr(optimizer, lr)
        loss, logits = train_step(model, criterion, optimizer, x, y, scaler=scaler, amp=amp, grad_clip=grad_clip)
        pending.append((state.step, lr, loss))
        if len(pending) >= check_every:
            check_finite(pending, state.epoch, last_finite)
            pending.clear()
        state.step += 1
        value = loss.item()
        last_finite = value if math.isfinite(value) else last_finite
        meter.loss_sum += value * len(y)
        meter.correct += (predictions(logits) == y).sum().item()
        meter.seen += len(y)
        seconds, t0 = time.perf_counter() - t0, time.perf_counter()
        meter.seconds += seconds
        state.elapsed += seconds
        if progress is not None:
            progress.update(meter)
        if on_step is not None:
            on_step(state, value)
        if should_stop is not None and should_stop():
            check_finite(pending, state.epoch, last_finite)
            return False
    check_finite(pending, state.epoch, last_finite)
    return True


def check_finite(pending: list[tuple[int, float, torch.Tensor]], epoch: int, last_finite: float | None = None) -> None:
    """Raise NonFiniteLoss at the first (step, lr, loss) whose loss is NaN or infinite."""
    if not pending:
        return
    losses = torch.stack([loss for _, _, loss in pending]).float()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        i = int(bad[0])
        step, lr, value = pending[i][0], pending[i][1], losses[i].item()
        before = [v for v in losses[:i].tolist() if math.isfinite(v)]
        last = before[-1] if before else last_finite
        raise NonFiniteLoss(f"the loss became {value} at step {step} (epoch {epoch + 1})", step, value, lr, last)
