"""The loss of a run: one definition, used by the training step, validation, the final test and `cnnlab eval`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.models.outputs import split_logits
from cnnlab.training.metrics import imbalance, unbalanced

AUX_WEIGHT = 0.4  # Inception v3's auxiliary classifier: Szegedy et al. 2016 weigh it 0.3-0.4; torchvision 0.4


@dataclass(frozen=True)
class Criterion:
    """Cross-entropy on the model's outputs, or binary cross-entropy on a single logit.

    The training step adds label smoothing, the class weights (each image's loss times its class's weight, the
    weighted mean over the batch, as `F.cross_entropy(weight=...)` does) and, for Inception v3, 0.4 x the auxiliary
    head's loss; evaluation reports the same function without any of them, per image: the validation and test
    losses stay the plain per-image cross-entropy, comparable between runs with and without weights (balanced
    accuracy is the figure that accounts for unbalanced classes). A model that ends in softmax is scored as it was
    trained (cross-entropy of its outputs), so `cnnlab eval` and the run's own figures agree.
    """

    single_logit: bool = False
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None  # one per class, or None: every image counts once
    weights_why: str = field(default="none", compare=False)  # why it weighs the classes so (config.json says it)

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each row (N,) in float32, as evaluation reports it (no label smoothing, no class weights)."""
        return self._loss(logits, targets, 0.0, "none")

    def __call__(self, output: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the training loss, the main logits) of a model output."""
        logits, aux = split_logits(output)
        loss = self._train_loss(logits, targets)
        if aux is not None:
            loss = loss + AUX_WEIGHT * self._train_loss(aux, targets)
        return loss, logits

    def _train_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:  # torch's own mean: unweighted runs stay bit for bit what they were
            return self._loss(logits, targets, self.label_smoothing, "mean")
        losses = self._loss(logits, targets, self.label_smoothing, "none")
        w = torch.tensor(self.class_weights, dtype=losses.dtype, device=losses.device)[targets]
        return (losses * w).sum() / w.sum()

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, smoothing: float, reduction: str) -> torch.Tensor:
        if self.single_logit:
            target = targets.float() * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), target, reduction=reduction)
        return F.cross_entropy(logits.float(), targets, label_smoothing=smoothing, reduction=reduction)


def balanced_weights(counts: list[int]) -> tuple[float, ...]:
    """scikit-learn's "balanced" class weights n / (k * count): every class then weighs as much in the loss as if
    the classes were equally frequent (a class without images gets 0: it never occurs in a batch anyway)."""
    n, k = sum(counts), len(counts)
    return tuple(n / (k * c) if c else 0.0 for c in counts)


def class_weights(setting: str, counts: list[int]) -> tuple[tuple[float, ...] | None, str]:
    """(weights or None, why) for --class-weights from the training split's class counts.

    auto weighs the classes only when the largest has at least IMBALANCE_RATIO (1.5) times the images of the
    smallest: below that the weights stay within about 20% of 1, too little to change what is learned, and the
    built-in datasets (MNIST's classes differ by 1.24x at most, the others not at all) keep their runs bit for bit.
    """
    if setting == "none" or setting == "auto" and not unbalanced(counts):
        return None, "none" if setting == "none" else "auto: classes balanced"
    ratio = imbalance(counts)
    why = "--class-weights balanced" if setting == "balanced" else \
        f"auto: the largest class has {ratio:.1f}x the training images of the smallest; --class-weights none to train " \
        f"unweighted"
    return balanced_weights(counts), why
