"""The training loop, top to bottom: fit -> (train_one_epoch, evaluate, checkpoint) per epoch -> test."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab._malloc import tune_malloc
from cnnlab.errors import CnnlabError
from cnnlab.train import metrics
from cnnlab.train.checkpoint import load_checkpoint, resume_position, rng_state, save_checkpoint, set_rng_state
from cnnlab.train.config import TrainConfig, resolve
from cnnlab.train.distributed import shutdown, weights_digest
from cnnlab.train.schedule import lr_at
from cnnlab.train.setup import Setup, backbone_frozen, build, environment
from cnnlab.train.tta import with_tta

AUX_WEIGHT = 0.4  # Inception v3's auxiliary classifier, weighted as in its paper


class NonFiniteLoss(CnnlabError):
    """The loss became NaN or infinite."""


@dataclass
class EpochMeter:
    """Running sums of one training epoch (kept in the checkpoint so a mid-epoch resume counts exactly)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class TrainState:
    """Everything that changes while training and must survive a resume."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    elapsed: float = 0.0  # training seconds over all sessions
    meter: EpochMeter | None = None  # set while an epoch is in progress
    status: str = "running"


# ---------------------------------------------------------------- loss and outputs


def split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, auxiliary logits or None): Inception v3 in training mode returns both."""
    if isinstance(out, torch.Tensor):
        return out, None
    if hasattr(out, "logits"):
        return out.logits, getattr(out, "aux_logits", None)
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    raise TypeError(f"cannot read logits from a model output of type {type(out).__name__}")


def loss_fn(logits: torch.Tensor, y: torch.Tensor, single_logit: bool, smoothing: float) -> torch.Tensor:
    """Cross-entropy (with label smoothing), or binary cross-entropy on a single logit."""
    if single_logit:
        target = y.float() * (1 - smoothing) + 0.5 * smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), target)
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)


def compute_loss(out: Any, y: torch.Tensor, single_logit: bool, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, main logits), adding the auxiliary head's loss when the model has one."""
    logits, aux = split_outputs(out)
    loss = loss_fn(logits, y, single_logit, smoothing)
    if aux is not None:
        loss = loss + AUX_WEIGHT * loss_fn(aux, y, single_logit, smoothing)
    return loss, logits


def autocast(s: Setup):
    """Mixed-precision context for the run's device, or a no-op."""
    if s.cfg.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if s.cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=s.device.type, dtype=dtype)


# ---------------------------------------------------------------- interruption


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


# ---------------------------------------------------------------- one epoch, one evaluation


def train_one_epoch(s: Setup, state: TrainState, stop: StopFlag, out: "Printer",
                    on_step: Callable[[Setup, TrainState], None] | None = None) -> bool:
    """Train until the epoch ends (True) or a stop is requested or the time runs out (False)."""
    cfg, model, opt = s.cfg, s.model, s.optimizer
    model.train()
    _freeze_for_epoch(s, state, out)
    meter = state.meter
    s.train_loader.set_epoch(state.epoch)
    check_every = 1 if s.device.type == "cpu" else 25  # a NaN check syncs with the GPU: not every step there
    pending: list[tuple[int, torch.Tensor]] = []
    bar = out.bar(len(s.train_loader), state.epoch + 1, cfg.epochs, initial=s.train_loader.resume_batch)
    t0 = time.perf_counter()
    finished = True
    for x, y in s.train_loader:
        lr = lr_at(state.step, base_lr=cfg.lr, schedule=cfg.schedule, total_steps=s.total_steps,
                   warmup_steps=round(cfg.warmup_epochs * s.steps_per_epoch),
                   step_size=max(1, round(cfg.step_epochs * s.steps_per_epoch)), gamma=cfg.gamma)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast(s):
            loss, logits = compute_loss(model(x), y, s.single_logit, cfg.label_smoothing)
        pending.append((state.step, loss.detach()))
        if len(pending) >= check_every:
            _check_finite(pending, s, state)
            pending.clear()
        opt.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            s.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(s.net.parameters(), cfg.grad_clip)
        s.scaler.step(opt)
        s.scaler.update()
        state.step += 1
        with torch.no_grad():
            meter.loss_sum += loss.item() * len(y)
            meter.correct += (metrics.predictions(logits.detach()) == y).sum().item()
            meter.seen += len(y)
        meter.seconds += time.perf_counter() - t0
        state.elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        bar.update(meter)
        if on_step is not None:
            on_step(s, state)
        # Act on flags every rank agrees on: a rank that stopped alone would leave the others waiting in DDP.
        stop.agreed, time_up = s.env.any([stop.requested, cfg.max_time and state.elapsed >= cfg.max_time], s.device)
        if stop.agreed or time_up:
            finished = s.train_loader.position >= len(s.train_loader)  # the last batch: the epoch is complete
            break
    if pending:
        _check_finite(pending, s, state)
    bar.close()
    return finished


