"""One image explained, as tensors: its class probabilities, the class explained, feature maps, Grad-CAM, saliency.

`cnnlab explain` draws it as PNG files and the server sends it as JSON; both choose the class and the layers here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.features import FeatureExtractor, Features
from cnnlab.inspect.gradcam import GradCAM
from cnnlab.inspect.layers import model_device, restore_modes, save_modes
from cnnlab.inspect.saliency import saliency
from cnnlab.models.outputs import probabilities, split_logits


@dataclass
class ImageExplanation:
    """What a model does with one image (tensors on the CPU)."""

    probs: torch.Tensor  # (K,) class probabilities
    target: int  # the class explained: the prediction, or the one asked for
    features: Features  # outputs of the chosen layers (every conv, activation and pool layer by default)
    heatmap: torch.Tensor | None = None  # Grad-CAM (H, W) in [0, 1] for `target`; None without a spatial layer
    cam_layer: str | None = None
    saliency: torch.Tensor | None = None  # |d score / d input| (H, W) in [0, 1], when asked for
    notes: list[str] = field(default_factory=list)


def explained_class(probs: torch.Tensor, target: int | None, num_outputs: int) -> tuple[int, int]:
    """(class explained, index of the output whose score is explained).

    The prediction unless `target` is given. A single-logit model scores only the second class: its logit is the
    evidence for that class, so that is the class explained.
    """
    if num_outputs == 1:
        if target not in (None, 1):
            raise CnnlabError("this model has one logit, the score of its second class: Grad-CAM can explain only "
                              "that class")
        return 1, 0
    cls = int(probs.argmax()) if target is None else int(target)
    return cls, cls


def explain_image(model: nn.Module, x: torch.Tensor, *, layers: Sequence[str] | None = None,
                  target: int | None = None, outputs_are_probs: bool = False, gradcam: bool = True,
                  cam_layer: str | None = None, with_saliency: bool = False) -> ImageExplanation:
    """Explain one normalized image (1, C, H, W): probabilities and feature maps in one pass, then Grad-CAM at
    `cam_layer` (default: the last layer with a spatial output) and, if asked, the saliency map."""
    saved = save_modes(model)
    model.eval()
    try:
        x = x.to(model_device(model))
        notes: list[str] = []
        try:
            with FeatureExtractor(model, layers) as fx, torch.no_grad():
                logits = split_logits(model(x))[0]
            features = fx.features
        except CnnlabError as exc:  # a model without conv, activation or pool layers (a named layer must exist)
            if layers is not None:
                raise
            with torch.no_grad():
                logits = split_logits(model(x))[0]
            features, notes = Features(), [str(exc)]
        probs = probabilities(logits.float().cpu(), outputs_are_probs)[0]
        cls, index = explained_class(probs, target, logits.shape[1])
        result = ImageExplanation(probs, cls, features, notes=notes)
        if not gradcam:
            return result
        if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            result.notes.append("the model has no conv layer: no Grad-CAM")
            return result
        cam = GradCAM(model, cam_layer)
        result.heatmap, result.cam_layer = cam(x, target=index)[0], cam.layer_name
        if with_saliency:
            result.saliency = saliency(model, x, target=index)[0]
        return result
    finally:
        restore_modes(saved)
