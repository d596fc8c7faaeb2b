"""Input-gradient saliency (Simonyan et al. 2014): how much each pixel moves the class score."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.inspect.gradcam import Target, normalize_maps
from cnnlab.inspect.layers import as_batch, model_device, resolve_targets, restore_modes, save_modes
from cnnlab.models.outputs import split_logits


def saliency(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """|dScore/dPixel|, maximum over colour channels, scaled to [0, 1] per image: (N, H, W) on the CPU."""
    x = as_batch(x)
    saved = save_modes(model)
    model.eval()
    try:
        # Attribution needs a graph even when the caller runs under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            inp = x.detach().to(model_device(model)).clone().requires_grad_(True)
            logits = split_logits(model(inp))[0]
            targets = resolve_targets(target, logits)
            score = logits.gather(1, targets[:, None].to(logits.device)).sum()
            # autograd.grad, not backward(): the parameters' .grad stays as it was.
            (grad,) = torch.autograd.grad(score, inp)
    finally:
        restore_modes(saved)
    return normalize_maps(grad.detach().abs().amax(dim=1).float()).cpu()
