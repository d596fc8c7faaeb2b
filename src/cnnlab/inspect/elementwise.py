"""Layers that act on each value alone, worked out for one value: activations and BatchNorm in eval mode.

Each activation is written out as its formula on one number (`activation_formula`), the reference math that
tests/test_overview.py checks against torch's module on the same input.
"""

from __future__ import annotations

import math
from typing import Callable

from torch import nn

from cnnlab.errors import CnnlabError

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class CannotWorkOut(CnnlabError):
    """A layer whose value this module cannot write out by hand (its type or its settings)."""


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _softplus(x: float, beta: float, threshold: float) -> float:
    return x if beta * x > threshold else math.log1p(math.exp(beta * x)) / beta


def activation_formula(module: nn.Module) -> tuple[str, Callable[[float], float]]:
    """(the formula as text, the function on one number) for an activation module with its settings."""
    m = module
    if isinstance(m, nn.ReLU6):
        return "min(max(x, 0), 6)", lambda x: min(max(x, 0.0), 6.0)
    if isinstance(m, nn.ReLU):
        return "max(x, 0)", lambda x: max(x, 0.0)
    if isinstance(m, nn.LeakyReLU):
        s = m.negative_slope
        return f"x if x > 0, else {s:g} * x", lambda x: x if x > 0 else s * x
    if isinstance(m, nn.Hardtanh):
        lo, hi = m.min_val, m.max_val
        return f"min(max(x, {lo:g}), {hi:g})", lambda x: min(max(x, lo), hi)
    if isinstance(m, nn.Sigmoid):
        return "1 / (1 + exp(-x))", _sigmoid
    if isinstance(m, nn.Tanh):
        return "tanh(x)", math.tanh
    if isinstance(m, nn.SiLU):
        return "x * sigmoid(x)", lambda x: x * _sigmoid(x)
    if isinstance(m, nn.GELU):
        if m.approximate == "tanh":
            return ("0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))",
                    lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))))
        return "0.5 * x * (1 + erf(x / sqrt(2)))", lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    if isinstance(m, nn.Hardswish):
        return "x * min(max(x + 3, 0), 6) / 6", lambda x: x * min(max(x + 3, 0.0), 6.0) / 6
    if isinstance(m, nn.Hardsigmoid):
        return "min(max(x + 3, 0), 6) / 6", lambda x: min(max(x + 3, 0.0), 6.0) / 6
    if isinstance(m, nn.ELU):
        a = m.alpha
        return f"x if x > 0, else {a:g} * (exp(x) - 1)", lambda x: x if x > 0 else a * math.expm1(x)
    if isinstance(m, nn.CELU):
        a = m.alpha
        return f"x if x > 0, else {a:g} * (exp(x / {a:g}) - 1)", lambda x: x if x > 0 else a * math.expm1(x / a)
    if isinstance(m, nn.SELU):
        a, s = 1.6732632423543772, 1.0507009873554805
        return f"{s:.4f} * (x if x > 0, else {a:.4f} * (exp(x) - 1))", \
            lambda x: s * (x if x > 0 else a * math.expm1(x))
    if isinstance(m, nn.Softplus):
        b, t = m.beta, m.threshold
        return f"log(1 + exp({b:g} x)) / {b:g}", lambda x: _softplus(x, b, t)
    if isinstance(m, nn.Mish):
        return "x * tanh(softplus(x))", lambda x: x * math.tanh(_softplus(x, 1.0, 20.0))
    raise CannotWorkOut(f"no hand-written formula for {type(module).__name__}")


def prelu_formula(module: nn.PReLU, channel: int) -> tuple[str, Callable[[float], float]]:
    """PReLU's slope is learned, one per channel or one for all."""
    w = module.weight.detach()
    a = float(w[channel] if w.numel() > 1 else w[0])
    return f"x if x > 0, else {a:.4g} * x", lambda x: x if x > 0 else a * x


def work_activation(module: nn.Module, x: float, channel: int) -> dict:
    """f(x) for one input value: the formula and the result."""
    text, f = prelu_formula(module, channel) if isinstance(module, nn.PReLU) else activation_formula(module)
    return {"function": type(module).__name__, "formula": text, "input": x, "result": f(x)}


def work_batchnorm(module: nn.Module, x: float, channel: int) -> dict:
    """y = (x - running mean) / sqrt(running var + eps) * weight + bias, for one value of one channel."""
    if not isinstance(module, BATCHNORMS):
        raise CannotWorkOut(f"{type(module).__name__} is not written out by hand here (BatchNorm in eval mode is)")
    if module.running_mean is None:
        raise CannotWorkOut(f"{type(module).__name__} without running statistics depends on the whole batch; "
                            "only BatchNorm with running statistics is written out here")
    mean, var = float(module.running_mean[channel]), float(module.running_var[channel])
    w = float(module.weight.detach()[channel]) if module.weight is not None else 1.0
    b = float(module.bias.detach()[channel]) if module.bias is not None else 0.0
    result = (x - mean) / math.sqrt(var + module.eps) * w + b
    return {"function": type(module).__name__, "formula": "(x - mean) / sqrt(var + eps) * weight + bias",
            "input": x, "mean": mean, "var": var, "eps": module.eps, "weight": w, "bias": b, "result": result}
