"""Convolution and pooling written as the math: loops for the idea, im2col for the speed, both checked against torch."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from cnnlab.conv.sizes import output_size
from cnnlab.errors import CnnlabError

IntPair = int | tuple[int, int]


def pair(v: IntPair | Sequence[int], what: str = "value") -> tuple[int, int]:
    """An int or a (height, width) pair as a (height, width) pair."""
    if isinstance(v, bool):
        raise CnnlabError(f"{what} must be an int or a (height, width) pair, not {v!r}")
    if isinstance(v, int):
        return v, v
    try:
        a, b = v  # type: ignore[misc]
        return int(a), int(b)
    except (TypeError, ValueError):
        raise CnnlabError(f"{what} must be an int or a (height, width) pair, not {v!r}") from None


def as_tensor(x: object, what: str = "input") -> torch.Tensor:
    """A tensor from a tensor, a numpy array or nested lists (no copy when it is already one)."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CnnlabError(f"{what} must be a tensor, an array or nested lists of numbers: {exc}") from None


def _common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Promote like arithmetic does (int image * float kernel -> float) instead of failing on a dtype mismatch.
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def corr2d(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Y[i, j] = sum_a sum_b X[i + a, j + b] * K[a, b]: 2-D cross-correlation, explicit loops, no padding, stride 1."""
    x, k = _common(as_tensor(x, "x"), as_tensor(k, "kernel"))
    if x.dim() != 2 or k.dim() != 2:
        raise CnnlabError(
            f"corr2d takes a 2-D input and a 2-D kernel, got shapes {tuple(x.shape)} and {tuple(k.shape)}; "
            "use conv2d for batches and channels"
        )
    h, w = k.shape
    out_h = output_size(x.shape[0], h)
    out_w = output_size(x.shape[1], w)
    y = x.new_zeros(out_h, out_w)
    for i in range(out_h):
        for j in range(out_w):
            # The window under the kernel when its top-left corner sits on (i, j).
            y[i, j] = (x[i : i + h, j : j + w] * k).sum()
    return y


def pad2d(x: torch.Tensor, padding: IntPair | tuple[int, int, int, int], value: float = 0) -> torch.Tensor:
    """X surrounded by `value`: padding is p, (p_h, p_w) or (left, right, top, bottom) as in F.pad."""
    x = as_tensor(x, "x")
    if x.dim() < 2:
        raise CnnlabError(f"pad2d needs at least 2 dimensions (height, width), got shape {tuple(x.shape)}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        left, right, top, bottom = (int(v) for v in padding)
    else:
        ph, pw = pair(padding, "padding")
        left = right = pw
        top = bottom = ph
    if min(left, right, top, bottom) < 0:
        raise CnnlabError(f"padding must be >= 0, got {padding!r}")
    h, w = x.shape[-2:]
    out = x.new_full((*x.shape[:-2], h + top + bottom, w + left + right), value)
    out[..., top : top + h, left : left + w] = x  # slice assignment keeps the autograd graph to x
    return out


def im2col(
    x: torch.Tensor, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1
) -> torch.Tensor:
    """The patches of X as columns: (N, C, H, W) -> (N, C*kh*kw, out_h*out_w), the layout of F.unfold."""
    x = as_tensor(x, "x")
    if x.dim() != 4:
        raise CnnlabError(f"im2col needs a batch (N, C, H, W), got shape {tuple(x.shape)}")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(kernel, "kernel size"),
        pair(stride, "stride"),
        pair(padding, "padding"),
        pair(dilation, "dilation"),
    )
    n, c, h, w = x.shape
    out_h = output_size(h, kh, ph, sh, dh)
    out_w = output_size(w, kw, pw, sw, dw)
    xp = pad2d(x, (ph, pw))
    # Row of the padded input seen by kernel row a at output row i is i*s + a*d (and the same for columns).
    rows = (torch.arange(kh) * dh).view(kh, 1, 1, 1) + (torch.arange(out_h) * sh).view(1, 1, out_h, 1)
    cols = (torch.arange(kw) * dw).view(1, kw, 1, 1) + (torch.arange(out_w) * sw).view(1, 1, 1, out_w)
    patches = xp[:, :, rows, cols]  # (N, C, kh, kw, out_h, out_w): one gather, no Python loop
    return patches.reshape(n, c * kh * kw, out_h * out_w)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """Y[n, o] = b[o] + sum_c corr(X[n, c], W[o, c]): a conv layer as one matrix product W_flat @ im2col(X)."""
    x, weight = _common(as_tensor(x, "x"), as_tensor(weight, "weight"))
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise CnnlabError(f"conv2d takes an input (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise CnnlabError(
            f"conv2d takes a weight (C_out, C_in, kh, kw), got shape {tuple(weight.shape)}; "
            "for one 2-D kernel k use k[None, None]"
        )
    c_out, c_in, kh, kw = weight.shape
    if x.shape[1] != c_in:
        raise CnnlabError(
            f"the input has {x.shape[1]} channels but the weight expects {c_in} (weight shape "
            f"{tuple(weight.shape)} is C_out x C_in x kh x kw): make them match"
        )
    n = x.shape[0]
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # (N, C_in*kh*kw, L)
    y = weight.reshape(c_out, -1) @ cols  # (C_out, C_in*kh*kw) @ (N, C_in*kh*kw, L) -> (N, C_out, L)
    if bias is not None:
        bias = as_tensor(bias, "bias").to(y.dtype)
        if bias.shape != (c_out,):
            raise CnnlabError(f"bias must have shape ({c_out},), one per output channel, got {tuple(bias.shape)}")
        y = y + bias.view(1, c_out, 1)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    out_h = output_size(x.shape[2], kh, ph, sh, dh)
    out_w = output_size(x.shape[3], kw, pw, sw, dw)
    y = y.reshape(n, c_out, out_h, out_w)
    return y[0] if unbatched else y


def pool2d(
    x: torch.Tensor,
    kernel: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    mode: Literal["max", "avg"] = "max",
) -> torch.Tensor:
    """Y[i, j] = max (or mean) of the k x k window at (i*s, j*s), over the last two dimensions; stride defaults to k."""
    x = as_tensor(x, "x")
    if mode not in ("max", "avg"):
        raise CnnlabError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
    if x.dim() < 2:
        raise CnnlabError(f"pool2d needs at least 2 dimensions (height, width), got shape {tuple(x.shape)}")
    (kh, kw) = pair(kernel, "pool size")
    (sh, sw) = pair(stride if stride is not None else (kh, kw), "stride")
    (ph, pw) = pair(padding, "padding")
    if ph > kh // 2 or pw > kw // 2:
        # Same rule as torch: a wider pad would let a window see only padding, which has nothing to pool.
        raise CnnlabError(f"pool padding must be at most half the pool size ({kh // 2}, {kw // 2}), got ({ph}, {pw})")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())  # a mean of integers is not an integer
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    # Max pooling pads with -inf so padding never wins; average pooling pads with 0 and still divides by k*k,
    # which is torch's default (count_include_pad=True).
    if mode == "max" and (ph or pw):
        flat = pad2d(flat, (ph, pw), value=float("-inf"))
        ph = pw = 0
    cols = im2col(flat, (kh, kw), (sh, sw), (ph, pw))  # (M, kh*kw, L)
    pooled = cols.amax(dim=1) if mode == "max" else cols.mean(dim=1)
    out_h = output_size(h, kh, pair(padding)[0], sh)
    out_w = output_size(w, kw, pair(padding)[1], sw)
    return pooled.reshape(*lead, out_h, out_w)
