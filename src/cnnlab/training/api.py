"""The public entry points: `train` a model from settings, `resume` a run where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.training.checkpoint import find_checkpoint, load_checkpoint
from cnnlab.training.config import RESUMABLE, TrainConfig, resolve
from cnnlab.training.run import Run
from cnnlab.training.runner import OnStep, fit
from cnnlab.training.setup import build
from cnnlab.training.state import TrainState, restore


def train(config: TrainConfig | None = None, on_step: OnStep | None = None, **settings: Any) -> Run:
    """Train a model and return its Run: `cnnlab.train(model="lenet", dataset="mnist", epochs=3)`.

    Settings are the fields of TrainConfig (defaults < `recipe` < what you give); `on_step(job, state)` is called
    after every optimizer step.
    """
    resume_from = settings.get("resume") or (config.resume if config else None)
    if resume_from:
        return resume(resume_from, on_step=on_step, **{k: v for k, v in settings.items() if k != "resume"})
    cfg = resolve(settings, base=config)
    job = build(cfg)
    if cfg.feature_extraction:
        from cnnlab.training.features import embeddings_job

        job = embeddings_job(job)
    return fit(job, TrainState(), on_step=on_step)


def resume(run: str | Path, on_step: OnStep | None = None, **overrides: Any) -> Run:
    """Continue a run from its last checkpoint; `epochs` (and output options) may be changed."""
    path = find_checkpoint(run, "last")
    ckpt = load_checkpoint(path)
    refused = set(overrides) - set(RESUMABLE)
    if refused:
        raise CnnlabError(f"a resumed run keeps its settings; cannot change {', '.join(sorted(refused))} "
                          f"(changeable: {', '.join(sorted(RESUMABLE))})")
    saved = dict(ckpt["config"])
    saved["resume"] = None
    if saved.get("feature_extraction"):
        raise CnnlabError("a --feature-extraction run is not resumed: run its command again; the embeddings "
                          "come from the cache, so it takes seconds")
    cfg = resolve({**saved, "recipe": None, **overrides})
    run_dir = path.parent.parent
    job = build(cfg, run_dir=run_dir)
    state = restore(job, ckpt)
    if state.epoch >= cfg.epochs and state.meter is None:
        raise CnnlabError(f"{run_dir} already finished its {cfg.epochs} epochs; resume with --epochs N to train longer")
    return fit(job, state, on_step=on_step, resumed=True)
