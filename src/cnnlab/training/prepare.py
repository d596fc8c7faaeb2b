"""Everything a new run settles before its first step, as one `Plan`: the settings left open chosen from the data
(auto.py), then what needs measuring, on a probe of the run built by the same `setup.build` (no run folder, dropped
after): --lr auto's learning-rate range test, and --budget's epochs and steps from the speed of a few steps."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.weights import offline_weights_available
from cnnlab.training import budget
from cnnlab.training.auto import PRETRAINED_BACKBONE, AutoChoice, fill_auto, short_run_augment
from cnnlab.training.config import TrainConfig
from cnnlab.training.console import Printer
from cnnlab.training.engine import autocast, set_lr, train_step
from cnnlab.training.lr_find import LRFinderResult, batches, lr_find
from cnnlab.training.plan import Plan
from cnnlab.training.setup import Job, build, follow, set_train_mode

CLOCK: Callable[[], float] = time.perf_counter  # what measures a step; tests put a fake clock here
WARMUP_STEPS = 3  # untimed: the first steps allocate and pick kernels
TIMED_STEPS = (5, 30)  # at least, at most; as many as fit in MEASURE_SHARE of the budget
MEASURE_SHARE = 0.03


def settle(cfg: TrainConfig) -> tuple[TrainConfig, AutoChoice | None]:
    """The config with the settings left open chosen from the data (a pretrained backbone only where its weights
    are on this machine), and the choice made (None: nothing was open)."""
    return fill_auto(cfg, pretrained_available=offline_weights_available(PRETRAINED_BACKBONE))


def prepare(cfg: TrainConfig, out: Printer) -> Plan:
    """A new run's plan: its open settings chosen from the data, then --lr auto and --budget measured (in that
    order: the range test's seconds count against the budget)."""
    cfg, choice = settle(cfg)
    plan = Plan(cfg, auto=choice.to_dict() if choice else None)
    if cfg.lr != "auto" and not cfg.budget:
        return plan
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CnnlabError("--lr auto and --budget measure one process; run `cnnlab lr-find` (or a short run) first, "
                          "then train the job with --lr VALUE and --epochs N")
    probe = build(plan, folder=False, out=out)
    start = time.perf_counter()
    if cfg.lr == "auto":
        plan = with_range_test(probe, plan, out)
    if cfg.budget:
        plan = within_budget(probe, plan, out, already_spent=time.perf_counter() - start)
    return plan


# ---------------------------------------------------------------- --lr auto


def range_test(job: Job, **kwargs: Any) -> LRFinderResult:
    """The learning-rate range test on a built run's model, loss, optimizer and training batches (`lr_find`)."""
    set_train_mode(job.net, job.cfg, 0)
    return lr_find(job.model, job.criterion, job.optimizer, job.data.train, job.device, scaler=job.scaler,
                   amp=job.cfg.amp, grad_clip=job.cfg.grad_clip, **kwargs)


def with_range_test(probe: Job, plan: Plan, out: Printer) -> Plan:
    """--lr auto: the plan with the range test's suggestion as its rate (the peak of one-cycle, the base rate of
    the other schedules), its reason among the choices (config.json; a resume reads the rate, never tests again)."""
    result = range_test(probe)
    if result.suggestion is None:
        raise CnnlabError(f"--lr auto: {result.problem}. Nothing was trained; give --lr VALUE (`cnnlab lr-find` with "
                          f"the same options draws the curve)")
    lr = float(f"{result.suggestion:.3g}")
    reason = (f"learning-rate range test, {len(result.lrs)} steps from {result.lrs[0]:.0e}: halfway down the fall "
              f"of the smoothed loss (rule: {result.to_dict()['rule']})")
    out.note(f"--lr auto: {lr:g} ({reason}; {result.seconds:.1f} s)")
    plan = dataclasses.replace(plan, cfg=dataclasses.replace(plan.cfg, lr=lr), choices={
        **plan.choices, "lr": {"value": lr, "reason": reason, "seconds": round(result.seconds, 2)}})
    follow(probe, plan)
    return plan


