"""A run's epochs: train, validate, log, checkpoint, stop when a rule or the user says so; then test the best weights.

fit(job, state) -> per epoch: train_one_epoch -> end_of_epoch (validate, metrics.jsonl, last.pt, best.pt) -> finish
(best weights on the test split, results.json, curves.png).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnlab.data import take
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_save, atomic_write_json, atomic_write_text
from cnnlab.training import adapt, budget, metrics
from cnnlab.training.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.training.console import Printer
from cnnlab.training.distributed import shutdown, weights_digest
from cnnlab.training.engine import NonFiniteLoss, train_one_epoch
from cnnlab.training.inference import evaluate
from cnnlab.training.run import Run
from cnnlab.training.rundir import environment
from cnnlab.training.setup import Job, describe, set_train_mode
from cnnlab.training.state import TrainState, checkpoint_state

PROBE_IMAGES = 4  # images whose feature maps --probe-every records
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


OnStep = Callable[[Job, TrainState], None]


def fit(job: Job, state: TrainState, on_step: OnStep | None = None, resumed: bool = False) -> Run:
    """Epochs of training and validation with checkpoints, then the test split on the best weights."""
    try:
        return _fit(job, state, on_step, resumed)
    finally:
        if job.lock is not None:
            job.lock.release()


def _fit(job: Job, state: TrainState, on_step: OnStep | None, resumed: bool) -> Run:
    out = Printer(job.cfg, job.run_dir, job.env.is_main)
    state.status = "running"
    if job.env.is_main:
        write_config(job)
        if resumed:  # the checkpoint's history is the truth: drop rows of epochs the checkpoint does not hold
            with writing(job, job.run_dir / "metrics.jsonl"):
                atomic_write_text("".join(json.dumps(row) + "\n" for row in state.history),
                                  job.run_dir / "metrics.jsonl")
    if not resumed:
        out.auto(job.auto)
    out.start(describe(job), resumed, state)
    if job.cfg.probe_every and job.env.is_main and not resumed:
        probe(job, state)  # epoch 0: the random filters, so the report's strip starts before any learning
    tb = open_tensorboard(job)
    results = None
    try:
        with StopFlag() as stop:
            if run_epochs(job, state, stop, out, tb, on_step):
                return interrupted(job, state, out)
        state.status = "completed"
        results = finish(job, state, out)
    except NonFiniteLoss as exc:
        state.status = "diverged"
        if job.env.is_main:
            atomic_write_json({"status": "diverged", "epochs_run": state.epoch, "step": state.step},
                              job.run_dir / "results.json")
        raise NonFiniteLoss(diverged_message(job, exc), exc.step, exc.value, exc.lr, exc.last_finite) from None
    finally:
        if tb is not None:
            tb.close()
    shutdown(job.env)
    return Run(job.run_dir, model=job.classifier.module, results=results, status=state.status)


def run_epochs(job: Job, state: TrainState, stop: StopFlag, out: Printer, tb: Any, on_step: OnStep | None) -> bool:
    """Train epoch after epoch until the last one or a stopping rule; True when interrupted (Ctrl-C, SIGTERM).

    The rules are checked before each epoch, so a run resumed after one of them stopped it (and killed before it
    wrote its results) trains no further: it does what the uninterrupted run did.
    """
    while state.epoch < job.cfg.epochs:  # job.cfg: a --budget plan may be revised after each epoch
        cfg = job.cfg
        reason = stop_reason(cfg, state) if state.meter is None else None
        if reason:
            out.note(f"stopping: {reason}")
            break
        set_train_mode(job.net, cfg, state.epoch)
        if cfg.unfreeze_after and state.epoch == cfg.unfreeze_after and job.data.train.resume_batch == 0:
            out.note(f"epoch {state.epoch + 1}: backbone unfrozen (learning rate x{cfg.backbone_lr_scale:g})")
        finished = train_epoch(job, state, stop, out, on_step)
        if stop.agreed and not finished:
            return True
        end_of_epoch(job, state, finished, out, tb)
        if job.env.any([stop.requested], job.device)[0]:  # Ctrl-C on an epoch's last step: it is saved
            return True
    return False


def train_epoch(job: Job, state: TrainState, stop: StopFlag, out: Printer, on_step: OnStep | None) -> bool:
    """One epoch (or the rest of one) of train_one_epoch, with a resumable checkpoint every --checkpoint-every
    seconds; True when every batch of it was trained."""
    cfg, loader = job.cfg, job.data.train
    loader.set_epoch(state.epoch)
    bar = out.bar(len(loader), state.epoch + 1, initial=loader.resume_batch)
    saved_at = time.monotonic()
    planned_end = job.budget.total_steps if job.budget is not None else None  # a --budget plan of part of an epoch

    def should_stop() -> bool:
        nonlocal saved_at
        time_up = bool(cfg.max_time) and state.elapsed >= cfg.max_time or state.step == planned_end
        due = bool(cfg.checkpoint_every) and time.monotonic() - saved_at >= cfg.checkpoint_every
        # Act on flags every rank agrees on: a rank that stopped (or saved) alone would leave the others waiting.
        stop.agreed, time_up, due = job.env.any([stop.requested, time_up, due], job.device)
        if due and not (stop.agreed or time_up) and loader.position < len(loader):
            save_mid_epoch(job, state)
            saved_at = time.monotonic()
        return stop.agreed or time_up

    def after_step(st: TrainState) -> None:
        if loader.position % max(1, round(len(loader) / CURVE_POINTS)) == 0:
            close_window(st.meter, st.epoch + loader.position / len(loader))
        if on_step is not None:
            on_step(job, st)

    try:
        complete = train_one_epoch(job.model, job.criterion, job.optimizer, job.schedule, loader, job.device, state,
                                   scaler=job.scaler, amp=cfg.amp, grad_clip=cfg.grad_clip, should_stop=should_stop,
                                   on_step=after_step, progress=bar)
    finally:
        bar.close()
    return complete or loader.position >= len(loader)  # stopped on the last batch: the epoch is complete


def save_mid_epoch(job: Job, state: TrainState) -> None:
    """last.pt in the middle of an epoch: the loader's position, the RNG states and the whole job's sums so far."""
    m = state.meter
    loss_sum, correct, seen = job.env.all_reduce_sum([m.loss_sum, m.correct, m.seen], job.device)
    if job.env.is_main:
        meter = dataclasses.replace(m, loss_sum=loss_sum, correct=correct, seen=int(seen))  # its curve kept
        save(job, dataclasses.replace(state, meter=meter, status="running"), "last")


def close_window(m: Any, epoch: float) -> None:
    """Add the mean training loss since the window's mark to the epoch's curve, at `epoch` (fractional)."""
    if m.seen > m.mark[1]:
        m.curve.append([round(epoch, 4), (m.loss_sum - m.mark[0]) / (m.seen - m.mark[1])])
        m.mark = [m.loss_sum, m.seen]


def end_of_epoch(job: Job, state: TrainState, finished: bool, out: Printer, tb: Any) -> dict:
    """Validate, log one metrics row, and write last.pt (and best.pt when validation improved)."""
    env, m = job.env, state.meter
    loader = job.data.train
    close_window(m, state.epoch + (1.0 if finished else loader.position / max(len(loader), 1)))
    loss_sum, correct, seen = env.all_reduce_sum([m.loss_sum, m.correct, m.seen], job.device)
    val = evaluate(job.net, job.data.val, job.criterion) if job.data.val is not None and env.is_main else None
    row = {
        "epoch": state.epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "val_loss": val.loss if val else None,
        "val_acc": val.accuracy(outputs_are_probs(job)) if val else None,
        "lr": job.optimizer.param_groups[0]["lr"] / job.optimizer.param_groups[0].get("lr_scale", 1.0),
        "images_per_s": seen / max(m.seconds, 1e-9),
        "elapsed_s": round(state.elapsed, 3),
        "train_loss_curve": m.curve,  # this process's training loss every few steps: [epoch, loss]
    }
    if not finished:
        row["partial"] = True
    state.epoch += 1
    state.meter = None
    state.history.append(row)
    score, loss = (row["val_acc"], row["val_loss"]) if val else (row["train_acc"], row["train_loss"])
    score, loss, state.elapsed = env.broadcast([score, loss, state.elapsed], job.device)  # rank 0's: same decisions
    improved = job.cfg.select == "last" or is_better(score, loss, state)  # "last": the final weights are kept
    if improved:
        state.best_acc, state.best_loss, state.best_epoch, state.bad_epochs = score, loss, state.epoch, 0
    else:
        state.bad_epochs += 1
    if finished and adapt.after_epoch(job, state, row, out) and env.is_main:
        write_config(job)  # an added augmentation, revised epochs: before the checkpoint, so a resume follows them
    if env.is_main:
        with writing(job, job.run_dir / "metrics.jsonl"), open(job.run_dir / "metrics.jsonl", "a",
                                                                   encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        save_epoch(job, state, improved)
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    tb.add_scalar(k, v, state.epoch)
        if job.cfg.probe_every and state.epoch % job.cfg.probe_every == 0:
            probe(job, state)
    out.epoch(row, improved)
    return row


def save_epoch(job: Job, state: TrainState, improved: bool) -> None:
    """last.pt, and best.pt when validation improved ("last": finish writes best.pt). A feature-extraction run keeps
    best.pt in memory until it ends: each checkpoint holds the whole backbone (45 MB for resnet18) for a head fitted
    in milliseconds an epoch, and such a run is never resumed (run again, it takes seconds from the cached features)."""
    best = improved and job.cfg.select != "last"
    if job.classifier.head is not None:
        job.kept_best = copy.deepcopy(checkpoint_state(job, state)) if best else job.kept_best
        return
    save(job, state, "last")
    if best:
        save(job, state, "best")


def write_kept_best(job: Job) -> None:
    """best.pt as a feature-extraction run kept it in memory (nothing when it kept none)."""
    if job.kept_best is not None:
        with writing(job, job.run_dir / "checkpoints" / "best.pt"):
            save_checkpoint(job.kept_best, job.run_dir / "checkpoints" / "best.pt")


def is_better(score: float, loss: float, state: TrainState) -> bool:
    """The one rule for the best epoch: higher validation accuracy; on a tie, lower validation loss (a small
    validation split reaches 100% long before the model has converged). Without validation: the training split's."""
    return score > state.best_acc or (score == state.best_acc and loss < state.best_loss)


