"""`--budget`: plan a run's length (epochs, the schedule's steps) so that training, its validation passes and the
final test end inside a time budget, from the speed measured on the first steps.

measure (a few steps and evaluation batches, then every state restored) -> plan_budget (pure arithmetic) -> apply,
then after each epoch `revise` (pure arithmetic again) re-plans the rest from how training actually ran: a few steps
measured right after start-up can be 20% off either way (the planned steps ended 23 s or 34 s into a 30 s budget).
The plan is saved in the checkpoint, so a resumed run follows it instead of measuring again.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from cnnlab.data import parse_augment
from cnnlab.errors import CnnlabError
from cnnlab.training.auto import short_run_augment
from cnnlab.training.engine import autocast, set_lr, train_step
from cnnlab.training.lr_find import batches, preserved
from cnnlab.training.setup import set_train_mode

if TYPE_CHECKING:
    from cnnlab.training.setup import Job

Clock = Callable[[], float]
CLOCK: Clock = time.perf_counter  # what measures; tests put a fake clock here
NOW: Clock = time.monotonic  # what the budget's seconds are counted by (a fake one in tests)
WARMUP_STEPS = 3  # untimed: the first steps allocate and pick kernels
TIMED_STEPS = (5, 30)  # at least, at most; as many as fit in MEASURE_SHARE of the budget
MEASURE_SHARE = 0.03
MARGIN = 0.05  # of the budget kept free: checkpoints, printing, a slower moment
MIN_STEPS = 10  # a plan with fewer optimizer steps is refused
REVISE_MIN = 0.03  # a revision that changes the planned steps by less than this share is not made (the schedule
# bends at each one)


@dataclass
class Measured:
    """Seconds per training step and per pass of validation and test, as measured (or estimated) before training."""

    step_s: float
    val_s: float
    test_s: float
    spent_s: float  # already used from the budget: the measurement itself (and a learning-rate range test)


@dataclass
class BudgetPlan:
    """How a run fits its budget; saved in the checkpoint (to_dict) and followed as is by a resume."""

    budget_s: float
    epochs: int
    total_steps: int  # the schedule's length: epochs x steps per epoch, or a part of one epoch
    steps_per_epoch: int
    step_s: float
    val_s: float
    test_s: float
    spent_s: float
    revised_from: int = 0  # the steps first planned, when the plan was revised from how training ran (0: never)
    started: float = field(default=0.0, repr=False)  # NOW() when planning began, in this process
    revisable: bool = field(default=False, repr=False)  # planned by this process (a resumed run follows its plan)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("started", "revisable")}

    def describe(self) -> str:
        images = "" if self.step_s <= 0 else f"{1 / self.step_s:,.1f} steps/s measured"
        return (f"budget {self.budget_s:g} s: {images}; planned {self.length()}, validation ~{self.val_s:.1f} s per "
                f"epoch, final test ~{self.test_s:.1f} s, the schedule decaying over the planned steps")

    def length(self) -> str:
        whole, rest = divmod(self.total_steps, self.steps_per_epoch)
        return (f"{self.total_steps:,} of one epoch's {self.steps_per_epoch:,} steps" if not whole else
                f"{whole} epoch{'s' if whole != 1 else ''}" + (f" and {rest:,} steps of one more" if rest else "")
                + f" ({self.total_steps:,} steps)")


def plan_budget(budget_s: float, steps_per_epoch: int, m: Measured, *, has_val: bool = True) -> BudgetPlan:
    """The most optimizer steps whose training, validation passes and final test fit the budget: whole epochs, then
    part of one more where at least MIN_STEPS of it fit (the schedule decays over them all either way)."""
    val = m.val_s if has_val else 0.0
    step = max(m.step_s, 1e-12)
    free = budget_s * (1 - MARGIN) - m.spent_s - m.test_s
    full = max(0, math.floor(free / (steps_per_epoch * step + val)))
    rest = min(steps_per_epoch - 1, math.floor((free - full * (steps_per_epoch * step + val) - val) / step))
    if rest < MIN_STEPS:  # a last epoch of a few steps is not worth its validation pass
        rest = 0
    total = full * steps_per_epoch + rest
    if total < MIN_STEPS:
        needed = (m.spent_s + m.test_s + val + MIN_STEPS * m.step_s) / (1 - MARGIN)
        raise CnnlabError(f"--budget {budget_s:g}s is too small: {MIN_STEPS} steps ({m.step_s * 1000:.0f} ms each, "
                          f"measured) with a validation pass and the final test need about {math.ceil(needed)} s; "
                          f"give --budget {math.ceil(needed)}s or more")
    return BudgetPlan(budget_s=budget_s, epochs=full + (1 if rest else 0), total_steps=int(total),
                      steps_per_epoch=steps_per_epoch, step_s=m.step_s, val_s=val, test_s=m.test_s,
                      spent_s=m.spent_s)


def revise(plan: BudgetPlan, steps_done: int, epochs_done: int, used_s: float) -> BudgetPlan | None:
    """At the end of epoch `epochs_done`, `used_s` seconds into the budget: the plan for the rest of the run, its
    steps at the speed training ran (its seconds less the measurement's and the validation passes', per step); it
    ends with this epoch where not even MIN_STEPS more fit. None where the steps would change by under REVISE_MIN."""
    if not 0 < steps_done < plan.total_steps or epochs_done <= 0:
        return None
    step_s = (used_s - plan.spent_s - epochs_done * plan.val_s) / steps_done
    if step_s <= 0:
        return None
    try:
        rest = plan_budget(plan.budget_s, plan.steps_per_epoch,
                           Measured(step_s=step_s, val_s=plan.val_s, test_s=plan.test_s, spent_s=used_s))
        more, more_epochs = rest.total_steps, rest.epochs
    except CnnlabError:  # the budget is spent: the weights so far (best or last), not a run past its end
        more, more_epochs = 0, 0
    total = steps_done + more
    if abs(total - plan.total_steps) < max(MIN_STEPS, REVISE_MIN * plan.total_steps):
        return None
    return dataclasses.replace(plan, epochs=epochs_done + more_epochs, total_steps=total, step_s=step_s,
                               revised_from=plan.revised_from or plan.total_steps)


def revise_job(job: "Job", steps_done: int, epochs_done: int, out: Any) -> BudgetPlan | None:
    """`revise` a plan this process made (a resumed run follows its plan), apply the revision and say so on `out`
    (a console Printer)."""
    plan = job.budget
    if plan is None or not plan.revisable:
        return None
    revised = revise(plan, steps_done, epochs_done, used_s(plan))
    if revised is not None:
        apply_plan(job, revised)
        out.note(f"budget {plan.budget_s:g} s: training ran at {1 / revised.step_s:,.1f} steps/s (planned at "
                 f"{1 / plan.step_s:,.1f}): re-planned from {plan.length()} to {revised.length()}")
    return revised


def measure(job: "Job", budget_s: float, clock: Clock | None = None, already_spent: float = 0.0) -> Measured:
    """Time training steps (the upper quartile of a few, after warm-up ones) and one evaluation batch; every state the
    steps touch is restored."""
    cfg, loader, clock = job.cfg, job.data.train, clock or CLOCK
    start = clock()
    durations: list[float] = []
    timed_max = max(TIMED_STEPS[0], min(TIMED_STEPS[1], len(loader) - WARMUP_STEPS))
    with preserved(job.model, job.optimizer, job.scaler, loader):
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
    return Measured(step_s=step_s, val_s=val_s, test_s=test_s, spent_s=already_spent + clock() - start)


def eval_image_seconds(job: "Job", clock: Clock) -> float:
    """Seconds per image of evaluation: a batch timed after one untimed (the first allocates)."""
    loader = job.data.val if job.data.val is not None and len(job.data.val) else job.data.test
    was_training = job.net.training
    job.net.eval()
    seconds, size = 0.0, 1
    try:
        with torch.no_grad():
            for x, _ in batches(loader, 2):
                t0 = clock()
                with autocast(job.device, job.cfg.amp):
                    job.model(x).float().sum().item()
                seconds, size = clock() - t0, len(x)
    finally:
        job.net.train(was_training)
    return seconds / max(size, 1)


def apply_plan(job: "Job", plan: BudgetPlan) -> None:
    """Make the job follow the plan: its epochs (config.json records them) and its schedule's length."""
    job.cfg = dataclasses.replace(job.cfg, epochs=plan.epochs)
    job.schedule = dataclasses.replace(job.schedule, total_steps=plan.total_steps)
    job.budget = plan


