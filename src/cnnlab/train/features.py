"""Feature extraction: embed every split once with the frozen backbone (cached on disk), then fit a linear head.

`cnnlab train --model resnet18 --weights DEFAULT --feature-extraction` spends its time in one forward pass over
the images, and none on a second run with the same weights, data and preprocessing: the embeddings are cached
under `<cnnlab cache>/features/`. The head is then fitted on the embeddings in seconds, with the run's optimizer,
learning rate, schedule, epochs and batch size. The run folder is a normal one: its checkpoints hold the whole
model (backbone + fitted head), so eval, predict, explain, report and export work on it unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnnlab._io import atomic_save, atomic_write_json, atomic_write_text
from cnnlab.data import BatchLoader
from cnnlab.data.augment import Augment
from cnnlab.data.paths import user_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.models.backbones import BACKBONES, embed, freeze_backbone, head_names
from cnnlab.train import metrics
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.train.loop import Printer, TrainState, autocast, checkpoint_state, finish, loss_fn, resolved
from cnnlab.train.schedule import lr_at
from cnnlab.train.setup import Setup, build_optimizer, environment

CACHE_FORMAT = 1  # bump when the cached layout or the meaning of an embedding changes


def feature_cache_dir() -> Path:
    """Where embeddings are cached: `<cnnlab cache>/features` (see cnnlab.data.paths.user_cache_dir)."""
    return user_cache_dir() / "features"


@dataclass
class Features:
    """One split's embeddings (N, D) and labels, on the run's device."""

    x: torch.Tensor
    y: torch.Tensor
    path: Path  # its cache file
    from_cache: bool
    seconds: float  # spent embedding (or reading the cache)


# ---------------------------------------------------------------- embeddings, cached


def feature_key(s: Setup, data: Any) -> str:
    """A hash of everything an embedding depends on: architecture, backbone weights, preprocessing, images."""
    h = hashlib.sha256(f"cnnlab-features-{CACHE_FORMAT}".encode())
    spec = s.net.spec
    kwargs = {k: v for k, v in spec.kwargs.items() if k != "weights"}  # the weights are hashed by value below
    h.update(json.dumps([spec.name, list(spec.input_size), kwargs, s.pipeline.to_dict(), s.cfg.amp],
                        sort_keys=True, default=str).encode())
    heads = tuple(n + "." for n in head_names(s.net))
    for name, t in sorted(s.net.state_dict().items()):
        if not name.startswith(heads):  # the head is not part of the embedding (and differs per run)
            _update(h, name, t)
    _update(h, "targets", data.targets)
    if hasattr(data, "images"):
        _update(h, "images", data.images)
    else:  # streamed from disk: the files' paths, sizes and modification times stand for their contents
        for f in data.files:
            st = Path(f).stat()
            h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _update(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, whatever the dtype (0-d counters too)


@torch.no_grad()  # not inference_mode: the head is then trained on these tensors, which autograd must accept
def embed_split(s: Setup, data: Any, label: str, out: Printer) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (N, D) float32 and labels of a split: one pass of the frozen backbone, no augmentation."""
    # The training batch size: it fits the device when training, so an inference pass at it fits too.
    loader = BatchLoader(data, s.cfg.batch_size, s.pipeline, device=s.device, channels_last=s.cfg.channels_last,
                         num_workers=s.cfg.num_workers)
    xs, ys = [], []
    bar = tqdm(total=len(loader), desc=f"embedding {label}", unit="batch", leave=False,
               disable=None if out.enabled else True, dynamic_ncols=True)
    for x, y in loader:
        with autocast(s):
            xs.append(embed(s.net, x).float().flatten(1))
        ys.append(y)
        bar.update(1)
    bar.close()
    if not xs:
        raise CnnlabError(f"the {label} split has no images to embed")
    return torch.cat(xs), torch.cat(ys)


