"""`--budget`: the arithmetic of a run planned to end within a time budget. `plan_budget` fits training, its
validation passes and the final test into the budget from measured speeds (`prepare.measure` times them on a probe
of the run); `revise` re-plans the rest after each epoch from how training actually ran. The plan rides in the
checkpoint: a resumed run follows it unrevised.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cnnlab.errors import CnnlabError

Clock = Callable[[], float]
NOW: Clock = time.monotonic  # what the budget's seconds are counted by (a fake one in tests)
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


@dataclass(frozen=True)
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
    started: float = field(default=0.0, repr=False)  # NOW() when measuring began, in this process
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
