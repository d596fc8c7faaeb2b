"""Feature extraction: embed every split once with the frozen backbone (cached on disk), then fit a linear head.

`cnnlab train --model resnet18 --weights DEFAULT --feature-extraction` spends its time in one forward pass over
the images, and none on a second run with the same weights, data and preprocessing: the embeddings are cached
under `<cnnlab cache>/features/`. `embed_splits` gives `setup.build` the splits as loaders of embeddings and a
linear head as the trained network, which then goes through the one training loop (`fit`) with the run's
optimizer, learning rate, schedule, epochs and batch size. Its checkpoints hold the whole model (the backbone with
the fitted head folded into its own), so eval, predict, explain, report and export work on it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from cnnlab.data import BatchLoader, DatasetInfo, ImageData, ImageDataset, Pipeline
from cnnlab.data.paths import user_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_save
from cnnlab.models.backbones import freeze_backbone, head_names, headless
from cnnlab.models.weights import update_digest
from cnnlab.training.backends import Forward
from cnnlab.training.config import TrainConfig
from cnnlab.training.console import Printer

EMBED_BATCH = 32  # images decoded and embedded together
CACHE_FORMAT = 2  # bump when the cached layout or the meaning of an embedding changes


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


def feature_key(net: nn.Module, pipeline: Pipeline, amp: str, data: ImageDataset) -> str:
    """A hash of everything an embedding depends on: architecture, backbone weights, preprocessing, images."""
    h = hashlib.sha256(f"cnnlab-features-{CACHE_FORMAT}".encode())
    kwargs = {k: v for k, v in net.spec.kwargs.items() if k != "weights"}  # the weights are hashed by value below
    h.update(json.dumps([net.spec.name, list(net.spec.input_size), kwargs, pipeline.to_dict(), amp],
                        sort_keys=True, default=str).encode())
    heads = tuple(n + "." for n in head_names(net))
    for name, t in sorted(net.state_dict().items()):
        if not name.startswith(heads):  # the head is not part of the embedding (and differs per run)
            update_digest(h, name, t)
    update_digest(h, "targets", data.targets)
    if data.images is not None:
        update_digest(h, "images", data.images)
    else:  # streamed from disk: the files' paths, sizes and modification times stand for their contents
        for f in data.files:
            st = Path(f).stat()
            h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def embed_split(cfg: TrainConfig, forward: Forward, data: ImageDataset, pipeline: Pipeline, device: torch.device,
                label: str, out: Printer) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(embeddings (N, D) float32, labels, the backend that ran) of a split: one pass of the frozen backbone
    (`forward`, on the fastest backend that gives the same answer: training/backends.py) over the unaugmented
    images, written into one tensor as they come."""
    # Batches of EMBED_BATCH images at most: ONNX Runtime runs a few at a time anyway (backends.CHUNK_PIXELS), and
    # larger batches decoded ahead are memory held for nothing.
    loader = BatchLoader(data, min(cfg.batch_size, EMBED_BATCH), pipeline, device=device, num_workers=cfg.num_workers)
    xs: torch.Tensor | None = None
    ys = torch.empty(len(data), dtype=torch.long)
    n = 0
    for x, y in tqdm(loader, desc=f"embedding {label}", unit="batch", leave=False,
                     disable=True if not out.enabled else None, dynamic_ncols=True):
        e = forward(x).flatten(1)
        if xs is None:
            xs = torch.empty(len(data), e.shape[1])
        xs[n: n + len(e)], ys[n: n + len(e)] = e, y.cpu()
        n += len(e)  # a streamed file that no longer decodes was left out of its batch
    if xs is None or not n:
        raise CnnlabError(f"the {label} split has no images to embed")
    return xs[:n].to(device), ys[:n].to(device), forward.backend or "torch"


