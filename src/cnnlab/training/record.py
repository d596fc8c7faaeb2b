"""What a run writes into its folder as it trains (the main process only): config.json, a metrics.jsonl row per
epoch, checkpoints, then curves.png and results.json, the last, whose presence says the run is complete. A failed
write (a full disk, a read-only folder) is one line saying what is kept. A checkpoint holds everything to rebuild,
resume and predict (`checkpoint_state`); `restore` puts a built run back as one left it."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_write_json, atomic_write_text
from cnnlab.training.checkpoint import resume_position, rng_state, save_checkpoint, set_rng_state
from cnnlab.training.run import json_object
from cnnlab.training.rundir import environment
from cnnlab.training.setup import Job, describe
from cnnlab.training.state import EpochMeter, TrainState, progress


def checkpoint_state(job: Job, state: TrainState) -> dict[str, Any]:
    """Everything needed to rebuild, resume and predict without the original command."""
    whole, data, cfg = job.classifier.module, job.data, job.cfg
    return {
        **job.plan.to_dict(),  # auto, choices, budget (the plan a resume follows), changes
        "model": whole.spec.to_dict(),
        "state_dict": job.classifier.state_dict(),
        "optimizer": job.optimizer.state_dict(),
        "scheduler": {"name": cfg.schedule, "step": state.step, "total_steps": job.schedule.total_steps},
        "scaler": job.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "loader": data.train.state_dict() if state.meter else {"epoch": state.epoch, "batch": 0},
        "meter": vars(state.meter) if state.meter else None,
        "rng": rng_state(),
        # What a resume with another number of processes needs to map the step and the loader position.
        "distributed": {"world_size": job.env.world_size, "global_batch": cfg.batch_size * job.env.world_size,
                        "steps_per_epoch": len(data.train)},
        "history": state.history,
        "best": {"val_acc": state.best_acc, "val_loss": state.best_loss, "epoch": state.best_epoch,
                 "bad_epochs": state.bad_epochs},
        "elapsed_s": state.elapsed,
        "status": state.status,
        "stopped": state.stopped,
        "classes": list(data.info.classes),
        "dataset": data.info.name,
        "single_logit": job.criterion.single_logit,
        "class_weights": list(job.criterion.class_weights) if job.criterion.class_weights else None,
        "input_size": list(whole.spec.input_size),
        "pipeline": data.pipeline.to_dict(),
        "augment": data.augment.to_dict(),
        "config": cfg.to_dict(),  # the settings the run follows now (a callback's changes included)
        "weights": getattr(whole, "weights_info", None) or cfg.weights,
    }



def restore_class_weights(job: Job, ckpt: dict[str, Any]) -> None:
    """The loss weighs the classes as the checkpoint's run did (None in runs older than class weights), whatever the
    training split's counts are now."""
    saved = ckpt.get("class_weights")
    weights = tuple(float(w) for w in saved) if saved else None
    if weights and len(weights) != len(job.data.info.classes):
        raise CnnlabError(f"the checkpoint holds {len(weights)} class weights for {len(job.data.info.classes)} "
                          f"classes: it is not this run's")
    if weights != job.criterion.class_weights:
        why = "as saved in the checkpoint" if weights else "none (as the checkpoint's run trained)"
        job.criterion = dataclasses.replace(job.criterion, class_weights=weights, weights_why=why)


def restore(job: Job, ckpt: dict[str, Any]) -> TrainState:
    """Put a run back exactly as the checkpoint left it."""
    job.classifier.load_state_dict(ckpt["state_dict"])
    restore_class_weights(job, ckpt)
    job.optimizer.load_state_dict(ckpt["optimizer"])
    job.scaler.load_state_dict(ckpt["scaler"])
    state = progress(ckpt)
    # Another world size: the same epoch and fraction of the schedule, in this run's steps (see resume_position).
    state.step, loader = resume_position(ckpt, len(job.data.train), job.cfg.batch_size * job.env.world_size)
    if state.meter is not None and not job.env.is_main:  # the saved sums are the whole job's: rank 0 carries them
        state.meter = EpochMeter(seconds=state.meter.seconds)
    job.data.train.load_state_dict(loader)
    set_rng_state(ckpt["rng"])
    return state


