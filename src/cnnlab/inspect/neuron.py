"""One value of a network worked out by hand, from the layer's own weights and the input it got in the pass.

    seen = record_overview(model, x)
    work_value(seen, "conv1", channel=2, row=5, col=7)
    # {"patch": ..., "kernel": ..., "products": ..., "bias": ..., "sum": 0.4127, "value": 0.4127, "agrees": True, ...}

conv: the input patch under the kernel (every input channel of the group, padding marked), the products, their
sum plus the bias; pool: the window and what it kept (max) or its mean; activation and BatchNorm: the formula on
the value that came in; the last linear layer: its largest contributions, then the softmax. `sum`/`result` is the
hand computation (float64, from the returned numbers), `value` the layer's output in the forward pass: `agrees`
says they match to 1e-4. Each reply also has the elementwise `chain` at that position (conv -> BatchNorm -> ReLU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.elementwise import CannotWorkOut, work_activation, work_batchnorm
from cnnlab.inspect.overview import LayerCall, Overview

TOP_CONTRIBUTIONS = 10  # the linear layer's largest products listed one by one; the rest as one sum
ELEMENTWISE = ("act", "norm")


class PositionOutside(CnnlabError):
    """The asked (channel, row, col) does not exist in the layer's output."""


def workable_layers(seen: Overview) -> list[str]:
    """The layers whose values `work_value` writes out: those with maps of a conv, pool or elementwise kind, and
    the linear ones, in the order they ran."""
    return [k for k, c in seen.layers.items()
            if c.kind == "dense" or (c.is_map and c.kind in ("conv", "pool", *ELEMENTWISE))]
REL_TOL = 1e-4


def num(v: Any) -> float:
    """A float32 value as the shortest float that round-trips it (9 significant digits): exact, and short in JSON."""
    return float(f"{float(v):.9g}")


def agrees(computed: float, value: float, scale: float = 0.0) -> bool:
    """The hand computation equals the forward pass's value: to 1e-4 relative, or 1e-6 of the terms' size."""
    return math.isclose(computed, value, rel_tol=REL_TOL, abs_tol=1e-6 * (1.0 + scale))


def work_value(seen: Overview, layer: str, channel: int, row: int = 0, col: int = 0) -> dict[str, Any]:
    """The value at (channel, row, col) of `layer`'s output (a linear layer: output `channel`), worked out."""
    call = layer_call(seen, layer)
    head = {"layer": call.key, "kind": call.kind, "type": call.type, "channel": channel, "row": row, "col": col}
    if call.kind == "dense":
        _check_index(call, channel, row, col)
        out = work_dense(seen, call, channel)
        if call.key == seen.head:
            out["softmax"] = work_softmax(seen, channel)
        return head | out
    if not call.is_map:
        raise CnnlabError(f"layer {layer!r} gives a {tuple(call.output.shape[1:])} output, not maps: pick a conv, "
                          "activation or pool layer, or the last linear layer")
    _check_position(call, channel, row, col)
    if call.kind == "conv":
        out = work_conv(call, channel, row, col)
    elif call.kind == "pool":
        out = work_pool(call, channel, row, col)
    elif call.kind in ELEMENTWISE:
        out = _step(seen, call.key, channel, row, col, None)
    else:
        raise CannotWorkOut(f"{call.type} layers are not written out by hand")
    return head | out | {"chain": chain(seen, call.key, channel, row, col)}


