"""The loss of a run: one definition, used by the training step, validation, the final test and `cnnlab eval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.models.outputs import split_logits

AUX_WEIGHT = 0.4  # Inception v3's auxiliary classifier: Szegedy et al. 2016 weigh it 0.3-0.4; torchvision 0.4


@dataclass(frozen=True)
class Criterion:
    """Cross-entropy on the model's outputs, or binary cross-entropy on a single logit.

    The training step adds label smoothing and, for Inception v3, 0.4 x the auxiliary head's loss; evaluation
    reports the same function without either, per image. A model that ends in softmax is scored as it was trained
    (cross-entropy of its outputs), so `cnnlab eval` and the run's own figures agree.
    """

    single_logit: bool = False
    label_smoothing: float = 0.0

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each row (N,) in float32, as evaluation reports it (no label smoothing)."""
        return self._loss(logits, targets, 0.0, "none")

    def __call__(self, output: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the training loss, the main logits) of a model output."""
        logits, aux = split_logits(output)
        loss = self._loss(logits, targets, self.label_smoothing, "mean")
        if aux is not None:
            loss = loss + AUX_WEIGHT * self._loss(aux, targets, self.label_smoothing, "mean")
        return loss, logits

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, smoothing: float, reduction: str) -> torch.Tensor:
        if self.single_logit:
            target = targets.float() * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), target, reduction=reduction)
        return F.cross_entropy(logits.float(), targets, label_smoothing=smoothing, reduction=reduction)
