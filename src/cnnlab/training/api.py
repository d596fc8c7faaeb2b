"""The public entry points: `train` a model from settings, `resume` a run where it stopped.

    settings -> config.resolve -> prepare.prepare (the Plan) -> setup.build (the Job) -> runner.fit (the Run)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from cnnlab.data import listed_once
from cnnlab.errors import CnnlabError
from cnnlab.training.callbacks import stop_reason
from cnnlab.training.checkpoint import find_checkpoint, load_checkpoint
from cnnlab.training.config import RESUMABLE, TrainConfig, resolve
from cnnlab.training.console import Printer
from cnnlab.training.plan import Plan, plan_from_checkpoint
from cnnlab.training.prepare import prepare
from cnnlab.training.record import restore
from cnnlab.training.run import Run
from cnnlab.training.runner import fit
from cnnlab.training.schema import check_run_checkpoint
from cnnlab.training.setup import build
from cnnlab.training.state import TrainState, progress


def train(config: TrainConfig | None = None, callbacks: Iterable[Any] = (), **settings: Any) -> Run:
    """Train a model and return its Run: `cnnlab.train(model="lenet", dataset="mnist", epochs=3)`.

    Settings are the fields of TrainConfig (defaults < `recipe` < what you give); `callbacks` are objects with any
    of the hooks of `cnnlab.Callback` (on_train_begin, on_step_end, on_epoch_end, on_train_end).
    """
    _refuse_on_step(settings)
    resume_from = settings.get("resume") or (config.resume if config else None)
    if resume_from:
        return resume(resume_from, callbacks, **{k: v for k, v in settings.items() if k != "resume"})
    cfg = resolve(settings, base=config)
    out = Printer(cfg)
    with listed_once():  # a folder dataset is listed once: the automatic choices and the splits see the same files
        plan = prepare(cfg, out)
        job = build(plan, out=out)
    with job:
        return fit(job, TrainState(), callbacks, out)


def resume(run: str | Path, callbacks: Iterable[Any] = (), **overrides: Any) -> Run:
    """Continue a run from its last checkpoint: the rest of its training, or whatever it had not written yet (its
    results, killed during the final test). `epochs` (and output options) may be changed."""
    _refuse_on_step(overrides)
    path = find_checkpoint(run, "last")
    ckpt = check_run_checkpoint(load_checkpoint(path), path)
    refused = set(overrides) - set(RESUMABLE)
    if refused:
        raise CnnlabError(f"a resumed run keeps its settings; cannot change {', '.join(sorted(refused))} "
                          f"(changeable: {', '.join(sorted(RESUMABLE))})")
    if ckpt["config"].get("feature_extraction"):
        raise CnnlabError("a --feature-extraction run is not resumed: run its command again; the embeddings "
                          "come from the cache, so it takes seconds")
    plan = plan_from_checkpoint(ckpt, overrides)  # the checkpoint's settings and plan: nothing is chosen again
    run_dir = path.parent.parent
    if finished(ckpt, plan, run_dir):
        raise CnnlabError(f"{run_dir} already finished its training and wrote its results; to train longer, give "
                          f"more epochs: cnnlab.resume(run, epochs=N), or cnnlab train --resume RUN --epochs N")
    out = Printer(plan.cfg)
    with listed_once():
        job = build(plan, run_dir=run_dir, out=out)
    with job:
        state = restore(job, ckpt)
        if state.meter is None:  # a stopping rule the resume changed (--patience, --max-time) may already hold
            state.stopped = state.stopped or stop_reason(plan.cfg, state)
        return fit(job, state, callbacks, out, resumed=True)


def finished(ckpt: dict[str, Any], plan: Plan, run_dir: Path) -> bool:
    """Whether nothing is left to do: no more training under these settings, and the results are written."""
    state = progress(ckpt)
    stopped = state.stopped or stop_reason(plan.cfg, state)
    trains = state.meter is not None or (state.epoch < plan.cfg.epochs and stopped is None)
    return not trains and ckpt.get("status") == "completed" and results_written(run_dir)


def results_written(run_dir: Path) -> bool:
    """Whether results.json holds a finished run's test metrics."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and results.get("status") == "completed" and "test_acc" in results


def _refuse_on_step(settings: dict[str, Any]) -> None:
    if "on_step" in settings:
        raise CnnlabError("on_step= became callbacks=[...]: pass an object with on_step_end(step, loss) (a "
                          "cnnlab.Callback), and on_train_begin(run) to keep what it needs of the run")