def split_features(s: Setup, data: Any, label: str, out: Printer) -> Features:
    """A split's embeddings from the cache, or computed and cached (atomically) for the next run."""
    start = time.perf_counter()
    path = feature_cache_dir() / f"{s.cfg.model}-{label}-{feature_key(s, data)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location=s.device, weights_only=True)
            out.note(f"{label}: {len(saved['targets']):,} embeddings from the cache {path}")
            return Features(saved["features"], saved["targets"], path, True, time.perf_counter() - start)
        except Exception:  # a damaged cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
    x, y = embed_split(s, data, label, out)
    seconds = time.perf_counter() - start
    try:
        atomic_save({"format": CACHE_FORMAT, "features": x.cpu(), "targets": y.cpu()}, path)
    except OSError as exc:  # a read-only or full cache disk costs the next run time, not this one its result
        out.note(f"could not cache the embeddings in {path}: {exc.strerror or exc}")
    out.note(f"{label}: embedded {len(y):,} images ({x.shape[1]} features each) in {seconds:.1f} s, cached in {path}")
    return Features(x, y, path, False, seconds)


# ---------------------------------------------------------------- the linear head


class StandardizedHead(nn.Module):
    """A linear layer on standardized embeddings; `fold_into` writes it as one plain Linear on raw embeddings."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, outputs: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(len(mean), outputs)
        # Zeros: logistic regression is convex, so the start only needs to be deterministic.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)

    @torch.no_grad()
    def fold_into(self, head: nn.Linear) -> None:
        """W((x - m) / s) + b = (W / s) x + (b - W m / s): the same function, with no extra layer in the model."""
        w = self.linear.weight / self.std
        head.weight.copy_(w)
        head.bias.copy_(self.linear.bias - w @ self.mean)


def evaluate_head(head: nn.Module, f: Features, single_logit: bool) -> dict[str, Any]:
    """Loss, accuracy and logits of a head on a split's embeddings (what `evaluate` gives for images)."""
    with torch.no_grad():
        logits = head(f.x).float()
        loss = loss_fn(logits, f.y, single_logit, 0.0).item()
    acc = (metrics.predictions(logits) == f.y).float().mean().item()
    return {"loss": loss, "acc": acc, "n": len(f.y), "logits": logits.cpu(), "targets": f.y.cpu()}


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Run torch on one CPU thread: a linear head's tiny matrices gain nothing from more, and on a busy machine
    waiting for the other threads made each step about 60 times slower (2 ms against 120 ms, measured)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_head(s: Setup, state: TrainState, feats: dict[str, Features], out: Printer) -> tuple[dict, dict]:
    """Mini-batch training of the head on the train embeddings; (last, best) head states."""
    with one_cpu_thread(s.device):
        return _fit_head(s, state, feats, out)


