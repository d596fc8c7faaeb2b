"""The one evaluation core: a model over a loader (with test-time augmentation) -> logits, labels, per-image losses.

Validation during training, the final test, `cnnlab eval`, the report and every prediction go through
`model_logits`/`evaluate`, in float32 on the saved weights, so a run's reported accuracy is the accuracy
`cnnlab eval` finds for the same checkpoint, to the digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from cnnlab.inspect.layers import model_device, restore_modes, save_modes
from cnnlab.models.outputs import predictions, split_logits
from cnnlab.training.loss import Criterion
from cnnlab.training.tta import with_tta


@dataclass
class Outputs:
    """A model's outputs over a split: logits (N, K) and per-image losses in float32, targets (N,), on the CPU."""

    logits: torch.Tensor
    targets: torch.Tensor
    losses: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def loss(self) -> float:
        return self.losses.mean().item() if self.n else 0.0

    def accuracy(self, outputs_are_probs: bool = False) -> float:
        if not self.n:
            return 0.0
        return (predictions(self.logits, outputs_are_probs) == self.targets).float().mean().item()


@torch.inference_mode()
def model_logits(model: nn.Module, x: torch.Tensor, tta: str = "none",
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class scores (N, K), float32 on the CPU, for a normalized batch; `tta="flip"` averages in the mirror image's.
    `forward` (a backends.Forward over the model's class scores) runs the model where given."""
    x = x.to(model_device(model))
    run = forward or (lambda batch: split_logits(model(batch))[0].float())
    return with_tta(run, x, tta).cpu()


def evaluate(model: nn.Module, loader: Iterable, criterion: Criterion, tta: str = "none",
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Outputs:
    """Run `model` (in eval mode; its modes restored after) over every batch of `loader`, through `forward` where
    given (a frozen model's fastest backend: training/backends.py)."""
    saved = save_modes(model)
    model.eval()
    logits, targets = [], []
    try:
        for x, y in loader:
            logits.append(model_logits(model, x, tta, forward))
            targets.append(y.cpu())
    finally:
        restore_modes(saved)
    if not logits:
        return Outputs(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    all_logits, all_targets = torch.cat(logits), torch.cat(targets)
    return Outputs(all_logits, all_targets, criterion.per_image(all_logits, all_targets))
