"""Callbacks: objects a run calls at fixed points, as Keras's and Lightning's do. Derive from `Callback` (every hook
a no-op) or define any of its methods on your own object, and pass it: `cnnlab.train(..., callbacks=[cb])`.

    class StopWhenLow(cnnlab.Callback):
        def on_epoch_end(self, epoch, metrics):
            return metrics["val_loss"] < 0.05  # True: stop after this epoch (the results are still written)

A run's own changes to itself go through the same hooks (`run_callbacks`: the stopping rules, --augment-on-overfit,
the --budget revision, --probe-every, --tensorboard). A hook that changes the run returns a `Change` from
`on_epoch_end`; the runner alone applies it between epochs and records it (config.json, the checkpoint,
metrics.jsonl), so a resumed run goes on with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from cnnlab.errors import CnnlabError
from cnnlab.training import budget
from cnnlab.training.auto import FIT_RATIO, fits_beyond_validation
from cnnlab.training.plan import Change

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnnlab.training.config import TrainConfig
    from cnnlab.training.plan import Plan
    from cnnlab.training.setup import Job, RunData
    from cnnlab.training.state import TrainState

HOOKS = ("on_train_begin", "on_step_end", "on_epoch_end", "on_train_end")


class TrainingRun:
    """A run in progress, as `on_train_begin` hands it to callbacks: read it, never write it (what a callback
    changes goes through the `Change` its `on_epoch_end` returns). Every attribute is live."""

    def __init__(self, job: "Job", state: "TrainState", resumed: bool) -> None:
        self._job, self.state, self.resumed = job, state, resumed

    @property
    def run_dir(self) -> Path:
        return self._job.run_dir

    @property
    def config(self) -> "TrainConfig":
        """The settings the run follows now (a callback's change included)."""
        return self._job.cfg

    @property
    def plan(self) -> "Plan":
        return self._job.plan

    @property
    def model(self) -> "nn.Module":
        """The network being trained (with --feature-extraction, the linear head on the embeddings)."""
        return self._job.net

    @property
    def optimizer(self) -> "torch.optim.Optimizer":
        """Its optimizer (each param group's rate is set from the schedule before every step)."""
        return self._job.optimizer

    @property
    def data(self) -> "RunData":
        """The splits as batches (`train`, `val`, `test`), the pipeline, the dataset's info."""
        return self._job.data

    @property
    def epochs(self) -> int:
        return self._job.cfg.epochs

    @property
    def steps_per_epoch(self) -> int:
        return len(self._job.data.train)

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes the run (rank 0; callbacks run in every process)."""
        return self._job.env.is_main


class Callback:
    """The hooks of a run, each a no-op here: override those you need."""

    def on_train_begin(self, run: TrainingRun) -> None:
        """Before the first step (of a resumed run too: `run.resumed`, `run.state.epoch`)."""

    def on_step_end(self, step: int, loss: float) -> None:
        """After each optimizer step: the steps taken so far, and this step's training loss."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> bool | Change | None:
        """After each epoch (1-based) with its metrics row (train_loss, train_acc, val_loss, val_acc, lr, ...):
        True stops the run after it (the reason is recorded; the best weights are still tested), a `Change`
        changes it from the next epoch on."""
        return None

    def on_train_end(self, results: dict[str, Any] | None) -> None:
        """Once, however training ended: results.json's contents when it completed, None when it was interrupted
        or failed."""


class Callbacks:
    """A run's callbacks, called in order (the run's own first, then the user's)."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.items = list(callbacks)
        for cb in self.items:
            if isinstance(cb, type) or not any(callable(getattr(cb, h, None)) for h in HOOKS):
                raise CnnlabError(f"{cb!r} is not a callback: pass an object (an instance, not a class) that defines "
                                  f"any of {', '.join(HOOKS)} (cnnlab.Callback has them all)")

    def _call(self, hook: str, *args: Any) -> list[tuple[str, Any]]:
        return [(type(cb).__name__, getattr(cb, hook)(*args)) for cb in self.items if callable(getattr(cb, hook, None))]

    def train_begin(self, run: TrainingRun) -> None:
        self._call("on_train_begin", run)

    def step_end(self, step: int, loss: float) -> None:
        self._call("on_step_end", step, loss)

    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> list[tuple[str, Change]]:
        """(the callback's name, its Change) for each callback that asks for one, in order."""
        changes = []
        for name, answer in self._call("on_epoch_end", epoch, dict(metrics)):
            if answer is True:
                answer = Change(stop=f"{name}.on_epoch_end asked to stop after epoch {epoch}")
            elif answer is None or answer is False:
                continue
            elif not isinstance(answer, Change):
                raise CnnlabError(f"{name}.on_epoch_end returned {type(answer).__name__}: a callback returns True "
                                  f"(stop), False or None (go on), or a cnnlab.training.Change")
            changes.append((name, answer))
        return changes

    def train_end(self, results: dict[str, Any] | None) -> None:
        self._call("on_train_end", results)


# ---------------------------------------------------------------- the run's own


def stop_reason(cfg: Any, state: "TrainState") -> str | None:
    """Why training stops before its last epoch (--max-time, --target-acc, --patience), or None to go on."""
    if cfg.max_time and state.elapsed >= cfg.max_time:
        return f"--max-time {cfg.max_time:g} s reached"
    if cfg.target_acc is not None and state.best_acc >= cfg.target_acc:
        return f"the best validation accuracy {state.best_acc:.2%} reached --target-acc {cfg.target_acc:.2%}"
    if cfg.patience and state.bad_epochs >= cfg.patience:
        return f"no better validation accuracy for {cfg.patience} epochs (--patience)"
    return None


class RunCallback(Callback):
    """One of the run's own callbacks: it keeps the run it is given."""

    run: TrainingRun

    def on_train_begin(self, run: TrainingRun) -> None:
        self.run = run


class StoppingRules(RunCallback):
    """--max-time, --target-acc, --patience: stop after the epoch where one of them says so."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> Change | None:
        reason = stop_reason(self.run.config, self.run.state)
        return Change(stop=reason) if reason else None


class AugmentOnOverfit(RunCallback):
    """--augment-on-overfit SPEC: train with SPEC from the epoch after the network memorizes its training images
    (`auto.fits_beyond_validation`), judged from finished epochs alone, so a resume decides alike."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> Change | None:
        spec, cfg = self.run.config.augment_on_overfit, self.run.config
        if not spec or metrics.get("partial") or metrics.get("val_acc") is None:
            return None
        if not fits_beyond_validation(metrics["train_acc"], metrics["val_acc"], epoch, cfg.epochs):
            return None
        return Change(settings={"augment": spec, "augment_on_overfit": ""}, record={"augment_added": spec},
                      note=f"from epoch {epoch + 1}: --augment {spec} (the network memorizes its training images: "
                           f"after epoch {epoch}, its training error {1 - metrics['train_acc']:.2%} is at most "
                           f"{FIT_RATIO:.0%} of its validation error {1 - metrics['val_acc']:.2%})")


class BudgetRevision(RunCallback):
    """--budget: after each whole epoch, the rest of the run re-planned from the speed training ran at
    (`budget.revise`); only a plan this process made (a resumed run follows its plan as saved)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> Change | None:
        plan = self.run.plan.budget
        if plan is None or not plan.revisable or metrics.get("partial"):
            return None
        revised = budget.revise(plan, self.run.state.step, epoch, budget.used_s(plan))
        if revised is None:
            return None
        return Change(settings={"epochs": revised.epochs}, budget=revised,
                      note=f"budget {plan.budget_s:g} s: training ran at {1 / revised.step_s:,.1f} steps/s (planned "
                           f"at {1 / plan.step_s:,.1f}): re-planned from {plan.length()} to {revised.length()}")


class TensorBoard(RunCallback):
    """--tensorboard: the first training images, then every number of each epoch's metrics, in RUN/tb."""

    def on_train_begin(self, run: TrainingRun) -> None:
        super().on_train_begin(run)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") \
                from None
        self.writer = SummaryWriter(str(run.run_dir / "tb"))
        x, _ = next(iter(run.data.train))
        self.writer.add_images("train_samples", run.data.pipeline.denormalize(x[:16].float().cpu()), 0)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                self.writer.add_scalar(k, v, epoch)

    def on_train_end(self, results: dict[str, Any] | None) -> None:
        if getattr(self, "writer", None) is not None:  # opened: on_train_begin did not fail
            self.writer.close()


class Probes(RunCallback):
    """--probe-every N: filters and feature maps of a few fixed images every N epochs (and before the first), for
    the report's epoch-by-epoch strip (RUN/probes)."""

    IMAGES = 4  # images whose feature maps are recorded

    def on_train_begin(self, run: TrainingRun) -> None:
        super().on_train_begin(run)
        if not run.resumed:
            self.snapshot(0)  # the random filters, so the strip starts before any learning

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch % self.run.config.probe_every == 0:
            self.snapshot(epoch)

    def snapshot(self, epoch: int) -> None:
        """The first images of the validation split (else of the test split), through the network now."""
        from cnnlab.data import take
        from cnnlab.files import atomic_save
        from cnnlab.inspect.probes import take_snapshot

        data = self.run.data
        loader = data.val if data.val is not None and len(data.val.targets) else data.test
        images, targets = take(loader.data, range(min(self.IMAGES, len(loader.targets))))
        device = next(self.run.model.parameters()).device
        snap = take_snapshot(self.run.model, data.pipeline.convert(images), data.pipeline, device)
        snap.update(epoch=epoch, targets=targets, classes=list(data.info.classes))
        atomic_save(snap, self.run.run_dir / "probes" / f"epoch-{epoch:03d}.pt")


def run_callbacks(cfg: "TrainConfig", is_main: bool, budget_plan: budget.BudgetPlan | None) -> list[Callback]:
    """The run's own callbacks for its settings: what it changes about itself, then what it records (main process)."""
    own: list[Callback] = [StoppingRules()]
    if cfg.augment_on_overfit:
        own.append(AugmentOnOverfit())
    if budget_plan is not None and budget_plan.revisable:
        own.append(BudgetRevision())
    if is_main and cfg.probe_every:
        own.append(Probes())
    if is_main and cfg.tensorboard:
        own.append(TensorBoard())
    return own
