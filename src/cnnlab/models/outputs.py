"""What a classifier's outputs mean: its logits (whatever it wraps them in), probabilities, predictions, top classes.

One definition each, used by training, evaluation, prediction, explanations and the server alike.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError


def split_logits(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(class scores (N, K), auxiliary scores or None) from a model's output.

    A tensor, a tuple or list (Inception v3 in training mode returns (logits, aux_logits)), or an object with
    `.logits` (torchvision's named tuples); a single-logit model that squeezed its output gets its column back.
    """
    aux = None
    if isinstance(output, (tuple, list)):
        output, aux = output[0], (output[1] if len(output) > 1 else None)
    elif not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
        output, aux = output.logits, getattr(output, "aux_logits", None)
    if not isinstance(output, torch.Tensor):
        raise CnnlabError(f"cannot read class scores from a model output of type {type(output).__name__}; "
                          "expected a tensor of shape (N, K)")
    if output.dim() == 1:
        output = output[:, None]
    if output.dim() != 2:
        raise CnnlabError(f"the model returned a tensor of shape {tuple(output.shape)}; expected class scores (N, K)")
    return output, aux


class LogitsOnly(nn.Module):
    """The model with its output reduced to the class scores tensor (Inception v3 may return a named tuple): what
    an exporter traces, and what a backend runs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_logits(self.model(x))[0]


def probabilities(logits: torch.Tensor, outputs_are_probs: bool = False) -> torch.Tensor:
    """Class probabilities (N, K): softmax, or [1 - p, p] for a single logit."""
    if logits.shape[1] == 1:
        p = logits[:, 0] if outputs_are_probs else torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return logits if outputs_are_probs else F.softmax(logits.float(), dim=1)


def predictions(logits: torch.Tensor, outputs_are_probs: bool = False) -> torch.Tensor:
    """Predicted class per row: argmax, or (a single output) logit > 0 / probability > 0.5."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > (0.5 if outputs_are_probs else 0.0)).long()
    return logits.argmax(dim=1)


class TopClass(NamedTuple):
    """One of the most probable classes of an image."""

    index: int
    name: str
    probability: float


def top_classes(probs: torch.Tensor, classes: Sequence[str], k: int) -> list[TopClass]:
    """The k most probable classes of one image's probabilities (K,), most probable first (ties: lower index)."""
    k = max(1, min(int(k), len(classes), probs.shape[-1]))
    order = probs.float().argsort(descending=True, stable=True)[:k].tolist()
    return [TopClass(i, classes[i], float(probs[i])) for i in order]