class RunFiles:
    """The files of one run's folder, written as the run goes."""

    def __init__(self, job: Job) -> None:
        self.job, self.folder = job, job.run_dir
        self.kept_best: dict[str, Any] | None = None  # feature extraction: best.pt, written when the run ends
        # When training began (a resumed run keeps its first start): `cnnlab runs` lists runs by it.
        before = json_object(self.folder / "config.json")[0] if (self.folder / "config.json").exists() else None
        self.started = (before or {}).get("started") or datetime.now().astimezone().isoformat(timespec="seconds")

    @contextlib.contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """A write into the run folder; a full disk or a read-only folder becomes one line saying what is kept."""
        try:
            yield
        except OSError as exc:
            last = self.folder / "checkpoints" / "last.pt"
            kept = (f"the previous checkpoint {last} is intact: nothing before it is lost" if last.is_file() else
                    "no checkpoint was written yet")
            raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}. Stopped; {kept}. Free some space (or make "
                              f"the folder writable), then: cnnlab train --resume {self.folder}") from None

    def config(self) -> None:
        """config.json: the settings (as the plan has them now), what they turned into, the machine."""
        path, plan = self.folder / "config.json", self.job.plan
        with self.writing(path):
            atomic_write_json({"config": plan.cfg.to_dict(), "resolved": describe(self.job),
                               "environment": environment(), **({"auto": plan.auto} if plan.auto else {}),
                               "started": self.started}, path)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        """metrics.jsonl holding exactly these rows (a resume: the checkpoint's history is the truth)."""
        path = self.folder / "metrics.jsonl"
        with self.writing(path):
            atomic_write_text("".join(json.dumps(row) + "\n" for row in rows), path)

    def add_metrics(self, row: dict[str, Any]) -> None:
        """One epoch's row appended to metrics.jsonl."""
        path = self.folder / "metrics.jsonl"
        with self.writing(path), open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def checkpoint(self, state: TrainState, name: str) -> None:
        """checkpoints/NAME.pt: everything to resume and to predict, written atomically."""
        path = self.folder / "checkpoints" / f"{name}.pt"
        with self.writing(path):
            save_checkpoint(checkpoint_state(self.job, state), path)

    def epoch_checkpoints(self, state: TrainState, improved: bool) -> None:
        """last.pt, and best.pt when validation improved ("last": `final` writes best.pt). A feature-extraction run
        keeps best.pt in memory until it ends: each checkpoint holds the whole backbone for a head fitted in
        milliseconds an epoch, and such a run is never resumed (run again, it takes seconds from the cache)."""
        best = improved and self.job.cfg.select != "last"
        if self.job.classifier.head is not None:
            self.kept_best = copy.deepcopy(checkpoint_state(self.job, state)) if best else self.kept_best
            return
        self.checkpoint(state, "last")
        if best:
            self.checkpoint(state, "best")

    def write_kept_best(self) -> None:
        """best.pt as a feature-extraction run kept it in memory (nothing when it kept none)."""
        if self.kept_best is not None:
            path = self.folder / "checkpoints" / "best.pt"
            with self.writing(path):
                save_checkpoint(self.kept_best, path)

    def final_checkpoints(self, state: TrainState) -> None:
        """last.pt as training ended, and best.pt where the final weights are the kept ones (or kept in memory)."""
        self.checkpoint(state, "last")
        if self.job.cfg.select == "last":
            self.checkpoint(state, "best")
        self.write_kept_best()

    def curves(self, history: list[dict], best_epoch: int | None) -> None:
        """curves.png: loss and accuracy per epoch, the kept epoch marked."""
        from cnnlab.viz import plot_curves, save_figure

        path = self.folder / "curves.png"
        with self.writing(path):
            save_figure(plot_curves(history, best_epoch=best_epoch), path)

    def results(self, results: dict[str, Any]) -> None:
        """results.json, written last: its presence says the run is complete (a resume finishes one killed before)."""
        path = self.folder / "results.json"
        with self.writing(path):
            atomic_write_json(results, path)