def stop_reason(cfg: Any, state: TrainState) -> str | None:
    """Why training stops before its last epoch (--max-time, --target-acc, --patience), or None to go on."""
    if cfg.max_time and state.elapsed >= cfg.max_time:
        return f"--max-time {cfg.max_time:g} s reached"
    if cfg.target_acc is not None and state.best_acc >= cfg.target_acc:
        return f"the best validation accuracy {state.best_acc:.2%} reached --target-acc {cfg.target_acc:.2%}"
    if cfg.patience and state.bad_epochs >= cfg.patience:
        return f"no better validation accuracy for {cfg.patience} epochs (--patience)"
    return None


def finish(job: Job, state: TrainState, out: Printer) -> dict | None:
    """Test the best weights, write results.json and curves.png, print where everything is."""
    env, cfg = job.env, job.cfg
    # DDP keeps every rank's weights equal; a fingerprint of each rank's final weights shows it did.
    digests = env.all_gather_object(weights_digest(job.net.state_dict())) if env.enabled else None
    if not env.is_main:
        return None
    if digests and len(set(digests)) > 1:
        out.note(f"warning: the processes finished with different weights ({len(set(digests))} versions); "
                 f"rank 0's are saved")
    save(job, state, "last")
    if cfg.select == "last":
        save(job, state, "best")
    write_kept_best(job)
    best_path = job.run_dir / "checkpoints" / "best.pt"
    if best_path.exists():
        job.classifier.load_state_dict(load_checkpoint(best_path, job.device)["state_dict"])
    test = evaluate(job.net, job.data.test, job.criterion, tta=cfg.tta)
    rep = metrics.report(test.logits, test.targets, test.loss, job.data.info.classes, outputs_are_probs(job))
    results = {
        **rep.to_dict("test"),
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_acc if job.data.val is not None else None,
        "epochs_run": state.epoch,
        "train_seconds": round(state.elapsed, 2),
        "status": state.status,
        "tta": cfg.tta,
        **({"weights_sha1_by_rank": digests} if digests else {}),
        **job.results_extra,
    }
    if job.budget is not None:
        results["budget"] = budget.report(job.budget, state)
        out.note(budget.summary(results["budget"]))
    with writing(job, job.run_dir / "curves.png"):
        draw_curves(state.history, job.run_dir / "curves.png", state.best_epoch)
    # results.json last: its presence says the run is complete (a resume finishes a run killed before it).
    with writing(job, job.run_dir / "results.json"):
        atomic_write_json(results, job.run_dir / "results.json")
    out.finish(results)
    return results


