"""Evaluating a saved run on any split (`cnnlab eval`, the report): metrics, per-image losses, and figures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnlab.data import BatchLoader, get_dataset, take
from cnnlab.errors import CnnlabError
from cnnlab.models.outputs import probabilities
from cnnlab.training import metrics
from cnnlab.training.config import val_size_arg
from cnnlab.training.inference import Outputs, evaluate
from cnnlab.training.loss import Criterion
from cnnlab.training.run import Run
from cnnlab.training.tta import check_tta

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class EvalResult:
    """One evaluation of a saved run: the metrics report plus what the figures need."""

    report: metrics.Report
    dataset: str
    outputs: Outputs
    data: object  # the split, to fetch images for the mistakes gallery
    run: Run
    tta: str = "none"

    @property
    def n(self) -> int:
        return self.outputs.n

    @property
    def logits(self) -> torch.Tensor:
        return self.outputs.logits

    @property
    def targets(self) -> torch.Tensor:
        return self.outputs.targets

    @property
    def losses(self) -> torch.Tensor:
        return self.outputs.losses

    def worst(self, n: int) -> torch.Tensor:
        """Indices of the n highest-loss images."""
        return self.losses.argsort(descending=True)[:n]

    @property
    def wrong(self) -> torch.Tensor:
        """Indices of the misclassified images, highest loss first."""
        pred = probabilities(self.logits, self.run.outputs_are_probs).argmax(1)
        wrong = (pred != self.targets).nonzero().flatten()
        return wrong[self.losses[wrong].argsort(descending=True)]

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Images at `idx` as the model sees them (size, channels), in [0, 1] for display."""
        pipe = dataclasses.replace(self.run.pipeline, source_channels=self.data.info.channels)
        return pipe.convert(take(self.data, idx)[0]).float() / 255.0

    def confusion_figure(self, normalized: bool = False) -> Figure:
        """The confusion matrix: rows the true class, columns the predicted one (row fractions if `normalized`)."""
        from cnnlab.viz import plot_confusion

        return plot_confusion(self.report.confusion.numpy(), list(self.report.classes), normalize=normalized)

    def mistakes_figure(self, n: int = 24) -> Figure | None:
        """The n misclassified images with the highest loss, titled true / predicted (a figure saying so when there
        are no mistakes); None when n is 0."""
        from cnnlab.viz import plot_mistakes

        if n <= 0:
            return None
        wrong = self.wrong
        idx = wrong[:n]
        probs = probabilities(self.logits[idx], self.run.outputs_are_probs)
        title = (f"{len(idx)} of the {len(wrong):,} misclassified images ({len(wrong) / max(self.n, 1):.1%} of "
                 f"{self.n:,}), highest loss first" if len(wrong) else f"no mistakes in {self.n:,} images")
        images = self.images(idx) if len(idx) else []
        return plot_mistakes(images, self.targets[idx].tolist(), probs.argmax(1).tolist(),
                             probs.max(1).values.tolist(), list(self.report.classes), title=title)

    def save_figures(self, out: Path, mistakes: int = 24, normalized: bool = False) -> dict[str, Path]:
        """confusion.png, and mistakes.png: the misclassified images with the highest loss (only mistakes), in `out`."""
        from cnnlab.viz import save_figure

        out = Path(out)
        paths = {"confusion matrix": save_figure(self.confusion_figure(normalized), out / "confusion.png")}
        gallery = self.mistakes_figure(mistakes)
        if gallery is not None:
            paths["mistakes"] = save_figure(gallery, out / "mistakes.png")
        return paths


def evaluate_run(run: Run, dataset: str | None = None, split: str = "test", data_dir: str | None = None,
                 batch_size: int = 1000, tta: str | None = None) -> EvalResult:
    """Evaluate a run's model on a split of its own (or another, same-classed) dataset.

    `tta`: test-time augmentation ("none" or "flip"); by default the one the run was tested with.
    """
    cfg = run.config
    name = dataset or cfg["dataset"]
    data = get_dataset(name, split, data_dir or cfg.get("data_dir"), val_size=val_size_arg(cfg.get("val_size", -1)),
                       image_size=tuple(run.input_size[1:]))
    check_same_kind(data, name, run)
    tta = check_tta(cfg.get("tta", "none") if tta is None else tta, data.info.flip_ok, data.info.name)
    pipe = dataclasses.replace(run.pipeline, source_channels=data.info.channels)
    forward = run.forward(images=len(data) * (2 if tta == "flip" else 1))
    outputs = evaluate(run.model, BatchLoader(data, batch_size, pipe), Criterion(run.single_logit), tta, forward)
    rep = metrics.report(outputs.logits, outputs.targets, outputs.loss, run.classes, run.outputs_are_probs)
    return EvalResult(rep, name, outputs, data, run, tta)


def check_same_kind(data, name: str, run: Run) -> None:
    """Refuse data the model was not trained for: other classes, or other channels, than its checkpoint records."""
    if tuple(data.classes) != tuple(run.classes):
        def shown(classes) -> str:
            return ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")

        raise CnnlabError(f"{name}'s classes ({len(data.classes)}: {shown(data.classes)}) are not the ones the model "
                          f"was trained on ({len(run.classes)}: {shown(run.classes)}); evaluate it on its own "
                          f"dataset ({run.checkpoint.get('dataset', '?')}) or one with the same classes")
    trained = run.pipeline.source_channels
    if data.info.channels != trained:
        raise CnnlabError(f"{name} has {data.info.channels}-channel images but the model was trained on "
                          f"{trained}-channel ones ({run.checkpoint.get('dataset', '?')}); evaluate it on data like "
                          f"its own")
