"""One output of a cross-correlation worked out by hand: the window, the products, their sum."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.conv.ops import as_tensor
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class CorrStep:
    """Y[i, j] of corr2d(X, K): the window of X under K, the element-wise products, and their sum."""

    i: int
    j: int
    window: torch.Tensor
    kernel: torch.Tensor
    products: torch.Tensor
    value: float

    def __str__(self) -> str:
        h, w = self.kernel.shape
        flat = zip(self.window.flatten(), self.kernel.flatten())
        pairs = " + ".join(f"{_num(a, True)}*{_num(b, True)}" for a, b in flat)
        terms = " + ".join(_num(v, True) for v in self.products.flatten())
        head = f"Y[{self.i}, {self.j}] = sum(X[{self.i}:{self.i + h}, {self.j}:{self.j + w}] * K)"
        pad = " " * (len(f"Y[{self.i}, {self.j}]") + 1)
        return "\n".join([head, f"{pad}= {pairs}", f"{pad}= {terms}", f"{pad}= {_num(self.value)}"])


def explain_corr2d(x: torch.Tensor, k: torch.Tensor, i: int, j: int) -> CorrStep:
    """Y[i, j] = sum_a sum_b X[i + a, j + b] * K[a, b], with every product kept so it can be printed."""
    x, k = as_tensor(x, "x"), as_tensor(k, "kernel")
    if x.dim() != 2 or k.dim() != 2:
        raise CnnlabError(f"explain_corr2d takes a 2-D input and kernel, got {tuple(x.shape)} and {tuple(k.shape)}")
    h, w = k.shape
    out_h, out_w = x.shape[0] - h + 1, x.shape[1] - w + 1
    if out_h < 1 or out_w < 1:
        raise CnnlabError(f"the {h}x{w} kernel does not fit in the {x.shape[0]}x{x.shape[1]} input")
    if not (0 <= i < out_h and 0 <= j < out_w):
        raise CnnlabError(
            f"output position ({i}, {j}) is outside the {out_h}x{out_w} output: use 0 <= i < {out_h}, 0 <= j < {out_w}"
        )
    window = x[i : i + h, j : j + w]
    products = window * k
    return CorrStep(i, j, window, k, products, products.sum().item())


def _num(v: object, paren: bool = False) -> str:
    """3.0 -> '3', 0.125 -> '0.125', 1/3 -> '0.3333'; negatives in brackets inside a sum when `paren`."""
    value = float(v.item() if isinstance(v, torch.Tensor) else v)  # type: ignore[arg-type]
    text = str(int(value)) if value.is_integer() else f"{value:.4g}"
    return f"({text})" if paren and value < 0 else text
