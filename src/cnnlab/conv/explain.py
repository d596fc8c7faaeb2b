"""One output of a cross-correlation worked out by hand: the window, the products, their sum."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.conv.ops import as_tensor, pad2d
from cnnlab.conv.sizes import output_size
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class CorrStep:
    """Y[i, j] of a cross-correlation: the window of X under K, the element-wise products, and their sum.

    `row` and `col` are where the window starts in X as the kernel sees it (the padded X when padding > 0), and
    `stride`, `padding` and `dilation` the layer's; the window holds every d-th pixel when d > 1.
    """

    i: int
    j: int
    window: torch.Tensor
    kernel: torch.Tensor
    products: torch.Tensor
    value: float
    row: int
    col: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    def __str__(self) -> str:
        flat = zip(self.window.flatten(), self.kernel.flatten())
        pairs = " + ".join(f"{_num(a, True)}*{_num(b, True)}" for a, b in flat)
        terms = " + ".join(_num(v, True) for v in self.products.flatten())
        head = f"Y[{self.i}, {self.j}] = sum({self.window_text()} * K)"
        pad = " " * (len(f"Y[{self.i}, {self.j}]") + 1)
        return "\n".join([head, f"{pad}= {pairs}", f"{pad}= {terms}", f"{pad}= {_num(self.value)}"])

    def window_text(self) -> str:
        """The window as a slice of X, 'X[0:2, 0:2]' (of X_padded with padding; every d-th pixel with dilation)."""
        h, w = self.kernel.shape
        d = self.dilation
        step = f":{d}" if d > 1 else ""
        rows = f"{self.row}:{self.row + d * (h - 1) + 1}{step}"
        cols = f"{self.col}:{self.col + d * (w - 1) + 1}{step}"
        return f"{'X_padded' if self.padding else 'X'}[{rows}, {cols}]"


def explain_corr2d(x: torch.Tensor, k: torch.Tensor, i: int, j: int, stride: int = 1, padding: int = 0,
                   dilation: int = 1) -> CorrStep:
    """Y[i, j] = sum_a sum_b X_padded[i*s + a*d, j*s + b*d] * K[a, b], with every product kept so it can be printed."""
    x, k = as_tensor(x, "x"), as_tensor(k, "kernel")
    if x.dim() != 2 or k.dim() != 2:
        raise CnnlabError(f"explain_corr2d takes a 2-D input and kernel, got {tuple(x.shape)} and {tuple(k.shape)}")
    h, w = k.shape
    try:
        out_h = output_size(x.shape[0], h, padding, stride, dilation)
        out_w = output_size(x.shape[1], w, padding, stride, dilation)
    except CnnlabError:
        raise CnnlabError(f"the {h}x{w} kernel does not fit in the {x.shape[0]}x{x.shape[1]} input") from None
    if not (0 <= i < out_h and 0 <= j < out_w):
        raise CnnlabError(
            f"output position ({i}, {j}) is outside the {out_h}x{out_w} output: use 0 <= i < {out_h}, 0 <= j < {out_w}"
        )
    xp = pad2d(x, padding) if padding else x
    row, col = i * stride, j * stride
    window = xp[row : row + dilation * (h - 1) + 1 : dilation, col : col + dilation * (w - 1) + 1 : dilation]
    products = window * k
    return CorrStep(i, j, window, k, products, products.sum().item(), row, col, stride, padding, dilation)


def _num(v: object, paren: bool = False) -> str:
    """3.0 -> '3', 0.125 -> '0.125', 1/3 -> '0.3333'; negatives in brackets inside a sum when `paren`."""
    value = float(v.item() if isinstance(v, torch.Tensor) else v)  # type: ignore[arg-type]
    text = str(int(value)) if value.is_integer() else f"{value:.4g}"
    return f"({text})" if paren and value < 0 else text
