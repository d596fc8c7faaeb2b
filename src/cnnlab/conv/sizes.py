"""Output sizes of conv and pool layers: out = floor((n + 2p - d(k-1) - 1) / s) + 1, worked out with your numbers."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Mapping, Sequence

from cnnlab.errors import CnnlabError

FORMULA = "out = floor((n + 2p - d(k-1) - 1) / s) + 1"


@dataclass(frozen=True)
class Layer:
    """One conv or pool layer as far as sizes go: kernel k, stride s, padding p, dilation d."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    name: str = ""


def _int(label: str, value: object, low: int) -> int:
    # operator.index accepts Python and numpy integers but refuses floats and bools (3.0 is not a size).
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise CnnlabError(f"{label} must be an integer >= {low}, got {value!r}") from None
    if number < low:
        raise CnnlabError(f"{label} must be an integer >= {low}, got {value!r}")
    return number


def _check(n: int, kernel: int, padding: int, stride: int, dilation: int) -> tuple[int, int, int, int, int]:
    n, kernel, stride = _int("input size n", n, 1), _int("kernel k", kernel, 1), _int("stride s", stride, 1)
    dilation, padding = _int("dilation d", dilation, 1), _int("padding p", padding, 0)
    span = dilation * (kernel - 1) + 1
    if span > n + 2 * padding:
        what = f"kernel (k = {kernel})" if dilation == 1 else f"kernel (k = {kernel}, dilation {dilation}: span {span})"
        raise CnnlabError(
            f"the {what} is larger than the padded input (n + 2p = {n} + 2*{padding} = {n + 2 * padding}): "
            "use a smaller kernel, more padding, or a larger input"
        )
    return n, kernel, padding, stride, dilation


def output_size(n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """floor((n + 2p - d(k-1) - 1) / s) + 1: how many positions the (dilated) kernel fits into the padded input."""
    n, kernel, padding, stride, dilation = _check(n, kernel, padding, stride, dilation)
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def explain_output_size(n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> str:
    """The formula with these numbers substituted and evaluated step by step, as text."""
    n, kernel, padding, stride, dilation = _check(n, kernel, padding, stride, dilation)
    out = output_size(n, kernel, padding, stride, dilation)
    num = n + 2 * padding - dilation * (kernel - 1) - 1
    q, rest = divmod(num, stride)
    pad = " " * len("out ")
    lines = [
        f"n = {n}, k = {kernel}, p = {padding}, s = {stride}, d = {dilation}",
        FORMULA,
        f"{pad}= floor(({n} + 2*{padding} - {dilation}*({kernel}-1) - 1) / {stride}) + 1",
        f"{pad}= floor({num} / {stride}) + 1",
        f"{pad}= {q} + 1",
        f"{pad}= {out}",
    ]
    if rest:
        lines.append(
            f"note: {num} / {stride} leaves remainder {rest}: the last {rest} row(s)/column(s) of the padded input "
            "are never covered by a window (the floor drops them)"
        )
    return "\n".join(lines)


def as_layer(spec: Layer | Mapping[str, int] | Sequence[int] | str) -> Layer:
    """A Layer from a Layer, a dict, a tuple (k, s, p, d) or a text spec like 'conv1:k=11,s=4'."""
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, str):
        return parse_layer(spec)
    if isinstance(spec, Mapping):
        known = {"kernel", "stride", "padding", "dilation", "name"}
        unknown = set(spec) - known
        if unknown:
            raise CnnlabError(f"unknown layer field(s) {sorted(unknown)}; use {sorted(known)}")
        return Layer(**spec)  # type: ignore[arg-type]
    values = list(spec)
    if not 1 <= len(values) <= 4:
        raise CnnlabError(f"a layer tuple is (kernel, stride, padding, dilation), got {spec!r}")
    return Layer(*values)


_KEYS = {"k": "kernel", "s": "stride", "p": "padding", "d": "dilation"}


def parse_layer(text: str) -> Layer:
    """'pool1:k=3,s=2' -> Layer(kernel=3, stride=2, name='pool1'); keys k, s, p, d; the name is optional."""
    name, _, body = text.rpartition(":")
    fields: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _KEYS:
            raise CnnlabError(f"cannot read layer {text!r}: write it like 'k=3,s=2,p=1,d=1' (k is required)")
        try:
            fields[_KEYS[key]] = int(value)
        except ValueError:
            raise CnnlabError(f"cannot read layer {text!r}: {key}={value!r} is not an integer") from None
    if "kernel" not in fields:
        raise CnnlabError(f"layer {text!r} has no kernel size: write it like 'k=3,s=2'")
    return Layer(name=name.strip(), **fields)


def output_sizes(n: int, layers: Sequence[Layer | Mapping[str, int] | Sequence[int] | str]) -> list[int]:
    """The size after each layer of a chain, each layer's output feeding the next."""
    sizes = []
    for i, spec in enumerate(layers, 1):
        layer = as_layer(spec)
        try:
            n = output_size(n, layer.kernel, layer.padding, layer.stride, layer.dilation)
        except CnnlabError as exc:
            raise CnnlabError(f"layer {i} ({layer.name or _spec_text(layer)}): {exc}") from None
        sizes.append(n)
    return sizes


def explain_output_sizes(n: int, layers: Sequence[Layer | Mapping[str, int] | Sequence[int] | str]) -> str:
    """A table of the chain: each layer's numbers and its worked formula."""
    from cnnlab.text import format_table

    parsed = [as_layer(spec) for spec in layers]
    sizes = output_sizes(n, parsed)
    rows = []
    for i, (layer, out) in enumerate(zip(parsed, sizes), 1):
        k, p, s, d = layer.kernel, layer.padding, layer.stride, layer.dilation
        num = n + 2 * p - d * (k - 1) - 1
        worked = f"floor(({n} + 2*{p} - {d}*({k}-1) - 1) / {s}) + 1 = floor({num}/{s}) + 1 = {out}"
        if num % s:
            worked += f"  (drops {num % s})"
        rows.append((layer.name or f"layer {i}", n, k, s, p, d, out, worked))
        n = out
    table = format_table(("layer", "n", "k", "s", "p", "d", "out", "worked out"), rows, "lrrrrrrl")
    return FORMULA + "\n\n" + table


def _spec_text(layer: Layer) -> str:
    return f"k={layer.kernel},s={layer.stride},p={layer.padding},d={layer.dilation}"
