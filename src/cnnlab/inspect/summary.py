"""Layer summary: shapes, parameters and the output-size formula worked out for every conv and pool layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inspect.layers import first_tensor
from cnnlab.models import get_model, parse_input_size

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL = (nn.MaxPool2d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class LayerRow:
    """One call of one leaf module during the summary's forward pass."""

    name: str
    type: str
    depth: int
    input_shape: tuple[int, ...] | None = None  # without the batch dimension
    output_shape: tuple[int, ...] | None = None
    params: int = 0
    trainable: int = 0
    macs: int = 0  # multiply-adds for one image
    formulas: list[str] = field(default_factory=list)  # one per spatial dimension (or one for both)
    dropped: int = 0  # input rows/columns the floor of the formula leaves unused

    @property
    def frozen(self) -> int:
        return self.params - self.trainable


@dataclass
class Summary:
    """The table `summary()` returns: print it, or read its rows and totals."""

    rows: list[LayerRow]
    input_size: tuple[int, ...]
    total_params: int
    trainable_params: int
    macs: int
    activation_bytes: int
    param_bytes: int

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    def __str__(self) -> str:
        return render(self.rows) + "\n" + self.totals_text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the table, as `print` does, when a summary is a cell's last expression."""
        printer.text(str(self))

    def totals_text(self) -> str:
        return "\n".join(
            [
                f"Total params: {self.total_params:,} "
                f"(trainable {self.trainable_params:,}, frozen {self.frozen_params:,})",
                f"Mult-adds per image: {_human(self.macs)}",
                f"Input: {_shape(self.input_size)}; activations per image: {_bytes(self.activation_bytes)}; "
                f"parameters: {_bytes(self.param_bytes)}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {
                "name": r.name,
                "type": r.type,
                "input_shape": list(r.input_shape) if r.input_shape else None,
                "output_shape": list(r.output_shape) if r.output_shape else None,
                "params": r.params,
                "trainable": r.trainable,
                "macs": r.macs,
                "formulas": r.formulas,
                "dropped": r.dropped,
            }
            for r in self.rows
        ]
        return {
            "rows": rows,
            "input_size": list(self.input_size),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "activation_bytes": self.activation_bytes,
            "param_bytes": self.param_bytes,
        }


class ShapeMismatchError(CnnlabError):
    """A layer got an input of the wrong shape; carries the rows computed up to it."""

    def __init__(self, rows: list[LayerRow], layer: str, message: str):
        self.rows, self.layer, self.message = rows, layer, message
        super().__init__(message)

    def __str__(self) -> str:
        return render(self.rows) + "\n" + self.message


