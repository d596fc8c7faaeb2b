"""A run's epochs: train, validate, let the callbacks decide, record, checkpoint; then test the best weights.

fit(job, state, callbacks) -> per epoch: train_one_epoch -> end_of_epoch (validate, the callbacks' changes applied,
metrics.jsonl, last.pt, best.pt) -> finish (best weights on the test split, results.json, curves.png).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Iterable

from cnnlab.errors import CnnlabError
from cnnlab.models.weights import weights_digest
from cnnlab.training import budget, metrics
from cnnlab.training.callbacks import Callbacks, TrainingRun, run_callbacks
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.console import Printer
from cnnlab.training.distributed import describe_peer_failure, peer_failure, shutdown
from cnnlab.training.engine import NonFiniteLoss, train_one_epoch
from cnnlab.training.inference import evaluate
from cnnlab.training.record import RunFiles
from cnnlab.training.run import Run
from cnnlab.training.setup import Job, describe, follow, set_train_mode
from cnnlab.training.state import EpochMeter, TrainState

CURVE_POINTS = 50  # training-loss points per epoch kept in the history (curves.png)


class StopFlag:
    """Ctrl-C (or SIGTERM, which torchrun and schedulers send) sets a flag the loop checks between steps, so a
    checkpoint never holds a half-done step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False  # set by a signal to this process
        self.agreed = False  # requested in any process, as of the last check: what the loop acts on
        self._previous: dict = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def fit(job: Job, state: TrainState, callbacks: Iterable[Any] = (), out: Printer | None = None,
        resumed: bool = False) -> Run:
    """Epochs of training and validation with checkpoints, then the test split on the best weights; `callbacks`
    (see callbacks.Callback) are called after the run's own. The caller releases the job (`with build(...)`)."""
    out = out or Printer(job.cfg, job.env.is_main)
    files = RunFiles(job) if job.env.is_main else None
    hooks = Callbacks([*run_callbacks(job.cfg, job.env.is_main, job.plan.budget), *callbacks])
    state.status = "running"
    if files is not None:
        files.config()
        if resumed:  # the checkpoint's history is the truth: drop rows of epochs the checkpoint does not hold
            files.metrics(state.history)
    if not resumed:
        out.auto(job.plan.auto)
    out.start(job.cfg, describe(job), resumed, state, job.run_dir)
    results = None
    try:
        hooks.train_begin(TrainingRun(job, state, resumed))
        with StopFlag() as stop:
            if run_epochs(job, state, stop, hooks, files, out):
                return interrupted(job, state, files, out)
        state.status = "completed"
        results = finish(job, state, files, out)
    except NonFiniteLoss as exc:
        state.status = "diverged"
        if files is not None:
            files.results({"status": "diverged", "epochs_run": state.epoch, "step": state.step})
        raise NonFiniteLoss(diverged_message(job, exc), exc.step, exc.value, exc.lr, exc.last_finite) from None
    except Exception as exc:
        if job.env.enabled and peer_failure(exc):  # another node died: one line, not torch's traceback
            raise CnnlabError(lost_peer_message(job, state, exc)) from None
        raise
    finally:
        hooks.train_end(results)
    shutdown(job.env)
    return Run(job.run_dir, model=job.classifier.module, results=results, status=state.status)


def run_epochs(job: Job, state: TrainState, stop: StopFlag, hooks: Callbacks, files: RunFiles | None,
               out: Printer) -> bool:
    """Train epoch after epoch until the last one or a stop a callback asked for (a stopping rule: checked after
    each epoch and saved, so a resumed run that one of them stopped trains no further); True when interrupted
    (Ctrl-C, SIGTERM)."""
    while state.epoch < job.cfg.epochs:  # job.cfg: a callback may change the epochs after each one
        if state.stopped and state.meter is None:
            out.note(f"stopping: {state.stopped}")
            break
        set_train_mode(job.net, job.cfg, state.epoch)
        cfg = job.cfg
        if cfg.unfreeze_after and state.epoch == cfg.unfreeze_after and job.data.train.resume_batch == 0:
            out.note(f"epoch {state.epoch + 1}: backbone unfrozen (learning rate x{cfg.backbone_lr_scale:g})")
        finished = train_epoch(job, state, stop, hooks, files, out)
        if stop.agreed and not finished:
            return True
        end_of_epoch(job, state, finished, hooks, files, out)
        if job.env.any([stop.requested], job.device)[0]:  # Ctrl-C on an epoch's last step: it is saved
            return True
    return False