def split_features(cfg: TrainConfig, net: nn.Module, forward: Forward, data: ImageDataset, pipeline: Pipeline,
                   device: torch.device, label: str, out: Printer) -> Features:
    """A split's embeddings from the cache, or computed and cached (atomically) for the next run."""
    start = time.perf_counter()
    path = feature_cache_dir() / f"{cfg.model}-{label}-{feature_key(net, pipeline, cfg.amp, data)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
            out.note(f"{label}: {len(saved['targets']):,} embeddings from the cache {path}")
            return Features(saved["features"], saved["targets"], path, True, time.perf_counter() - start)
        except Exception:  # a damaged cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
    x, y, backend = embed_split(cfg, forward, data, pipeline, device, label, out)
    seconds = time.perf_counter() - start
    try:
        atomic_save({"format": CACHE_FORMAT, "features": x.cpu(), "targets": y.cpu()}, path)
    except OSError as exc:  # a read-only or full cache disk costs the next run time, not this one its result
        out.note(f"could not cache the embeddings in {path}: {exc.strerror or exc}")
    out.note(f"{label}: embedded {len(y):,} images ({x.shape[1]} features each) in {seconds:.1f} s ({backend}), "
             f"cached in {path}")
    return Features(x, y, path, False, seconds)


# ---------------------------------------------------------------- the linear head


class StandardizedHead(nn.Module):
    """A linear layer on standardized embeddings (one learning rate then suits every backbone), tied to the
    backbone's own head: `fold()` writes it there as one plain Linear on raw embeddings, `unfold()` reads it back."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, target: nn.Linear):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(len(mean), target.out_features, device=mean.device)
        # Zeros: logistic regression is convex, so the start only needs to be deterministic.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.target = [target]  # in a list: the backbone's head is not a submodule (nor a parameter) of this one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)

    @torch.no_grad()
    def fold(self) -> None:
        """W((x - m) / s) + b = (W / s) x + (b - W m / s): the same function, as the backbone's plain head."""
        head, w = self.target[0], self.linear.weight / self.std
        head.weight.copy_(w)
        head.bias.copy_(self.linear.bias - w @ self.mean)

    @torch.no_grad()
    def unfold(self) -> None:
        """The inverse of fold(): this layer's weights from the backbone's head."""
        head = self.target[0]
        self.linear.weight.copy_(head.weight * self.std)
        self.linear.bias.copy_(head.bias + head.weight @ self.mean)


# ---------------------------------------------------------------- the splits as embeddings


def embed_splits(cfg: TrainConfig, net: nn.Module, splits: dict[str, BatchLoader | None], pipeline: Pipeline,
                 device: torch.device, out: Printer) -> tuple[dict[str, BatchLoader | None], nn.Module, dict]:
    """(the splits as loaders of their embeddings, the standardized linear head trained on them, what was done:
    seconds, features, cache files) for a backbone frozen in inference mode."""
    freeze_backbone(net, True)
    net.eval()  # embeddings come from the inference-mode network: BatchNorm statistics, no dropout
    present = {k: loader.data for k, loader in splits.items() if loader is not None}
    # One backend for every split, chosen for all their images (one export, one ONNX Runtime session).
    forward = Forward(headless(net), device, images=sum(len(d) for d in present.values()), amp=cfg.amp,
                      say=out.note)
    feats = {k: split_features(cfg, net, forward, data, pipeline, device, k, out) for k, data in present.items()}
    train = feats["train"]
    # Standardized embeddings; a constant feature is left as it is, not divided by 0.
    head = StandardizedHead(train.x.mean(0), train.x.std(0, correction=0).clamp_min(1e-6),
                            net.get_submodule(head_names(net)[0]))
    info = splits["train"].data.info
    loaders = {
        "train": BatchLoader(_embedded(train, info, "train"), cfg.batch_size, None, shuffle=True, seed=cfg.seed,
                             device=device),
        "val": BatchLoader(_embedded(feats["val"], info, "val"), cfg.eval_batch_size, None,
                           device=device) if "val" in feats else None,
        "test": BatchLoader(_embedded(feats["test"], info, "test"), cfg.eval_batch_size, None, device=device),
    }
    report = {"embed_seconds": round(sum(f.seconds for f in feats.values()), 3), "features": int(train.x.shape[1]),
              "cache": {k: {"file": str(f.path), "hit": f.from_cache} for k, f in feats.items()}}
    return loaders, head, report


def _embedded(f: Features, info: DatasetInfo, split: str) -> ImageData:
    """A split of embeddings (N, D) held in memory, batched as stored (a BatchLoader without pipeline)."""
    return ImageData(f.x, f.y, info, split)
