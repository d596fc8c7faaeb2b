"""Learning a kernel: one conv layer, trained by gradient descent, recovers the filter that made the targets."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.conv.ops import as_tensor, im2col, pair
from cnnlab.errors import CnnlabError


@dataclass
class LearnedKernel:
    """What `learn_kernel` found: the kernel, the loss (mean squared error) before each step, and the step size."""

    kernel: torch.Tensor
    losses: list[float] = field(default_factory=list)
    lr: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.losses)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the block on n intra-op threads, then restore the caller's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _batch(t: torch.Tensor, what: str) -> torch.Tensor:
    """(H, W), (N, H, W) or (N, 1, H, W) -> (N, 1, H, W) float32."""
    t = as_tensor(t, what).float()
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[:, None]
    if t.dim() == 4 and t.shape[1] == 1:
        return t
    raise CnnlabError(f"{what} must be gray images (H, W), (N, H, W) or (N, 1, H, W), got shape {tuple(t.shape)}")


def learn_kernel(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kernel_size: int | tuple[int, int],
    steps: int = 2000,
    lr: float | None = None,
    momentum: float = 0.99,
    tol: float = 1e-12,
) -> LearnedKernel:
    """Fit a 1-in 1-out conv layer (no bias, no padding) so conv(inputs) ~ targets, by gradient descent on the MSE."""
    x, y = _batch(inputs, "inputs"), _batch(targets, "targets")
    kh, kw = pair(kernel_size, "kernel size")
    if kh < 1 or kw < 1:
        raise CnnlabError(f"kernel size must be positive, got {kernel_size!r}")
    if x.shape[0] != y.shape[0]:
        raise CnnlabError(f"got {x.shape[0]} input image(s) but {y.shape[0]} target(s): give one target per input")
    if kh > x.shape[2] or kw > x.shape[3]:
        raise CnnlabError(f"a {kh}x{kw} kernel does not fit in {x.shape[2]}x{x.shape[3]} inputs: use larger images")
    want = (x.shape[2] - kh + 1, x.shape[3] - kw + 1)
    if tuple(y.shape[2:]) != want:
        raise CnnlabError(
            f"a {kh}x{kw} kernel (no padding) turns a {x.shape[2]}x{x.shape[3]} input into {want[0]}x{want[1]}, "
            f"but the targets are {y.shape[2]}x{y.shape[3]}: check kernel_size or crop the targets"
        )
    if steps < 1:
        raise CnnlabError(f"steps must be at least 1, got {steps}")
    if lr is None:
        # The loss is quadratic in the kernel with Hessian H = 2 * mean(p p^T) over the input patches p. Its largest
        # eigenvalue is at most trace(H) = 2 * mean(|p|^2), so a step of 1 / trace(H) can never diverge, whatever the
        # brightness or size of the images.
        trace = 2 * im2col(x, (kh, kw)).pow(2).sum(dim=1).mean().item()
        if trace == 0:
            raise CnnlabError("the inputs are all zero: there is nothing to learn a kernel from")
        lr = 1.0 / trace
    layer = nn.Conv2d(1, 1, (kh, kw), bias=False)
    # The problem is convex (a linear layer under squared error): the start does not matter, zeros make it repeatable.
    nn.init.zeros_(layer.weight)
    # Natural images are smooth, so neighbouring pixels are correlated and the loss is a long narrow valley;
    # Nesterov momentum crosses such valleys in far fewer steps than plain gradient descent.
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0)
    scale = y.pow(2).mean().item() or 1.0
    losses: list[float] = []
    # Thousands of steps on small images: with several threads each tiny step costs more in hand-offs than in
    # arithmetic (5x slower on two busy cores), so small problems run on one thread.
    with _threads(1 if x.numel() <= 65536 else torch.get_num_threads()):
        for _ in range(steps):
            opt.zero_grad()
            loss = F.mse_loss(layer(x), y)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise CnnlabError(
                    f"the loss became {losses[-1]} at step {len(losses) - 1}: the learning rate {lr:.3g} is too large "
                    "(leave lr out to use a step that cannot diverge)"
                )
            if losses[-1] <= tol * scale:  # fit to float precision: more steps would change nothing
                break
            loss.backward()
            opt.step()
    return LearnedKernel(layer.weight.detach()[0, 0].clone(), losses, lr)