def lr_range_test(cfg: TrainConfig, **kwargs: Any) -> tuple[LRFinderResult, str]:
    """`cnnlab lr-find`: the range test on a probe of the run a settled config describes (built as `cnnlab train`
    builds it, with no run folder); (the result, the dataset's name)."""
    probe = build(Plan(cfg), folder=False)
    if probe.env.enabled:
        raise CnnlabError("the range test runs in one process: run it without torchrun")
    return range_test(probe, **kwargs), probe.data.info.name


# ---------------------------------------------------------------- --budget


def within_budget(probe: Job, plan: Plan, out: Printer, already_spent: float = 0.0) -> Plan:
    """--budget: the plan with the epochs and steps that fit, from speeds measured on the probe (measured again with
    flips alone where a run this short keeps less of the augmentation the chooser picked)."""
    fits = budget_for(probe, plan, already_spent)
    lighter = short_run_augment(plan.auto, fits.epochs)
    if lighter is not None:
        spec, auto = lighter
        plan = dataclasses.replace(plan, cfg=dataclasses.replace(plan.cfg, augment=spec), auto=auto)
        follow(probe, plan)
        fits = budget_for(probe, plan, fits.spent_s)
    # Its seconds count from the measurement's start; this process made it, so it may be revised as training runs.
    fits = dataclasses.replace(fits, started=budget.NOW() - fits.spent_s, revisable=True)
    if fits.total_steps < fits.steps_per_epoch:
        out.note(f"warning: --budget {fits.budget_s:g}s holds less than one epoch: training {fits.total_steps:,} "
                 f"of its {fits.steps_per_epoch:,} steps")
    out.note(fits.describe())
    return dataclasses.replace(plan, cfg=dataclasses.replace(plan.cfg, epochs=fits.epochs), budget=fits)


def budget_for(probe: Job, plan: Plan, already_spent: float) -> budget.BudgetPlan:
    measured = measure(probe, plan.cfg.budget, already_spent=already_spent)
    return budget.plan_budget(plan.cfg.budget, len(probe.data.train), measured, has_val=probe.data.val is not None)


def measure(job: Job, budget_s: float, clock: Callable[[], float] | None = None,
            already_spent: float = 0.0) -> budget.Measured:
    """Seconds per training step (the upper quartile of a few, after warm-up ones, each with its batch's loading)
    and per validation and test pass (from one timed evaluation batch), on a probe."""
    cfg, loader, clock = job.cfg, job.data.train, clock or CLOCK
    start = clock()
    durations: list[float] = []
    timed_max = max(TIMED_STEPS[0], min(TIMED_STEPS[1], len(loader) - WARMUP_STEPS))
    set_train_mode(job.net, cfg, 0)
    set_lr(job.optimizer, job.schedule(0))
    last = clock()
    for i, (x, y) in enumerate(batches(loader, WARMUP_STEPS + timed_max)):
        loss, _ = train_step(job.model, job.criterion, job.optimizer, x, y, scaler=job.scaler, amp=cfg.amp,
                             grad_clip=cfg.grad_clip)
        loss.item()  # wait for the device
        now = clock()  # a step's time includes loading its batch (decoding, augmenting), as training's does
        if i >= WARMUP_STEPS:
            durations.append(now - last)
            if len(durations) >= TIMED_STEPS[0] and now - start > MEASURE_SHARE * budget_s:
                break
        last = now
    step_s = sorted(durations)[3 * len(durations) // 4]  # the upper quartile: slower moments come, faster rarely
    image_s = eval_image_seconds(job, clock)
    val_s = image_s * len(job.data.val.targets) if job.data.val is not None else 0.0
    test_s = image_s * len(job.data.test.targets) * (2 if cfg.tta == "flip" else 1)
    return budget.Measured(step_s=step_s, val_s=val_s, test_s=test_s, spent_s=already_spent + clock() - start)


def eval_image_seconds(job: Job, clock: Callable[[], float]) -> float:
    """Seconds per image of evaluation: a batch timed after one untimed (the first allocates)."""
    loader = job.data.val if job.data.val is not None and len(job.data.val) else job.data.test
    job.net.eval()
    seconds, size = 0.0, 1
    with torch.no_grad():
        for x, _ in batches(loader, 2):
            t0 = clock()
            with autocast(job.device, job.cfg.amp):
                job.model(x).float().sum().item()
            seconds, size = clock() - t0, len(x)
    return seconds / max(size, 1)