def _freeze_for_epoch(s: Setup, state: TrainState, out: "Printer") -> None:
    """Freeze the backbone (weights and BatchNorm statistics) while the config says so; after model.train()."""
    cfg = s.cfg
    if not backbone_frozen(cfg, 0):
        return
    from cnnlab.models.backbones import freeze_backbone

    # Decided from the epoch, not toggled once, so a run resumed after --unfreeze-after is unfrozen too.
    frozen = backbone_frozen(cfg, state.epoch)
    freeze_backbone(s.net, frozen)
    if not frozen and state.epoch == cfg.unfreeze_after and s.train_loader.resume_batch == 0:
        out.note(f"epoch {state.epoch + 1}: backbone unfrozen (learning rate x{cfg.backbone_lr_scale:g})")


def _check_finite(pending: list[tuple[int, torch.Tensor]], s: Setup, state: TrainState) -> None:
    losses = torch.stack([v for _, v in pending]).float()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        step, value = pending[int(bad[0])][0], losses[int(bad[0])].item()
        cfg = s.cfg
        last = s.run_dir / "checkpoints" / "last.pt"
        kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint was written yet"
        raise NonFiniteLoss(
            f"the loss became {value} at step {step} (epoch {state.epoch + 1}). Likely cause: the learning rate "
            f"is too high for this model (lr={cfg.lr:g}); try --lr {cfg.lr / 10:g}, or --grad-clip 1.0, or "
            f"--warmup-epochs 1. Check also the inputs for NaNs. Stopped; {kept}."
        )