def draw_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch, the kept epoch marked, as curves.png."""
    from cnnlab.viz import plot_curves, save_figure

    save_figure(plot_curves(history, best_epoch=best_epoch), path)


def interrupted(job: Job, state: TrainState, out: Printer) -> Run:
    """Save where the run stopped (mid-epoch: the whole job's sums) and print how to resume."""
    state.status = "interrupted"
    if state.meter is not None:
        m = state.meter
        m.loss_sum, m.correct, seen = job.env.all_reduce_sum([m.loss_sum, m.correct, m.seen], job.device)
        m.seen = int(seen)
    if job.env.is_main:
        save(job, state, "last")
        write_kept_best(job)
    out.interrupted(state)
    shutdown(job.env)
    return Run(job.run_dir, model=job.classifier.module, status="interrupted")


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


@contextlib.contextmanager
def writing(job: Job, path: Path) -> Iterator[None]:
    """A write into the run folder; a full disk or a read-only folder becomes one line saying what is kept."""
    try:
        yield
    except OSError as exc:
        last = job.run_dir / "checkpoints" / "last.pt"
        kept = (f"the previous checkpoint {last} is intact: nothing before it is lost" if last.is_file() else
                "no checkpoint was written yet")
        raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}. Stopped; {kept}. Free some space (or make the "
                          f"folder writable), then: cnnlab train --resume {job.run_dir}") from None


