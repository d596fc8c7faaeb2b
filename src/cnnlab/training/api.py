"""The public entry points: `train` a model from settings, `resume` a run where it stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.models.weights import offline_weights_available
from cnnlab.training.auto import PRETRAINED_BACKBONE, AutoChoice, fill_auto
from cnnlab.training.budget import apply_plan, plan_for_job, resumed_plan
from cnnlab.training.checkpoint import find_checkpoint, load_checkpoint
from cnnlab.training.config import RESUMABLE, TrainConfig, resolve
from cnnlab.training.lr_find import use_suggestion
from cnnlab.training.run import Run
from cnnlab.training.runner import OnStep, fit, stop_reason
from cnnlab.training.schema import check_run_checkpoint
from cnnlab.training.setup import Job, build
from cnnlab.training.state import TrainState, progress, restore


def train(config: TrainConfig | None = None, on_step: OnStep | None = None, **settings: Any) -> Run:
    """Train a model and return its Run: `cnnlab.train(model="lenet", dataset="mnist", epochs=3)`.

    Settings are the fields of TrainConfig (defaults < `recipe` < what you give); `on_step(job, state)` is called
    after every optimizer step.
    """
    resume_from = settings.get("resume") or (config.resume if config else None)
    if resume_from:
        return resume(resume_from, on_step=on_step, **{k: v for k, v in settings.items() if k != "resume"})
    cfg = resolve(settings, base=config)
    cfg, choice = settle(cfg)
    job = build(cfg)
    job.auto = choice.to_dict() if choice else None
    try:
        if cfg.feature_extraction:
            from cnnlab.training.features import embeddings_job

            job = embeddings_job(job)
        prepare(job)
        return fit(job, TrainState(), on_step=on_step)
    finally:
        if job.lock is not None:
            job.lock.release()


def settle(cfg: TrainConfig) -> tuple[TrainConfig, AutoChoice | None]:
    """The config with the settings left open chosen from the data (a pretrained backbone only where its weights
    are on this machine), and the choice made (None: nothing was open)."""
    return fill_auto(cfg, pretrained_available=offline_weights_available(PRETRAINED_BACKBONE))


def prepare(job: Job) -> None:
    """Settings resolved by measuring before the first step: --lr auto (a range test), then --budget (the plan; the
    range test's seconds count against it)."""
    start = time.perf_counter()
    if job.cfg.lr == "auto":
        use_suggestion(job)
    if job.cfg.budget:
        plan_for_job(job, already_spent=time.perf_counter() - start)


def resume(run: str | Path, on_step: OnStep | None = None, **overrides: Any) -> Run:
    """Continue a run from its last checkpoint: the rest of its training, or whatever it had not written yet (its
    results, killed during the final test). `epochs` (and output options) may be changed."""
    path = find_checkpoint(run, "last")
    ckpt = check_run_checkpoint(load_checkpoint(path), path)
    refused = set(overrides) - set(RESUMABLE)
    if refused:
        raise CnnlabError(f"a resumed run keeps its settings; cannot change {', '.join(sorted(refused))} "
                          f"(changeable: {', '.join(sorted(RESUMABLE))})")
    saved = dict(ckpt["config"])
    saved["resume"] = None
    saved.setdefault("class_weights", "none")  # a run from before class weights trained unweighted
    if saved.get("feature_extraction"):
        raise CnnlabError("a --feature-extraction run is not resumed: run its command again; the embeddings "
                          "come from the cache, so it takes seconds")
    cfg = resolve({**saved, "recipe": None, **overrides})
    run_dir = path.parent.parent
    if finished(ckpt, cfg, run_dir):
        raise CnnlabError(f"{run_dir} already finished its training and wrote its results; resume with --epochs N to "
                          f"train longer")
    job = build(cfg, run_dir=run_dir)  # the checkpoint's resolved settings: nothing is chosen again
    job.auto = ckpt.get("auto") if isinstance(ckpt.get("auto"), dict) else None
    if ckpt.get("budget") and "epochs" not in overrides:  # the plan made at the start (--epochs N: train longer)
        apply_plan(job, resumed_plan(ckpt["budget"]))
    try:
        return fit(job, restore(job, ckpt), on_step=on_step, resumed=True)
    finally:
        if job.lock is not None:
            job.lock.release()


def finished(ckpt: dict[str, Any], cfg: TrainConfig, run_dir: Path) -> bool:
    """Whether nothing is left to do: no more training under these settings, and the results are written."""
    state = progress(ckpt)
    trains = state.meter is not None or (state.epoch < cfg.epochs and stop_reason(cfg, state) is None)
    return not trains and ckpt.get("status") == "completed" and results_written(run_dir)


def results_written(run_dir: Path) -> bool:
    """Whether results.json holds a finished run's test metrics."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and results.get("status") == "completed" and "test_acc" in results