def _fit_head(s: Setup, state: TrainState, feats: dict[str, Features], out: Printer) -> tuple[dict, dict]:
    cfg, train, val = s.cfg, feats["train"], feats.get("val")
    # Standardized embeddings make one learning rate work for every backbone, pretrained or not.
    std = train.x.std(0, correction=0).clamp_min(1e-6)  # a constant feature is left as it is, not divided by 0
    head = StandardizedHead(train.x.mean(0), std, s.net.spec.num_classes).to(s.device)
    opt = build_optimizer(cfg, head)
    n = len(train.y)
    g = torch.Generator().manual_seed(cfg.seed)
    best, best_loss = {k: v.clone() for k, v in head.state_dict().items()}, math.inf
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0, loss_sum, correct = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(n, generator=g).to(s.device).split(cfg.batch_size):
            lr = lr_at(state.step, base_lr=cfg.lr, schedule=cfg.schedule, total_steps=s.total_steps,
                       warmup_steps=round(cfg.warmup_epochs * s.steps_per_epoch),
                       step_size=max(1, round(cfg.step_epochs * s.steps_per_epoch)), gamma=cfg.gamma)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = head(train.x[idx])
            loss = loss_fn(logits, train.y[idx], s.single_logit, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.step += 1
            loss_sum += loss.item() * len(idx)
            correct += (metrics.predictions(logits.detach()) == train.y[idx]).sum().item()
        seconds = time.perf_counter() - t0
        v = evaluate_head(head, val, s.single_logit) if val is not None else None
        state.epoch = epoch + 1
        state.elapsed = time.perf_counter() - start
        row = {"epoch": state.epoch, "train_loss": loss_sum / n, "train_acc": correct / n,
               "val_loss": v["loss"] if v else None, "val_acc": v["acc"] if v else None, "lr": lr,
               "images_per_s": n / max(seconds, 1e-9), "elapsed_s": round(state.elapsed, 3)}
        state.history.append(row)
        score, loss = (row["val_acc"], row["val_loss"]) if v else (row["train_acc"], row["train_loss"])
        # On a tie in accuracy, the lower loss: a small validation split reaches 100% long before the head
        # has converged, and the first epoch to get there would be kept.
        improved = (score, -loss) > (state.best_acc, -best_loss)
        if improved:
            state.best_acc, state.best_epoch, state.bad_epochs, best_loss = score, state.epoch, 0, loss
            best = {k: t.clone() for k, t in head.state_dict().items()}
        else:
            state.bad_epochs += 1
        out.epoch(row, improved)
    last = {k: t.clone() for k, t in head.state_dict().items()}
    return last, best


# ---------------------------------------------------------------- the run


def fit_features(s: Setup) -> "Run":
    """Embed the splits (cached), fit the head on the embeddings, write a normal run folder; its Run."""
    from cnnlab.train.run import Run

    cfg = s.cfg
    if not hasattr(s.net, "head_names"):
        raise CnnlabError(f"--feature-extraction needs a torchvision backbone with a replaceable head "
                          f"({', '.join(BACKBONES)}); {cfg.model} has none: train it normally")
    if s.env.enabled:
        raise CnnlabError("--feature-extraction runs in one process (fitting the head takes seconds); drop --nproc")
    freeze_backbone(s.net, True)
    s.net.eval()  # embeddings come from the inference-mode network: BatchNorm statistics, no dropout
    s.augment = Augment()  # each image is embedded once, so there is nothing to augment
    s.steps_per_epoch = math.ceil(s.train_loader.num_samples / cfg.batch_size)
    out, state = Printer(s), TrainState()
    atomic_write_json({"config": cfg.to_dict(), "resolved": resolved(s), "environment": environment()},
                      s.run_dir / "config.json")
    out.start(False, state)

    datas = {"train": s.train_loader.data, "val": s.val_loader.data if s.val_loader else None,
             "test": s.test_loader.data}
    feats = {k: split_features(s, d, k, out) for k, d in datas.items() if d is not None}
    last, best = fit_head(s, state, feats, out)
    atomic_write_text("".join(json.dumps(row) + "\n" for row in state.history), s.run_dir / "metrics.jsonl")

    head = s.net.get_submodule(head_names(s.net)[0])
    scratch = StandardizedHead(torch.zeros(head.in_features), torch.ones(head.in_features), head.out_features)
    scratch.to(s.device).load_state_dict(best)  # mean and std are buffers: they come with the state
    scratch.fold_into(head)
    save_checkpoint(checkpoint_state(s, state), s.run_dir / "checkpoints" / "best.pt")
    scratch.load_state_dict(last)
    scratch.fold_into(head)  # finish() writes last.pt from the model as it is, then reloads best.pt to test
    state.status = "completed"
    extra = {
        "feature_extraction": {
            "embed_seconds": round(sum(f.seconds for f in feats.values()), 3),
            "fit_seconds": round(state.elapsed, 3),
            "features": int(feats["train"].x.shape[1]),
            "cache": {k: {"file": str(f.path), "hit": f.from_cache} for k, f in feats.items()},
        }
    }
    results = finish(s, state, out, test_fn=lambda: evaluate_head(head, feats["test"], s.single_logit), extra=extra)
    return Run(s.run_dir, model=s.net, results=results, status=state.status)
