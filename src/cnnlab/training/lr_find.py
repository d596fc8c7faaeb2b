"""The learning-rate range test (Leslie Smith, 2015; fastai's `lr_find`): train a few steps with the rate rising
exponentially, watch the smoothed loss, suggest a rate from the curve. Model, optimizer and RNG are left as found.

    result = lr_find(model, criterion, optimizer, loader, device)
    result.suggestion  # halfway (log scale) down the fall of the smoothed loss to its minimum
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.training.checkpoint import rng_state, set_rng_state
from cnnlab.training.engine import set_lr, train_step
from cnnlab.training.loss import Criterion
from cnnlab.training.schedule import RANGE_TEST, exponential

START_LR, END_LR, NUM_STEPS = RANGE_TEST
BETA = 0.9  # smoothing of the loss: an exponential moving average, debiased (fastai: 0.98, which lags by ~50 steps)
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its minimum
ONSET = 0.1  # the descent starts where the loss has made this share of its fall


@dataclass
class LRFinderResult:
    """The curve of the range test and what it suggests (None, with `problem` saying why, when nothing fits)."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    index: int | None = None  # of the suggestion in lrs
    stopped: str = "end"  # "end", "diverged" (smoothed loss > DIVERGE x its minimum) or "nonfinite"
    problem: str | None = None
    seconds: float = 0.0  # wall time of the steps (a throughput measure for --budget)

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.suggestion, "steps": len(self.lrs), "stopped": self.stopped,
                "problem": self.problem, "rule": "the middle of the descent (log scale)"}


@contextlib.contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None, loader: Any = None) -> Iterator:
    """Run a block that trains, then put back the weights, buffers, modes, optimizer, scaler, RNG and loader
    position exactly as they were (a deep copy is taken first: steps update tensors in place)."""
    weights = copy.deepcopy(model.state_dict())
    modes = [(m, m.training) for m in model.modules()]
    opt_state = copy.deepcopy(optimizer.state_dict())
    scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    rng = rng_state()
    position = _loader_position(loader)
    try:
        yield
    finally:
        model.load_state_dict(weights)
        for m, mode in modes:
            m.training = mode
        optimizer.load_state_dict(opt_state)
        if scaler_state is not None:
            scaler.load_state_dict(scaler_state)
        set_rng_state(rng)
        if position is not None:
            loader.load_state_dict({"epoch": position[0], "batch": position[1]})
            loader.position = position[2]


def _loader_position(loader: Any) -> tuple[int, int, int] | None:
    if loader is None or not hasattr(loader, "load_state_dict"):
        return None
    return loader.epoch, loader.resume_batch, loader.position


def batches(loader: Iterable, count: int) -> Iterator:
    """`count` batches, going round the loader again when it has fewer."""
    served = 0
    while served < count:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            served += 1
            if served >= count:
                return
        if empty:
            raise CnnlabError("the learning-rate finder got no batch from the training split (is it empty?)")