def resumed_plan(saved: dict[str, Any]) -> BudgetPlan:
    """A checkpoint's plan, followed as it is by a resumed run (its seconds counted from now)."""
    return BudgetPlan(**saved, started=NOW())


def used_s(plan: BudgetPlan) -> float:
    """Seconds since planning began (or the run was resumed)."""
    return NOW() - plan.started


def report(plan: BudgetPlan, state: Any) -> dict[str, Any]:
    """results.json's "budget": the plan, what ran, and the seconds used from planning (or resuming) to now."""
    used = used_s(plan)
    return {**plan.to_dict(), "steps_run": state.step, "epochs_run": state.epoch, "used_s": round(used, 2),
            "within": used <= plan.budget_s}


def summary(b: dict[str, Any]) -> str:
    """The line a run ends with: its report's seconds used for what."""
    return (f"budget {b['budget_s']:g} s: {b['used_s']:.1f} s used for {b['steps_run']:,} steps "
            f"({b['epochs_run']} epoch{'s' if b['epochs_run'] != 1 else ''}), validation and the test"
            + (f" ({b['revised_from']:,} steps planned at the start)" if b.get("revised_from") else ""))


def plan_for_job(job: "Job", clock: Clock | None = None, already_spent: float = 0.0) -> BudgetPlan:
    """--budget: measure, plan (again with the lighter augmentation a short run gets), apply, and say so."""
    from cnnlab.training.console import Printer

    plan = _plan(job, clock, already_spent)
    lighter = short_run_augment(job.auto, plan.epochs)
    if lighter is not None:  # the chooser's shifts would slow a run this short: flips alone, and measure again
        use_augment(job, lighter)
        plan = _plan(job, clock, plan.spent_s)
    plan.started, plan.revisable = NOW() - plan.spent_s, True  # its seconds count from the measurement's start
    apply_plan(job, plan)
    out = Printer(job.cfg, job.run_dir, job.env.is_main)
    if plan.total_steps < plan.steps_per_epoch:
        out.note(f"warning: --budget {plan.budget_s:g}s holds less than one epoch: training {plan.total_steps:,} "
                 f"of its {plan.steps_per_epoch:,} steps")
    out.note(plan.describe())
    return plan


def _plan(job: "Job", clock: Clock | None, already_spent: float) -> BudgetPlan:
    measured = measure(job, job.cfg.budget, clock, already_spent)
    return plan_budget(job.cfg.budget, len(job.data.train), measured, has_val=job.data.val is not None)


def use_augment(job: "Job", spec: str) -> None:
    """Train with augmentation `spec` from now on (config.json and the checkpoint record it)."""
    augment = parse_augment(spec, job.data.info)
    job.cfg = dataclasses.replace(job.cfg, augment=spec)
    job.data.augment = augment
    job.data.train.augment = augment if augment.active else None
