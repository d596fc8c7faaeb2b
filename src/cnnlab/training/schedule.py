"""Learning-rate schedules as pure functions of the step: lr = f(step), nothing stored but the step."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine", "onecycle")
RANGE_TEST = (1e-7, 10.0, 100)  # the learning-rate range test's ramp: first rate, last rate, steps (fastai's)


def exponential(step: int, total_steps: int, start: float, end: float) -> float:
    """The range test's ramp: `start` at step 0 to `end` at the last step, the same factor every step."""
    return start * (end / start) ** (step / max(1, total_steps - 1))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: 1/W, 2/W, ... 1 over the first W steps, then 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def constant(step: int, total_steps: int) -> float:
    """The base rate throughout."""
    return 1.0


def step_decay(step: int, total_steps: int, step_size: int, gamma: float) -> float:
    """Multiply by gamma every `step_size` steps (StepLR)."""
    return gamma ** (step // max(1, step_size))


def cosine(step: int, total_steps: int, final: float = 0.0) -> float:
    """Half a cosine from 1 down to `final` over the run (SGDR without restarts)."""
    t = min(1.0, step / max(1, total_steps))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def onecycle(step: int, total_steps: int, peak_at: float = 0.25, start: float = 0.04, end: float = 0.0) -> float:
    """Smith's one-cycle: linear rise from `start` to 1 at `peak_at` of the run, then linear fall to `end`."""
    peak = max(1, round(peak_at * total_steps))
    if step < peak:
        return start + (1 - start) * step / peak
    return max(end, 1 - (1 - end) * (step - peak) / max(1, total_steps - peak))


def lr_at(
    step: int,
    *,
    base_lr: float,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
    step_size: int = 1,
    gamma: float = 0.1,
) -> float:
    """The learning rate at `step` (0-based) for the named schedule, after any linear warm-up."""
    if schedule == "constant":
        factor = constant(step, total_steps)
    elif schedule == "step":
        factor = step_decay(step, total_steps, step_size, gamma)
    elif schedule == "cosine":
        factor = cosine(step - warmup_steps, total_steps - warmup_steps) if step >= warmup_steps else 1.0
    elif schedule == "onecycle":
        factor = onecycle(step, total_steps)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return base_lr * factor * warmup_factor(step, warmup_steps)


@dataclass(frozen=True)
class Schedule:
    """A run's learning rate as a function of the step, built once: `lr = schedule(step)`."""

    name: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    step_size: int = 1  # the step schedule's period
    gamma: float = 0.1  # the step schedule's factor

    def __call__(self, step: int) -> float:
        return lr_at(step, base_lr=self.base_lr, schedule=self.name, total_steps=self.total_steps,
                     warmup_steps=self.warmup_steps, step_size=self.step_size, gamma=self.gamma)