def lr_find(model: nn.Module, criterion: Criterion, optimizer: torch.optim.Optimizer, loader: Iterable,
            device: torch.device, *, start_lr: float = START_LR, end_lr: float = END_LR, num_steps: int = NUM_STEPS,
            diverge: float = DIVERGE, scaler: Any = None, amp: str = "off", grad_clip: float = 0.0,
            clock: Any = None) -> LRFinderResult:
    """The range test: `num_steps` steps from `start_lr` to `end_lr` (geometric), stopped early when the smoothed
    loss exceeds `diverge` x its minimum or is not finite; every state it touches is restored after."""
    import time

    if not 0 < start_lr < end_lr or num_steps < 2:
        raise CnnlabError(f"the range test needs 0 < start lr < end lr and 2 or more steps; got {start_lr:g}, "
                          f"{end_lr:g}, {num_steps}")
    clock = clock or time.perf_counter
    result = LRFinderResult()
    avg, best = 0.0, math.inf
    with preserved(model, optimizer, scaler, loader):
        if not model.training:  # as train_one_epoch: a caller may have frozen parts of it, they stay so
            model.train()
        t0 = clock()
        for i, (x, y) in enumerate(batches(loader, num_steps)):
            lr = exponential(i, num_steps, start_lr, end_lr)
            set_lr(optimizer, lr)
            loss, _ = train_step(model, criterion, optimizer, x.to(device), y.to(device), scaler=scaler, amp=amp,
                                 grad_clip=grad_clip)
            value = loss.item()
            if not math.isfinite(value):
                result.stopped = "nonfinite"
                break
            avg = BETA * avg + (1 - BETA) * value
            smooth = avg / (1 - BETA ** (i + 1))
            result.lrs.append(lr)
            result.raw_losses.append(value)
            result.losses.append(smooth)
            best = min(best, smooth)
            if smooth > diverge * best:
                result.stopped = "diverged"
                break
        result.seconds = clock() - t0
    suggest(result, num_steps)
    return result


def descent(losses: list[float], onset: float = ONSET) -> tuple[int, int] | None:
    """(start, end) of the fall of a smoothed loss curve: end at its minimum, start where the loss last crossed
    below `onset` of its fall from the highest point before it; None when it falls by less than 2%."""
    if len(losses) < 2:
        return None
    end = min(range(len(losses)), key=losses.__getitem__)
    top = max(losses[: end + 1])
    if losses[end] > 0.98 * top:
        return None
    level = top - onset * (top - losses[end])
    start = max(i for i in range(end + 1) if losses[i] > level) + 1  # the top itself is above the level
    return start, end


def suggest(result: LRFinderResult, num_steps: int) -> None:
    """Set the suggestion: halfway (in log scale) along the descent of the smoothed loss, from where it last crossed a
    tenth of its fall to its minimum; the first tenth of the planned steps (the average settling) and, after a
    blow-up, the last 5 points are left out. (fastai's "valley" takes the middle of the longest decreasing run,
    which noise on the flat start of a short test stretches to the left: suggestions 10-100x too small were seen.)"""
    n = len(result.losses)
    lo, hi = num_steps // 10, n - 5 if result.stopped != "end" else n
    found = descent(result.losses[lo:hi]) if hi - lo >= 5 else None
    if found is None:
        where = {"nonfinite": f"the loss was not finite after {n} steps",
                 "diverged": f"the loss blew up after {n} steps"}.get(result.stopped, "the loss never fell")
        result.problem = (f"no learning rate to suggest: {where} (rates {result.lrs[0]:.1e} to {result.lrs[-1]:.1e})"
                          if n else "no learning rate to suggest: the loss was not finite from the first step")
        return
    start, end = lo + found[0], lo + found[1]
    result.index = start + (end - start) // 2
    result.suggestion = result.lrs[result.index]


def plot(result: LRFinderResult, path: str | Path, title: str | None = None) -> Path:
    """The loss against the learning rate (log x), the suggestion marked; written to `path`."""
    from cnnlab.viz import new_figure, plot_style, save_figure

    with plot_style():
        ax = new_figure((6, 4)).add_subplot()
        ax.plot(result.lrs, result.raw_losses, color="0.75", lw=0.8, label="loss")
        ax.plot(result.lrs, result.losses, lw=1.6, label="smoothed")
        if result.suggestion is not None:
            ax.plot([result.suggestion], [result.losses[result.index]], "o", color="C3",
                    label=f"suggestion {result.suggestion:.2g}")
            ax.axvline(result.suggestion, color="C3", lw=0.8, ls="--")
        if result.losses:  # the blow-up would squash the interesting part
            low, high = min(result.raw_losses + result.losses), result.losses[0]
            ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.25 * (high - low) + 1e-9)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel="training loss", title=title or "learning-rate range test")
        ax.legend()
        fig = ax.get_figure()
    return save_figure(fig, path)