@torch.inference_mode()
def evaluate(s: Setup, loader, collect: bool = False, tta: str = "none") -> dict[str, Any]:
    """Loss and accuracy over a whole split (the plain model, in eval mode, big batches; `tta`: see tta.py)."""
    net = s.net
    was_training = net.training
    net.eval()
    loss_sum, correct, n = 0.0, 0, 0
    all_logits, all_targets = [], []
    for x, y in loader:
        with autocast(s):
            logits = with_tta(lambda b: split_outputs(net(b))[0], x, tta)
        loss_sum += loss_fn(logits, y, s.single_logit, 0.0).item() * len(y)
        correct += (metrics.predictions(logits) == y).sum().item()
        n += len(y)
        if collect:
            all_logits.append(logits.float().cpu())
            all_targets.append(y.cpu())
    net.train(was_training)
    result = {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": n}
    if collect:
        result["logits"] = torch.cat(all_logits) if all_logits else torch.zeros(0, 1)
        result["targets"] = torch.cat(all_targets) if all_targets else torch.zeros(0, dtype=torch.long)
    return result


# ---------------------------------------------------------------- checkpoints


def checkpoint_state(s: Setup, state: TrainState) -> dict[str, Any]:
    """Everything needed to rebuild, resume and predict without the original command."""
    return {
        "model": s.net.spec.to_dict(),
        "state_dict": s.net.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": {"name": s.cfg.schedule, "step": state.step, "total_steps": s.total_steps},
        "scaler": s.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "loader": s.train_loader.state_dict() if state.meter else {"epoch": state.epoch, "batch": 0},
        "meter": vars(state.meter) if state.meter else None,
        "rng": rng_state(),
        # What a resume with another number of processes needs to map the step and the loader position.
        "distributed": {"world_size": s.env.world_size, "global_batch": s.cfg.batch_size * s.env.world_size,
                        "steps_per_epoch": s.steps_per_epoch},
        "history": state.history,
        "best": {"val_acc": state.best_acc, "epoch": state.best_epoch, "bad_epochs": state.bad_epochs},
        "elapsed_s": state.elapsed,
        "status": state.status,
        "classes": list(s.classes),
        "dataset": s.dataset_name,
        "single_logit": s.single_logit,
        "input_size": list(s.net.spec.input_size),
        "pipeline": s.pipeline.to_dict(),
        "augment": s.augment.to_dict(),
        "config": s.cfg.to_dict(),
        "weights": getattr(s.net, "weights_info", None) or s.cfg.weights,
    }


def save(s: Setup, state: TrainState, name: str) -> Path:
    return save_checkpoint(checkpoint_state(s, state), s.run_dir / "checkpoints" / f"{name}.pt")


def restore(s: Setup, ckpt: dict[str, Any]) -> TrainState:
    """Put a run back exactly as the checkpoint left it."""
    s.net.load_state_dict(ckpt["state_dict"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scaler.load_state_dict(ckpt["scaler"])
    best = ckpt["best"]
    # Another world size: the same epoch and fraction of the schedule, in this run's steps (see resume_position).
    step, loader = resume_position(ckpt, s.steps_per_epoch, s.cfg.batch_size * s.env.world_size)
    meter = EpochMeter(**ckpt["meter"]) if ckpt.get("meter") else None
    if meter is not None and not s.env.is_main:  # the saved sums are the whole job's: rank 0 carries them
        meter = EpochMeter(seconds=meter.seconds)
    state = TrainState(
        epoch=ckpt["epoch"], step=step, history=list(ckpt["history"]), best_acc=best["val_acc"],
        best_epoch=best["epoch"], bad_epochs=best["bad_epochs"], elapsed=ckpt["elapsed_s"], meter=meter,
    )
    s.train_loader.load_state_dict(loader)
    set_rng_state(ckpt["rng"])
    return state


# ---------------------------------------------------------------- the run


def train(config: TrainConfig | None = None, on_step: Callable | None = None, **settings: Any):
    """Train a model and return its Run; `cnnlab.train(model="lenet", dataset="mnist", epochs=3)`."""
    resume_from = settings.get("resume") or (config.resume if config else None)
    if resume_from:
        return resume(resume_from, on_step=on_step, **{k: v for k, v in settings.items() if k != "resume"})
    cfg = resolve(settings, base=config)
    s = build(cfg)
    if cfg.feature_extraction:
        from cnnlab.train.features import fit_features

        try:
            return fit_features(s)
        finally:
            s.curves.close()
    return fit(s, TrainState(), on_step=on_step)


def resume(run: str | Path, on_step: Callable | None = None, **overrides: Any):
    """Continue a run from its last checkpoint; `epochs` (and output options) may be changed."""
    from cnnlab.train.checkpoint import find_checkpoint

    path = find_checkpoint(run, "last")
    ckpt = load_checkpoint(path)
    allowed = {"epochs", "quiet", "json", "max_time", "target_acc", "patience", "device", "num_workers",
               "threads", "tensorboard", "data_dir"}
    refused = set(overrides) - allowed
    if refused:
        raise CnnlabError(f"a resumed run keeps its settings; cannot change {', '.join(sorted(refused))} "
                          f"(changeable: {', '.join(sorted(allowed))})")
    saved = dict(ckpt["config"])
    saved["resume"] = None
    if saved.get("feature_extraction"):
        raise CnnlabError("a --feature-extraction run is not resumed: run its command again; the embeddings "
                          "come from the cache, so it takes seconds")
    cfg = resolve({**saved, "recipe": None, **overrides})
    run_dir = path.parent.parent
    s = build(cfg, run_dir=run_dir)
    state = restore(s, ckpt)
    if state.epoch >= cfg.epochs and state.meter is None:
        raise CnnlabError(f"{run_dir} already finished its {cfg.epochs} epochs; resume with --epochs N to train longer")
    return fit(s, state, on_step=on_step, resumed=True)


def fit(s: Setup, state: TrainState, on_step: Callable | None = None, resumed: bool = False):
    """Epochs of training and validation with checkpoints, then the test split on the best weights."""
    from cnnlab.train.run import Run

    tune_malloc()  # every step frees and reallocates the same buffers: keep them in the heap (see _malloc.py)
    cfg, out = s.cfg, Printer(s)
    if s.env.is_main:
        atomic_write_json({"config": cfg.to_dict(), "resolved": resolved(s), "environment": environment()},
                          s.run_dir / "config.json")
        if resumed:  # the checkpoint's history is the truth: drop rows of epochs the checkpoint does not hold
            atomic_write_text("".join(json.dumps(row) + "\n" for row in state.history), s.run_dir / "metrics.jsonl")
    out.start(resumed, state)
    if s.cfg.probe_every and s.env.is_main and not resumed:
        _probe(s, state)  # epoch 0: the random filters, so the report's strip starts before any learning
    tb = _tensorboard(s)
    try:
        with StopFlag() as stop:
            while state.epoch < cfg.epochs:
                if state.meter is None:
                    state.meter = EpochMeter()
                finished = train_one_epoch(s, state, stop, out, on_step)
                if stop.agreed and not finished:
                    return _interrupted(s, state, out)
                row = end_of_epoch(s, state, finished, out, tb)
                if s.env.any([stop.requested], s.device)[0]:  # Ctrl-C on an epoch's last step: it is saved
                    return _interrupted(s, state, out)
                if _should_stop(s, state, row, finished, out):
                    break
        state.status = "completed"
        results = finish(s, state, out)
    except NonFiniteLoss:
        state.status = "diverged"
        if s.env.is_main:
            _append_note(s, state)
        raise
    finally:
        if tb is not None:
            tb.close()
        s.curves.close()  # a no-op once the curves are drawn; ends the helper after an interruption or an error
    shutdown(s.env)
    return Run(s.run_dir, model=s.net, results=results, status=state.status)  # other ranks have no results


def end_of_epoch(s: Setup, state: TrainState, finished: bool, out: "Printer", tb) -> dict:
    """Validate, log one metrics row, and write last.pt (and best.pt when validation improved)."""
    m = state.meter
    loss_sum, correct, seen = s.env.all_reduce_sum([m.loss_sum, m.correct, m.seen], s.device)
    val = evaluate(s, s.val_loader) if s.val_loader is not None and s.env.is_main else None
    row = {
        "epoch": state.epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "val_loss": val["loss"] if val else None,
        "val_acc": val["acc"] if val else None,
        "lr": s.optimizer.param_groups[0]["lr"] / s.optimizer.param_groups[0].get("lr_scale", 1.0),
        "images_per_s": seen / max(m.seconds, 1e-9),
        "elapsed_s": round(state.elapsed, 3),
    }
    if not finished:
        row["partial"] = True
    state.epoch += 1
    state.meter = None
    state.history.append(row)
    score = row["val_acc"] if row["val_acc"] is not None else row["train_acc"]
    score, state.elapsed = s.env.broadcast([score, state.elapsed], s.device)  # rank 0's: same decisions everywhere
    improved = score > state.best_acc
    if improved:
        state.best_acc, state.best_epoch, state.bad_epochs = score, state.epoch, 0
    else:
        state.bad_epochs += 1
    if s.env.is_main:
        with open(s.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        save(s, state, "last")
        if improved:
            save(s, state, "best")
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    tb.add_scalar(k, v, state.epoch)
        _probe(s, state)
    out.epoch(row, improved)
    return row


def _should_stop(s: Setup, state: TrainState, row: dict, finished: bool, out: "Printer") -> bool:
    cfg = s.cfg
    score = row["val_acc"] if row["val_acc"] is not None else row["train_acc"]
    if not finished or (cfg.max_time and state.elapsed >= cfg.max_time):
        out.note(f"stopping: --max-time {cfg.max_time:g} s reached")
        return True
    if cfg.target_acc is not None and state.best_acc >= cfg.target_acc:
        out.note(f"stopping: validation accuracy {score:.2%} reached --target-acc {cfg.target_acc:.2%}")
        return True
    if cfg.patience and state.bad_epochs >= cfg.patience:
        out.note(f"stopping early: no better validation accuracy for {cfg.patience} epochs")
        return True
    return False


def finish(s: Setup, state: TrainState, out: "Printer", test_fn: Callable[[], dict] | None = None,
           extra: dict | None = None) -> dict | None:
    """Test the best weights, write results.json and curves.png, print where everything is.

    `test_fn` replaces the test pass (feature extraction reads the cached test embeddings); `extra` adds to
    results.json.
    """
    # DDP keeps every rank's weights equal; a fingerprint of each rank's final weights shows it did.
    digests = s.env.all_gather_object(weights_digest(s.net.state_dict())) if s.env.enabled else None
    if not s.env.is_main:
        return None
    if digests and len(set(digests)) > 1:
        out.note(f"warning: the processes finished with different weights ({len(set(digests))} versions); "
                 f"rank 0's are saved")
    best_path = s.run_dir / "checkpoints" / "best.pt"
    last = checkpoint_state(s, state)
    save_checkpoint(last, s.run_dir / "checkpoints" / "last.pt")
    if best_path.exists():
        s.net.load_state_dict(load_checkpoint(best_path, s.device)["state_dict"])
    s.curves.submit(state.history, s.run_dir / "curves.png")  # drawn (by the helper) while the test set runs
    test = test_fn() if test_fn is not None else evaluate(s, s.curves.sharing_cores(s.test_loader), collect=True,
                                                          tta=s.cfg.tta)
    outputs_are_probs = bool(s.net.spec.kwargs.get("final_softmax"))
    rep = metrics.report(test["logits"], test["targets"], test["loss"], s.classes, outputs_are_probs)
    results = {
        **rep.to_dict("test"),
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_acc if s.val_loader is not None else None,
        "epochs_run": state.epoch,
        "train_seconds": round(state.elapsed, 2),
        "status": state.status,
        "tta": s.cfg.tta,
        **({"weights_sha1_by_rank": digests} if digests else {}),
        **(extra or {}),
    }
    atomic_write_json(results, s.run_dir / "results.json")
    s.curves.wait()
    out.finish(results)
    return results


def resolved(s: Setup) -> dict[str, Any]:
    """What the config turned into: sizes, classes, normalization, device."""
    return {
        "input_size": list(s.net.spec.input_size),
        "num_outputs": s.net.spec.num_classes,
        "single_logit": s.single_logit,
        "classes": list(s.classes),
        "dataset": s.dataset_name,
        "train_images": s.train_loader.num_samples * s.env.world_size,
        "val_images": len(s.val_loader.targets) if s.val_loader else 0,
        "test_images": len(s.test_loader.targets),
        "pipeline": s.pipeline.to_dict(),
        "augment": s.augment.describe(),
        "device": str(s.device),
        "world_size": s.env.world_size,
        "parameters": sum(p.numel() for p in s.net.parameters()),
        "steps_per_epoch": s.steps_per_epoch,
        "weights": getattr(s.net, "weights_info", None),  # where a torchvision backbone's weights came from
    }


def _interrupted(s: Setup, state: TrainState, out: "Printer"):
    from cnnlab.train.run import Run

    state.status = "interrupted"
    if state.meter is not None:  # mid-epoch: the checkpoint keeps the whole job's sums, for any world size
        m = state.meter
        m.loss_sum, m.correct, seen = s.env.all_reduce_sum([m.loss_sum, m.correct, m.seen], s.device)
        m.seen = int(seen)
    if s.env.is_main:
        save(s, state, "last")
    out.interrupted(state)
    shutdown(s.env)
    return Run(s.run_dir, model=s.net, status="interrupted")


def _append_note(s: Setup, state: TrainState) -> None:
    atomic_write_json({"status": "diverged", "epochs_run": state.epoch, "step": state.step},
                      s.run_dir / "results.json")


def _tensorboard(s: Setup):
    if not s.cfg.tensorboard or not s.env.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") from None
    writer = SummaryWriter(str(s.run_dir / "tb"))
    x, _ = next(iter(s.train_loader))
    writer.add_images("train_samples", s.pipeline.denormalize(x[:16].float().cpu()), 0)
    return writer


def _probe(s: Setup, state: TrainState) -> None:
    """Every --probe-every epochs, snapshot filters and feature maps (main process only: no collective op)."""
    if s.cfg.probe_every and state.epoch % s.cfg.probe_every == 0:
        from cnnlab.inspect.probes import record_probe

        record_probe(s, state.epoch)


# ---------------------------------------------------------------- what the user sees


class Printer:
    """Progress bars and one line per epoch; --quiet prints only the end, --json prints JSON lines."""

    def __init__(self, s: Setup):
        self.s = s
        cfg = s.cfg
        self.enabled = s.env.is_main and not cfg.quiet and not cfg.json
        self.json = s.env.is_main and cfg.json
        self.quiet = cfg.quiet

    def start(self, resumed: bool, state: TrainState) -> None:
        if not self.enabled:
            return
        s, r = self.s, resolved(self.s)
        verb = f"resuming at epoch {state.epoch + 1}" if resumed else "training"
        print(f"{verb} {s.cfg.model} ({r['parameters']:,} parameters) on {s.dataset_name}: "
              f"{r['train_images']:,} train / {r['val_images']:,} val / {r['test_images']:,} test images, "
              f"input {'x'.join(map(str, r['input_size']))}, augment {r['augment']}, {s.device}"
              + (f" x {s.env.world_size} processes, {_threads(s)}" if s.env.enabled else ""))
        print(f"run folder: {s.run_dir}")

    def bar(self, total: int, epoch: int, epochs: int, initial: int = 0) -> "_Bar":
        return _Bar(total, epoch, epochs, initial, enabled=self.enabled)

    def epoch(self, row: dict, improved: bool) -> None:
        if self.json:
            print(json.dumps({"event": "epoch", **row}), flush=True)
        if not self.enabled:
            return
        val = (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if row["val_acc"] is not None else "")
        print(f"epoch {row['epoch']:>3}/{self.s.cfg.epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.2%}{val}  lr {row['lr']:.2e}  {row['images_per_s']:,.0f} img/s  "
              f"{row['elapsed_s']:.1f} s{'  *' if improved else ''}", flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def interrupted(self, state: TrainState) -> None:
        if self.json:
            print(json.dumps({"event": "interrupted", "epoch": state.epoch, "step": state.step}), flush=True)
        if self.s.env.is_main:
            print(f"\ninterrupted at epoch {state.epoch + 1}, step {state.step}; checkpoint saved.\n"
                  f"resume with: cnnlab train --resume {self.s.run_dir}", flush=True)

    def finish(self, results: dict) -> None:
        run = self.s.run_dir
        if self.json:
            print(json.dumps({"event": "done", "run": str(run), **{k: v for k, v in results.items()
                                                                  if not isinstance(v, (list, dict))}}), flush=True)
            return
        best = (f", best epoch {results['best_epoch']} (val {results['best_val_acc']:.2%})"
                if results.get("best_val_acc") is not None else "")
        tta = f" with {results['tta']} TTA" if results.get("tta", "none") != "none" else ""
        print(f"test accuracy {results['test_acc']:.2%}{tta} (loss {results['test_loss']:.4f}){best}, "
              f"{results['train_seconds']:.1f} s of training")
        if not self.quiet:
            print(f"run: {run}\n  curves:  {run / 'curves.png'}\n  results: {run / 'results.json'}\n"
                  f"  model:   {run / 'checkpoints' / 'best.pt'}\n"
                  f"next: cnnlab eval {run}  |  cnnlab predict {run} IMAGE  |  cnnlab report {run}")


def _threads(s: Setup) -> str:
    n = torch.get_num_threads()
    why = "--threads" if s.cfg.threads else "this machine's cores / its processes; --threads to change"
    return f"{n} CPU thread{'s' if n != 1 else ''} each ({why})"


class _Bar:
    """A tqdm bar for one epoch showing loss, accuracy and images/s (tqdm adds the ETA)."""

    def __init__(self, total: int, epoch: int, epochs: int, initial: int, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                        disable=None if enabled else True, dynamic_ncols=True)
        self.last = 0.0

    def update(self, meter: EpochMeter) -> None:
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last > 0.25 and meter.seen:
            self.last = now
            self.bar.set_postfix(loss=f"{meter.loss_sum / meter.seen:.4f}", acc=f"{meter.correct / meter.seen:.1%}",
                                 img_s=f"{meter.seen / max(meter.seconds, 1e-9):,.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