def layer_call(seen: Overview, layer: str) -> LayerCall:
    """The recorded call of `layer`; an unknown name lists the layers there are."""
    if layer in seen.layers:
        return seen.layers[layer]
    import difflib

    close = difflib.get_close_matches(layer, list(seen.layers), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    shown = ", ".join(seen.shown[:12]) + (", ..." if len(seen.shown) > 12 else "")
    raise CnnlabError(f"no layer {layer!r} ran in this model.{hint} Layers with maps: {shown}"
                      + (f"; the last linear layer: {seen.head}" if seen.head else ""))


def _check_position(call: LayerCall, channel: int, row: int, col: int) -> None:
    c, h, w = call.output.shape[1:]
    if not (0 <= channel < c and 0 <= row < h and 0 <= col < w):
        raise PositionOutside(f"({channel}, {row}, {col}) is outside {call.key}'s {c}x{h}x{w} output: use 0 <= channel "
                          f"< {c}, 0 <= row < {h}, 0 <= col < {w}")


def _check_index(call: LayerCall, channel: int, row: int, col: int) -> None:
    n = call.output.shape[-1]
    if row or col or not 0 <= channel < n:
        raise PositionOutside(f"{call.key} is a linear layer with {n} outputs: use 0 <= channel < {n}, row 0, col 0")


# ---------------------------------------------------------------- conv


def conv_padding(module: nn.Conv2d, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zeros (or reflections) the layer puts around an h x w input."""
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    if type(module).forward is nn.Conv2d.forward:
        if module.padding == "valid":
            return 0, 0, 0, 0
        if module.padding == "same":  # torch puts the odd one at the end
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        ph, pw = module.padding
        return ph, ph, pw, pw
    # A subclass that pads in its own forward: timm's Conv2dSame, TensorFlow's "same" (the odd one at the end).
    ph, pw = module.padding if isinstance(module.padding, tuple) else (0, 0)
    th = max((math.ceil(h / sh) - 1) * sh + (kh - 1) * dh + 1 - h, 0)
    tw = max((math.ceil(w / sw) - 1) * sw + (kw - 1) * dw + 1 - w, 0)
    return th // 2 + ph, th - th // 2 + ph, tw // 2 + pw, tw - tw // 2 + pw


def work_conv(call: LayerCall, c: int, i: int, j: int) -> dict[str, Any]:
    """out[c, i, j] = bias[c] + sum over the group's input channels and the kernel of patch * weight."""
    m = call.module
    if not isinstance(m, nn.Conv2d) or call.input is None or call.input.dim() != 4:
        raise CannotWorkOut(f"{call.type} is not a 2-D convolution: only Conv2d values are written out by hand")
    x = call.input[:1].float()
    h, w = x.shape[-2:]
    top, bottom, left, right = conv_padding(m, h, w)
    mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
    xp = F.pad(x, (left, right, top, bottom), mode=mode) if mode != "constant" else \
        F.pad(x, (left, right, top, bottom))
    inside = F.pad(torch.ones(1, 1, h, w), (left, right, top, bottom))[0, 0]
    (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
    per_group = m.in_channels // m.groups
    g = c // (m.out_channels // m.groups)
    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
    cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
    patch = xp[0, g * per_group:(g + 1) * per_group, rows, cols]
    if patch.shape[-2:] != (kh, kw):
        raise CannotWorkOut(f"cannot tell how {call.type} {call.key} pads its input: its window at ({i}, {j}) "
                            "falls outside it")
    kernel = m.weight.detach()[c].float()
    patch_l, kernel_l = _nums(patch), _nums(kernel)
    products = torch.tensor(patch_l, dtype=torch.float64) * torch.tensor(kernel_l, dtype=torch.float64)
    bias = num(m.bias.detach()[c]) if m.bias is not None else 0.0
    total = float(products.sum()) + bias
    value = num(call.output[0, c, i, j])
    return {
        "patch": patch_l, "padding": (inside[rows, cols] == 0).tolist(), "kernel": kernel_l,
        "products": _nums(products), "bias": bias, "has_bias": m.bias is not None,
        "sum": total, "value": value, "agrees": agrees(total, value, float(products.abs().sum())),
        "in_channels": [g * per_group, (g + 1) * per_group], "groups": m.groups,
        "stride": [sh, sw], "dilation": [dh, dw], "pads": {"top": top, "bottom": bottom, "left": left,
                                                          "right": right},
        "padding_mode": m.padding_mode,
        "window": {"row0": i * sh - top, "col0": j * sw - left},  # in the unpadded input's coordinates
        "input_from": call.source or "input",
    }


def _nums(t: torch.Tensor) -> Any:
    """A tensor as nested lists of `num`s."""
    def rounded(v: Any) -> Any:
        return [rounded(u) for u in v] if isinstance(v, list) else float(f"{v:.9g}")

    return rounded(t.detach().float().cpu().tolist())


# ---------------------------------------------------------------- pool


def _pool_window(m: nn.Module, i: int, j: int, h: int, w: int, oh: int, ow: int
                 ) -> tuple[list[int], list[int], str]:
    """The rows and columns of the input a pooled value looks at (outside 0..h-1 / 0..w-1: padding), and how."""
    if isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
        return list(range(r0, r1)), list(range(c0, c1)), "max" if isinstance(m, nn.AdaptiveMaxPool2d) else "avg"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        two = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        (kh, kw), (ph, pw) = two(m.kernel_size), two(m.padding)
        (sh, sw) = two(m.stride if m.stride is not None else m.kernel_size)
        (dh, dw) = two(m.dilation) if isinstance(m, nn.MaxPool2d) else (1, 1)
        rows = [i * sh - ph + a * dh for a in range(kh)]
        cols = [j * sw - pw + b * dw for b in range(kw)]
        return rows, cols, "max" if isinstance(m, nn.MaxPool2d) else "avg"
    raise CannotWorkOut(f"{type(m).__name__} is not written out by hand (max, average and adaptive pools are)")


def _avg_divisor(m: nn.Module, rows: list[int], cols: list[int], h: int, w: int) -> int:
    """What torch divides the window's sum by (count_include_pad, divisor_override, ceil_mode's cut windows)."""
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return len(rows) * len(cols)
    if m.divisor_override:
        return int(m.divisor_override)
    ph, pw = (m.padding, m.padding) if isinstance(m.padding, int) else m.padding
    if m.count_include_pad:  # padding counts, but not what ceil_mode's last window hangs past it
        return sum(-ph <= r < h + ph for r in rows) * sum(-pw <= q < w + pw for q in cols)
    return sum(0 <= r < h for r in rows) * sum(0 <= q < w for q in cols)


def work_pool(call: LayerCall, c: int, i: int, j: int) -> dict[str, Any]:
    """A pooled value: its window of the input map, and the value it kept (max) or their mean (avg)."""
    x = call.input[0, c]
    h, w = x.shape
    oh, ow = call.output.shape[-2:]
    rows, cols, op = _pool_window(call.module, i, j, h, w, oh, ow)
    window = [[num(x[r, q]) if 0 <= r < h and 0 <= q < w else None for q in cols] for r in rows]
    inside = [(a, b, v) for a, row in enumerate(window) for b, v in enumerate(row) if v is not None]
    out: dict[str, Any] = {"op": op, "window": window, "rows": rows, "cols": cols, "input_from": call.source}
    if op == "max":
        a, b, result = max(inside, key=lambda t: t[2])  # the first of equal maxima, as torch keeps
        out |= {"kept": [rows[a], cols[b]], "kept_index": [a, b]}
    else:
        divisor = _avg_divisor(call.module, rows, cols, h, w)
        result = sum(v for _, _, v in inside) / divisor
        out["divisor"] = divisor
    value = num(call.output[0, c, i, j])
    return out | {"result": result, "value": value, "agrees": agrees(result, value)}


# ---------------------------------------------------------------- activation, BatchNorm, and the chain


def _step(seen: Overview, key: str, c: int, i: int, j: int, nxt: str | None) -> dict[str, Any]:
    """One elementwise layer at (c, i, j): what came in, the formula, what it gave."""
    call = seen.layers[key]
    x = num(call.input[0, c, i, j])
    try:
        worked = (work_activation if call.kind == "act" else work_batchnorm)(call.module, x, c)
    except CannotWorkOut as exc:
        return {"input": x, "value": num(call.output[0, c, i, j]), "note": str(exc)}
    # A norm with its activation inside (timm's BatchNormAct2d) outputs after the activation: compare with
    # what the activation got.
    inner = nxt is not None and seen.layers[nxt].inside
    value = num(seen.layers[nxt].input[0, c, i, j] if inner else call.output[0, c, i, j])
    return worked | {"value": value, "agrees": agrees(worked["result"], value)}


def _same_shape(a: LayerCall, b: LayerCall) -> bool:
    return a.output.shape == b.output.shape and b.input is not None and b.input.shape == a.output.shape


def chain(seen: Overview, key: str, c: int, i: int, j: int) -> list[dict[str, Any]]:
    """The layers that made and then changed the value at (c, i, j) without moving it: the conv or pool it came
    from, then each BatchNorm and activation applied to it in turn."""
    start = key
    while seen.layers[start].kind in ELEMENTWISE and seen.layers[start].source in seen.layers:
        src = seen.layers[seen.layers[start].source]
        if not (seen.layers[start].inside or _same_shape(src, seen.layers[start])):
            break
        start = src.key
    keys = [start]
    while True:
        after = [k for k in seen.consumers(keys[-1]) if seen.layers[k].kind in ELEMENTWISE
                 and (seen.layers[k].inside or _same_shape(seen.layers[keys[-1]], seen.layers[k]))]
        if not after:
            break
        keys.append(after[0])
    steps = []
    for n, k in enumerate(keys):
        call = seen.layers[k]
        step = {"layer": k, "kind": call.kind, "type": call.type}
        if call.kind in ELEMENTWISE:
            step |= _step(seen, k, c, i, j, keys[n + 1] if n + 1 < len(keys) else None)
        else:
            step["value"] = num(call.output[0, c, i, j])
        steps.append(step)
    return steps


# ---------------------------------------------------------------- the last linear layer and the softmax


def _input_map(seen: Overview, call: LayerCall) -> LayerCall | None:
    """The recorded map a linear layer's input is the flattening of (fastnet: the global max pool)."""
    x = call.input.flatten()
    before = list(seen.layers.values())
    before = before[:before.index(call)]
    for prev in reversed(before):
        if prev.is_map and prev.output.numel() == x.numel():
            return prev if torch.equal(prev.output.flatten(), x) else None
    return None


def work_dense(seen: Overview, call: LayerCall, k: int) -> dict[str, Any]:
    """out[k] = bias[k] + sum_i x[i] * W[k, i]: the largest products one by one, the rest summed."""
    m = call.module
    x = _nums(call.input[0].flatten().float())
    weights = _nums(m.weight.detach()[k].float())
    products = torch.tensor(x, dtype=torch.float64) * torch.tensor(weights, dtype=torch.float64)
    order = products.abs().argsort(descending=True, stable=True)[:TOP_CONTRIBUTIONS].tolist()
    src = _input_map(seen, call)
    top = []
    for n in order:
        item = {"index": n, "input": x[n], "weight": weights[n], "product": float(products[n])}
        if src is not None:
            _, ch, hh, ww = src.output.shape
            item["position"] = [n // (hh * ww), (n // ww) % hh, n % ww]
        top.append(item)
    listed = sum(t["product"] for t in top)
    bias = num(m.bias.detach()[k]) if m.bias is not None else 0.0
    total, value = float(products.sum()) + bias, num(call.output[0, k])
    out = {"contributions": top, "others": {"count": len(x) - len(top), "sum": float(products.sum()) - listed},
           "inputs": len(x), "input_from": src.key if src is not None else call.source,
           "input_shape": list(src.output.shape[1:]) if src is not None else [len(x)],
           "bias": bias, "sum": total, "value": value, "agrees": agrees(total, value, float(products.abs().sum()))}
    if call.key == seen.head and not math.isclose(value, float(seen.logits[k]), rel_tol=REL_TOL, abs_tol=1e-6):
        out["logit"] = num(seen.logits[k])
        out["note"] = "the model changes this output before its class scores (e.g. scales it)"
    return out


def work_softmax(seen: Overview, k: int) -> dict[str, Any]:
    """Class k's probability from the class scores: softmax exp(z_k - max) / sum exp(z - max); a sigmoid for one
    logit (class 1's probability, whatever k)."""
    z = seen.logits.double()
    prob = num(seen.probs[k])
    if seen.outputs_are_probs:
        return {"function": "none", "note": "the model outputs probabilities itself", "probability": prob,
                "value": prob, "agrees": True}
    if z.numel() == 1:  # one logit: the evidence for class 1
        p1, prob = 1 / (1 + math.exp(-float(z[0]))), num(seen.probs[1])
        return {"function": "sigmoid", "logit": num(z[0]), "formula": "p(class 1) = 1 / (1 + exp(-z)); "
                "p(class 0) = 1 - p(class 1)", "result": p1, "class_0": 1 - p1, "value": prob,
                "agrees": agrees(p1, prob)}
    zmax = float(z.max())
    e = torch.exp(z - zmax)
    total = float(e.sum())
    order = z.argsort(descending=True, stable=True)[:TOP_CONTRIBUTIONS].tolist()
    if k not in order:
        order.append(k)
    terms = [{"index": n, "logit": num(z[n]), "exp": float(e[n])} for n in order]
    result = float(e[k]) / total
    return {"function": "softmax", "formula": "p_k = exp(z_k - max z) / sum_j exp(z_j - max z)",
            "max": zmax, "terms": terms, "classes": z.numel(), "exp_sum": total, "exp": float(e[k]),
            "result": result, "value": prob, "agrees": agrees(result, prob)}