def output_size_formula(n: int, k: int, p: int, s: int, d: int = 1, ceil: bool = False) -> tuple[str, int, int]:
    """The worked formula floor((n + 2p - d(k-1) - 1) / s) + 1 with these numbers, its value, rows dropped.

    With `ceil` (pooling's ceil_mode) the division rounds up, and, as in torch, a last window that would start past
    the input and its left padding (in the right padding alone) is not counted.
    """
    span = d * (k - 1) + 1
    num = n + 2 * p - span
    out = (-(-num // s) if ceil else num // s) + 1
    rest = num % s
    text = f"({n} + 2*{p} - {k})" if d == 1 else f"({n} + 2*{p} - {d}*({k}-1) - 1)"
    if rest == 0:
        return f"{text} / {s} + 1 = {out}", out, 0
    if not ceil:
        return f"floor({text} / {s}) + 1 = {out}", out, rest
    if (out - 1) * s >= n + p:  # torch's rule: every window starts inside the input or its left padding
        return (f"ceil({text} / {s}) + 1 - 1 = {out - 1} (a last window would start at {(out - 1) * s}, in the "
                f"right padding: not counted)"), out - 1, 0
    return f"ceil({text} / {s}) + 1 = {out}", out, 0


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _formulas(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[str], int]:
    """Worked output-size formulas for a conv or pool layer on an input of shape (C, H, W)."""
    if len(in_shape) != 3:
        return [], 0
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            return [f"padding={module.padding!r}"], 0
        k, p, s, d = _pair(module.kernel_size), _pair(module.padding), _pair(module.stride), _pair(module.dilation)
        ceil = False
    elif isinstance(module, _POOL):
        k, p = _pair(module.kernel_size), _pair(module.padding)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        ceil = module.ceil_mode
    elif isinstance(module, _ADAPTIVE):
        return [f"adaptive: any size -> {_shape(_pair(module.output_size))}"], 0
    else:
        return [], 0
    parts = [output_size_formula(n, k[i], p[i], s[i], d[i], ceil) for i, n in enumerate(in_shape[1:])]
    dropped = max(x[2] for x in parts)
    if parts[0][0] == parts[1][0]:
        return [f"H,W: {parts[0][0]}"], dropped
    return [f"H: {parts[0][0]}", f"W: {parts[1][0]}"], dropped


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds for one image: each output of a conv or linear layer costs one per weight it sees."""
    per_image = out[0].numel() if out.dim() > 0 else 0
    if isinstance(module, _CONV):
        return per_image * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


class _LayerRecorder:
    """Hooks on every leaf layer, in one context manager: one LayerRow per call, with the shapes it saw (a layer
    used twice counts its parameters once); `stack` holds the layers still running when a call fails."""

    def __init__(self, model: nn.Module):
        # nn.Identity does nothing (e.g. lenet's softmax when the model outputs logits): it gets no row.
        self.leaves = [(n, m) for n, m in model.named_modules()
                       if n and not list(m.children()) and not isinstance(m, nn.Identity)]
        self.rows: list[LayerRow] = []
        self.stack: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
        self._seen: set[int] = set()
        self._handles: list = []

    def __enter__(self) -> "_LayerRecorder":
        for name, module in self.leaves:
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()

    def _enter(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            t = first_tensor(args)
            self.stack.append((name, module, tuple(t.shape[1:]) if t is not None else None))

        return hook

    def _leave(self, name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            _, _, in_shape = self.stack.pop()
            self.rows.append(self._row(name, module, in_shape, first_tensor(out)))

        return hook

    def _row(self, name: str, module: nn.Module, in_shape: tuple[int, ...] | None, t: torch.Tensor | None) -> LayerRow:
        first = id(module) not in self._seen
        self._seen.add(id(module))
        formulas, dropped = _formulas(module, in_shape) if in_shape else ([], 0)
        return LayerRow(
            name=name,
            type=type(module).__name__,
            depth=name.count("."),
            input_shape=in_shape,
            output_shape=tuple(t.shape[1:]) if t is not None else None,
            params=sum(p.numel() for p in module.parameters()) if first else 0,
            trainable=sum(p.numel() for p in module.parameters() if p.requires_grad) if first else 0,
            macs=_macs(module, t) if t is not None else 0,
            formulas=formulas,
            dropped=dropped,
        )

    def failure(self, input_size: tuple[int, ...], exc: Exception) -> "ShapeMismatchError":
        """The error of a failed pass: in a layer (the innermost still running), or between layers."""
        if self.stack:
            name, module, in_shape = self.stack[-1]
            return ShapeMismatchError(self.rows, name, explain_mismatch(name, module, in_shape, input_size, exc))
        # Failed in a functional op between layers (a view, a cat, a residual add).
        name = self.rows[-1].name if self.rows else "the input"
        out = _shape(self.rows[-1].output_shape) if self.rows else _shape(input_size)
        return ShapeMismatchError(self.rows, name, f"Forward pass failed after {name} (output {out}): "
                                                   f"{_first_line(exc)}")


def summary(
    model: nn.Module | str,
    input_size: Sequence[int] | str | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
) -> Summary:
    """Run one forward pass on zeros of shape (batch, *input_size) and tabulate every leaf layer.

    `model` is a module or a registered name (built for `input_size`, as `cnnlab summary NAME --input-size` does:
    its flatten sizes computed from it); `input_size` is (C, H, W) or text such as '3x32x32' (default: the
    model's own)."""
    if isinstance(input_size, str):
        input_size = parse_input_size(input_size)
    if isinstance(model, str):
        model = get_model(model, input_size=input_size)
        input_size = model.spec.input_size
    if input_size is None:
        spec = getattr(model, "spec", None)
        if spec is None:
            raise CnnlabError("give input_size=(C, H, W): this model carries no default input size")
        input_size = spec.input_size
    input_size = tuple(int(v) for v in input_size)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with _LayerRecorder(model) as recorder, torch.no_grad():
            model(torch.zeros(batch_size, *input_size, device=device))
    except (RuntimeError, ValueError) as exc:
        raise recorder.failure(input_size, exc) from exc
    finally:
        model.train(was_training)
    params = list(model.parameters())
    return Summary(
        rows=recorder.rows,
        input_size=input_size,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        macs=sum(r.macs for r in recorder.rows),
        activation_bytes=sum(math.prod(r.output_shape) * 4 for r in recorder.rows if r.output_shape),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
    )


def explain_mismatch(
    name: str, module: nn.Module, in_shape: tuple[int, ...] | None, input_size: tuple[int, ...], exc: Exception
) -> str:
    """One line naming the layer, what it expected, what it got, and the likely fix."""
    got = _shape(in_shape) if in_shape else "?"
    where = f"{type(module).__name__} '{name}'"
    if isinstance(module, nn.Linear) and in_shape:
        features = in_shape[-1]
        return (
            f"Shape mismatch at {where}: it expects {module.in_features} input features but gets {features} "
            f"(input {_shape(input_size)}). Likely fix: set in_features={features} (compute the flatten size "
            f"from the input size), or feed the input size the model was built for."
        )
    if isinstance(module, _CONV) and in_shape:
        if in_shape[0] != module.in_channels:
            return (
                f"Shape mismatch at {where}: it expects {module.in_channels} input channels but gets "
                f"{in_shape[0]} (input {_shape(input_size)}). Likely fix: build the model with "
                f"in_chans={in_shape[0]}, or convert the images to {module.in_channels} channel(s)."
            )
        return (
            f"Shape mismatch at {where}: its {_shape(module.kernel_size)} kernel does not fit the {got} input. "
            f"Likely fix: a larger input, padding, or fewer pooling layers before it."
        )
    if isinstance(module, (_POOL + _ADAPTIVE)) and in_shape:
        return (
            f"Shape mismatch at {where}: it cannot pool a {got} input. "
            f"Likely fix: a larger input or fewer downsampling layers before it."
        )
    return f"Shape mismatch at {where} (input {got}): {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def render(rows: list[LayerRow]) -> str:
    """The rows as an aligned text table."""
    header = ("Layer", "Type", "Input -> Output", "Params", "Output size worked out")
    body = []
    for r in rows:
        params = f"{r.params:,}" if r.params else "-"
        if r.params and r.frozen:
            params += f" ({r.frozen:,} frozen)"
        shapes = f"{_shape(r.input_shape)} -> {_shape(r.output_shape)}"
        formula = "; ".join(r.formulas)
        if r.dropped:
            formula += f"  [! not exact: floor drops {r.dropped} row(s)/col(s)]"
        body.append((r.name, r.type, shapes, params, formula))
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *body]:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(line[:-1])]
        lines.append("  ".join(cells + [line[-1]]).rstrip())
    rule = "-" * max(len(x) for x in lines)
    return "\n".join([lines[0], rule, *lines[1:], rule])


def _shape(shape: Sequence[int] | None) -> str:
    if shape is None:
        return "?"
    return "x".join(str(v) for v in shape) if len(shape) else "scalar"


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"