def train_epoch(job: Job, state: TrainState, stop: StopFlag, hooks: Callbacks, files: RunFiles | None,
                out: Printer) -> bool:
    """One epoch (or the rest of one) of train_one_epoch, with a resumable checkpoint every --checkpoint-every
    seconds; True when every batch of it was trained."""
    cfg, loader = job.cfg, job.data.train
    loader.set_epoch(state.epoch)
    bar = out.bar(len(loader), state.epoch + 1, cfg.epochs, initial=loader.resume_batch)
    saved_at = time.monotonic()
    planned_end = job.plan.budget.total_steps if job.plan.budget is not None else None  # maybe part of an epoch

    def should_stop() -> bool:
        nonlocal saved_at
        time_up = bool(cfg.max_time) and state.elapsed >= cfg.max_time or state.step == planned_end
        due = bool(cfg.checkpoint_every) and time.monotonic() - saved_at >= cfg.checkpoint_every
        # Act on flags every rank agrees on: a rank that stopped (or saved) alone would leave the others waiting.
        stop.agreed, time_up, due = job.env.any([stop.requested, time_up, due], job.device)
        if due and not (stop.agreed or time_up) and loader.position < len(loader):
            mid = dataclasses.replace(state, meter=job_meter(job, state.meter), status="running")
            if files is not None:  # the loader's position, the RNG states and the whole job's sums so far
                files.checkpoint(mid, "last")
            saved_at = time.monotonic()
        return stop.agreed or time_up

    def after_step(st: TrainState, loss: float) -> None:
        if loader.position % max(1, round(len(loader) / CURVE_POINTS)) == 0:
            close_window(st.meter, st.epoch + loader.position / len(loader))
        hooks.step_end(st.step, loss)

    try:
        complete = train_one_epoch(job.model, job.criterion, job.optimizer, job.schedule, loader, job.device, state,
                                   scaler=job.scaler, amp=cfg.amp, grad_clip=cfg.grad_clip, should_stop=should_stop,
                                   on_step=after_step, progress=bar)
    finally:
        bar.close()
    return complete or loader.position >= len(loader)  # stopped on the last batch: the epoch is complete


def job_meter(job: Job, m: EpochMeter) -> EpochMeter:
    """The epoch's sums over every process of the job (this process's curve kept)."""
    loss_sum, correct, seen = job.env.all_reduce_sum([m.loss_sum, m.correct, m.seen], job.device)
    return dataclasses.replace(m, loss_sum=loss_sum, correct=correct, seen=int(seen))


def close_window(m: Any, epoch: float) -> None:
    """Add the mean training loss since the window's mark to the epoch's curve, at `epoch` (fractional)."""
    if m.seen > m.mark[1]:
        m.curve.append([round(epoch, 4), (m.loss_sum - m.mark[0]) / (m.seen - m.mark[1])])
        m.mark = [m.loss_sum, m.seen]


def epoch_row(job: Job, state: TrainState, finished: bool) -> dict[str, Any]:
    """The epoch's metrics: training (the whole job's), validation (rank 0 validates), rate, speed, time."""
    loader = job.data.train
    close_window(state.meter, state.epoch + (1.0 if finished else loader.position / max(len(loader), 1)))
    m = job_meter(job, state.meter)
    val = evaluate(job.net, job.data.val, job.criterion) if job.data.val is not None and job.env.is_main else None
    outputs_are_probs = job.classifier.module.spec.outputs_are_probs
    row = {
        "epoch": state.epoch + 1,
        "train_loss": m.loss_sum / max(m.seen, 1),
        "train_acc": m.correct / max(m.seen, 1),
        "val_loss": val.loss if val else None,
        "val_acc": val.accuracy(outputs_are_probs) if val else None,
        "lr": job.optimizer.param_groups[0]["lr"] / job.optimizer.param_groups[0].get("lr_scale", 1.0),
        "images_per_s": m.seen / max(m.seconds, 1e-9),
        "elapsed_s": round(state.elapsed, 3),
        "train_loss_curve": m.curve,  # this process's training loss every few steps: [epoch, loss]
    }
    if not finished:
        row["partial"] = True
    return row


def end_of_epoch(job: Job, state: TrainState, finished: bool, hooks: Callbacks, files: RunFiles | None,
                 out: Printer) -> dict:
    """Validate, let the callbacks decide (rank 0's decisions, for every process), apply and record what they
    changed, log one metrics row, write last.pt (and best.pt when validation improved)."""
    env = job.env
    # Rank 0's row (it validates) and clock on every rank: every process decides alike.
    row, state.elapsed = env.broadcast_object((epoch_row(job, state, finished), state.elapsed))
    state.epoch += 1
    state.meter = None
    state.history.append(row)
    score, loss = (row["val_acc"], row["val_loss"]) if row["val_acc"] is not None else (row["train_acc"],
                                                                                          row["train_loss"])
    improved = job.cfg.select == "last" or is_better(score, loss, state)  # "last": the final weights are kept
    if improved:
        state.best_acc, state.best_loss, state.best_epoch, state.bad_epochs = score, loss, state.epoch, 0
    else:
        state.bad_epochs += 1
    notes, replanned = [], False
    for name, change in env.broadcast_object(hooks.epoch_end(state.epoch, row)):
        if change.changes_plan:  # before the checkpoint, so a resume goes on with it
            follow(job, job.plan.changed(change, state.epoch, name))
            replanned = True
        row.update(change.record)
        state.stopped = state.stopped or change.stop
        notes += [change.note] if change.note else []
    if files is not None:
        if replanned:
            files.config()
        files.add_metrics(row)
        files.epoch_checkpoints(state, improved)
    out.epoch(row, improved, job.cfg.epochs)
    for note in notes:
        out.note(note)
    return row


