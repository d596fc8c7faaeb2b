"""What a run is to do, settled before its first step: a `Plan`. The run is built from it (`setup.build`); during
the run it changes only by a callback's `Change`, which the runner applies (`Plan.changed`) and records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from cnnlab.errors import CnnlabError
from cnnlab.training.budget import BudgetPlan, resumed_plan
from cnnlab.training.config import TrainConfig, coerce, resolve, validate

MID_RUN = ("augment", "augment_on_overfit", "epochs")  # the settings a Change may set between two epochs


@dataclass(frozen=True)
class Change:
    """What a callback asks of a run after an epoch (`Callback.on_epoch_end` may return one): settings for the epochs
    to come, a stop, and why. The runner alone applies it, and records it in config.json, the checkpoint and the
    epoch's metrics row, so a resumed run goes on with it."""

    settings: Mapping[str, Any] = field(default_factory=dict)  # MID_RUN settings, from the next epoch on
    budget: BudgetPlan | None = None  # a --budget plan re-made from how training ran (its epochs go in settings)
    stop: str | None = None  # stop after this epoch (results are still written), and why
    note: str | None = None  # the line the run prints about it
    record: Mapping[str, Any] = field(default_factory=dict)  # what the epoch's metrics row keeps of it

    @property
    def changes_plan(self) -> bool:
        return bool(self.settings) or self.budget is not None


@dataclass(frozen=True)
class Plan:
    """A run's settings with nothing left open, and how they were settled: chosen from the data (`auto`), measured
    (`choices`: --lr auto), the --budget plan; then what callbacks changed during the run (`changes`)."""

    cfg: TrainConfig
    auto: dict[str, Any] | None = None  # AutoChoice.to_dict(): the settings chosen from the data, with reasons
    choices: Mapping[str, Any] = field(default_factory=dict)  # settings resolved by measuring: value, reason, seconds
    budget: BudgetPlan | None = None  # --budget: the epochs and steps that fit, and the speeds they rest on
    changes: tuple[dict[str, Any], ...] = ()  # {"epoch", "by", "settings"} for each change made during the run

    def total_steps(self, steps_per_epoch: int) -> int:
        """The schedule's length: the --budget plan's steps (part of an epoch, maybe), else every epoch's."""
        return self.budget.total_steps if self.budget is not None else steps_per_epoch * self.cfg.epochs

    def changed(self, change: Change, epoch: int, by: str) -> "Plan":
        """This plan with `change`'s settings and budget plan, made after `epoch` by the callback named `by`."""
        wrong = sorted(set(change.settings) - set(MID_RUN))
        if wrong:
            raise CnnlabError(f"{by}: a callback may change {', '.join(MID_RUN)} between epochs, not "
                              f"{', '.join(wrong)}")
        settings = {k: coerce(k, v) for k, v in change.settings.items()}
        cfg = dataclasses.replace(self.cfg, **settings)
        validate(cfg)
        record = {"epoch": epoch, "by": by, "settings": settings}
        return dataclasses.replace(self, cfg=cfg, budget=change.budget or self.budget,
                                   changes=(*self.changes, record))

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the plan besides its settings (saved as "config")."""
        return {"auto": self.auto, "choices": dict(self.choices),
                "budget": self.budget.to_dict() if self.budget is not None else None,
                "changes": [dict(c) for c in self.changes]}


def plan_from_checkpoint(ckpt: dict[str, Any], overrides: Mapping[str, Any]) -> Plan:
    """The plan a checkpoint's run was following (its settings as they were when it was saved, callbacks' changes
    included), with the settings a resume may change; a --budget plan is followed as it is (`--epochs N`: trained
    longer, without it)."""
    saved = dict(ckpt["config"])
    saved["resume"] = None
    saved.setdefault("class_weights", "none")  # a run from before class weights trained unweighted
    cfg = resolve({**saved, "recipe": None, **overrides})
    budget = ckpt.get("budget") if "epochs" not in overrides else None
    auto = ckpt.get("auto")
    return Plan(cfg, auto=auto if isinstance(auto, dict) else None, choices=dict(ckpt.get("choices") or {}),
                budget=resumed_plan(budget) if budget else None,
                changes=tuple(c for c in ckpt.get("changes") or () if isinstance(c, dict)))
