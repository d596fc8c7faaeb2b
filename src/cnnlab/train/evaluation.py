"""Evaluating a saved run on any split: metrics, per-image losses, and the figures `cnnlab eval` writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data import BatchLoader, get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.train import metrics
from cnnlab.train.run import Run
from cnnlab.train.tta import check_tta, with_tta


@dataclass
class EvalResult:
    """One evaluation pass: the metrics report plus what the figures need."""

    report: metrics.Report
    dataset: str
    n: int
    losses: torch.Tensor  # per image
    logits: torch.Tensor
    targets: torch.Tensor
    data: object  # the split, to fetch images for the mistakes gallery
    run: Run
    tta: str = "none"

    def worst(self, n: int) -> torch.Tensor:
        """Indices of the n highest-loss images."""
        return self.losses.argsort(descending=True)[:n]

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Images at `idx` as the model sees them (size, channels), in [0, 1] for display."""
        pipe = dataclasses.replace(self.run.pipeline, source_channels=self.data.info.channels)
        if hasattr(self.data, "images"):
            raw = self.data.images[idx]
        else:
            raw = torch.stack([self.data[int(i)][0] for i in idx])
        return pipe.convert(raw).float() / 255.0

    def save_figures(self, out: Path, mistakes: int = 24, normalized: bool = False) -> dict[str, Path]:
        """confusion.png and mistakes.png in `out`."""
        from cnnlab.viz import plot_confusion, plot_mistakes, save_figure

        out = Path(out)
        paths = {"confusion matrix": save_figure(
            plot_confusion(self.report.confusion.numpy(), list(self.report.classes), normalize=normalized),
            out / "confusion.png")}
        idx = self.worst(mistakes)
        if len(idx):
            probs = metrics.probabilities(self.logits[idx], self.run.outputs_are_probs)
            pred = probs.argmax(1)
            paths["mistakes"] = save_figure(
                plot_mistakes(self.images(idx), self.targets[idx].tolist(), pred.tolist(),
                              probs.max(1).values.tolist(), list(self.report.classes)),
                out / "mistakes.png")
        return paths


@torch.inference_mode()
def evaluate_run(run: Run, dataset: str | None = None, split: str = "test", data_dir: str | None = None,
                 batch_size: int = 1000, tta: str | None = None) -> EvalResult:
    """Evaluate a run's model on a split of its own (or another, same-classed) dataset.

    `tta`: test-time augmentation ("none" or "flip"); by default the one the run was tested with.
    """
    cfg = run.config
    name = dataset or cfg["dataset"]
    val_size = cfg.get("val_size", -1)
    val_size = None if val_size is None or val_size < 0 else (val_size if 0 < val_size < 1 else int(val_size))
    data = get_dataset(name, split, data_dir or cfg.get("data_dir"), val_size=val_size,
                       image_size=tuple(run.input_size[1:]))
    if len(data.classes) != len(run.classes):
        raise CnnlabError(f"{name} has {len(data.classes)} classes but the model was trained on {len(run.classes)}")
    tta = check_tta(cfg.get("tta", "none") if tta is None else tta, data.info.flip_ok, data.info.name)
    pipe = dataclasses.replace(run.pipeline, source_channels=data.info.channels)
    loader = BatchLoader(data, batch_size, pipe)
    all_logits, all_targets = [], []
    for x, y in loader:
        all_logits.append(with_tta(run.logits, x, tta))
        all_targets.append(y.cpu())
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    if logits.shape[1] == 1:
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], targets.float(), reduction="none")
    elif run.outputs_are_probs:
        losses = F.nll_loss(torch.log(logits.clamp_min(1e-12)), targets, reduction="none")
    else:
        losses = F.cross_entropy(logits, targets, reduction="none")
    rep = metrics.report(logits, targets, losses.mean().item(), run.classes, run.outputs_are_probs)
    return EvalResult(rep, name, len(targets), losses, logits, targets, data, run, tta)