def save(job: Job, state: TrainState, name: str) -> None:
    path = job.run_dir / "checkpoints" / f"{name}.pt"
    with writing(job, path):
        save_checkpoint(checkpoint_state(job, state), path)


def write_config(job: Job) -> None:
    path = job.run_dir / "config.json"
    with writing(job, path):
        atomic_write_json({"config": job.cfg.to_dict(), "resolved": describe(job), "environment": environment(),
                           **({"auto": job.auto} if job.auto else {})}, path)


def outputs_are_probs(job: Job) -> bool:
    return bool(job.classifier.module.spec.kwargs.get("final_softmax"))


def open_tensorboard(job: Job) -> Any:
    """A SummaryWriter in RUN/tb with the first training images, for --tensorboard (main process only)."""
    if not job.cfg.tensorboard or not job.env.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from cnnlab.errors import CnnlabError

        raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") from None
    writer = SummaryWriter(str(job.run_dir / "tb"))
    x, _ = next(iter(job.data.train))
    writer.add_images("train_samples", job.data.pipeline.denormalize(x[:16].float().cpu()), 0)
    return writer


def probe(job: Job, state: TrainState) -> None:
    """Snapshot filters and feature maps of a few fixed images (the first of val, else of test) into RUN/probes."""
    from cnnlab.inspect.probes import take_snapshot

    loader = job.data.val if job.data.val is not None and len(job.data.val.targets) else job.data.test
    images, targets = take(loader.data, range(min(PROBE_IMAGES, len(loader.targets))))
    snapshot = take_snapshot(job.net, job.data.pipeline.convert(images), job.data.pipeline, job.device)
    snapshot.update(epoch=state.epoch, targets=targets, classes=list(job.data.info.classes))
    atomic_save(snapshot, job.run_dir / "probes" / f"epoch-{state.epoch:03d}.pt")