def is_better(score: float, loss: float, state: TrainState) -> bool:
    """The one rule for the best epoch: higher validation accuracy; on a tie, lower validation loss (a small
    validation split reaches 100% long before the model has converged). Without validation: the training split's."""
    return score > state.best_acc or (score == state.best_acc and loss < state.best_loss)


def finish(job: Job, state: TrainState, files: RunFiles | None, out: Printer) -> dict | None:
    """Test the best weights, write results.json and curves.png, print where everything is."""
    env, cfg = job.env, job.cfg
    # DDP keeps every rank's weights equal; a fingerprint of each rank's final weights shows it did.
    digests = env.all_gather_object(weights_digest(job.net.state_dict())) if env.enabled else None
    if files is None:
        return None
    if digests and len(set(digests)) > 1:
        out.note(f"warning: the processes finished with different weights ({len(set(digests))} versions); "
                 f"rank 0's are saved")
    files.final_checkpoints(state)
    best_path = job.run_dir / "checkpoints" / "best.pt"
    if best_path.exists():
        job.classifier.load_state_dict(load_checkpoint(best_path, job.device)["state_dict"])
    test = evaluate(job.net, job.data.test, job.criterion, tta=cfg.tta)
    outputs_are_probs = job.classifier.module.spec.outputs_are_probs
    rep = metrics.report(test.logits, test.targets, test.loss, job.data.info.classes, outputs_are_probs)
    results = {
        **rep.to_dict("test"),
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_acc if job.data.val is not None else None,
        "epochs_run": state.epoch,
        "train_seconds": round(state.elapsed, 2),
        "status": state.status,
        "tta": cfg.tta,
        **({"stopped": state.stopped} if state.stopped else {}),
        **({"weights_sha1_by_rank": digests} if digests else {}),
        **({"feature_extraction": job.data.embedded} if job.data.embedded else {}),
    }
    if job.plan.budget is not None:
        results["budget"] = budget.report(job.plan.budget, state)
        out.note(budget.summary(results["budget"]))
    files.curves(state.history, state.best_epoch)
    files.results(results)  # last: its presence says the run is complete
    out.finish(results, job.run_dir)
    return results


def interrupted(job: Job, state: TrainState, files: RunFiles | None, out: Printer) -> Run:
    """Save where the run stopped (mid-epoch: the whole job's sums) and print how to resume."""
    state.status = "interrupted"
    if state.meter is not None:
        state.meter = job_meter(job, state.meter)
    if files is not None:
        files.checkpoint(state, "last")
        files.write_kept_best()
    out.interrupted(state, job.run_dir)
    shutdown(job.env)
    return Run(job.run_dir, model=job.classifier.module, status="interrupted")


def lost_peer_message(job: Job, state: TrainState, exc: BaseException) -> str:
    """Which process was lost, where training stopped, and how to go on from the last checkpoint."""
    where = (f"training stopped in epoch {state.epoch + 1}" if state.meter is not None
             else f"training stopped after epoch {state.epoch}") + f" (step {state.step})"
    if job.env.is_main and not (job.run_dir / "checkpoints" / "last.pt").exists():
        then = ("no checkpoint was written yet (--checkpoint-every sets how often one is, in seconds): start the "
                "run again")
    else:
        then = f"resume from the last checkpoint with `cnnlab train --resume {job.run_dir}` (any number of processes)"
    return f"{describe_peer_failure(job.env, exc)}; {where}; {then}"


def diverged_message(job: Job, exc: NonFiniteLoss) -> str:
    """What is known about a NaN or infinite loss, what was kept, and what to try (never a larger rate)."""
    last = job.run_dir / "checkpoints" / "last.pt"
    kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint was written yet"
    lr = f"{exc.lr:.3g}" if math.isfinite(exc.lr) else str(exc.lr)
    smaller = f"--lr {job.cfg.lr / 10:g}" if math.isfinite(job.cfg.lr / 10) else "a smaller --lr"
    before = "" if exc.last_finite is None else f"; the loss before it was {exc.last_finite:.4g}"
    return (f"{exc} with a learning rate of {lr} at that step (--lr {job.cfg.lr:g}){before}. Likely cause: the "
            f"learning rate is too high for this model; try {smaller}, or --grad-clip 1.0, or --warmup-epochs 1. "
            f"Check also the inputs for NaNs. Stopped; {kept}.")
