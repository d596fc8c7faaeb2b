"""The convolution playground behind /api/convolve: a kernel slid over a photo, the output size worked out, and
one output pixel's multiply-and-sum.

Images are floats in [0, 1]. Modes:
  gray    the photo as luma (one channel), one output map
  rgb     each colour channel filtered on its own with the same kernel (what an image editor does): three maps,
          shown as a colour image; a clicked pixel has three separate sums, never added together
  summed  every channel filtered with the same kernel and the three results added (what one output channel of
          a conv layer does): one map; a clicked pixel's value is the sum of the three channel sums
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from cnnlab.apps.serve.encode import png_data_url
from cnnlab.apps.serve.errors import InvalidInput, NotFound
from cnnlab.errors import CnnlabError
from cnnlab.viz.images import to_uint8

KERNEL_SIZES = (3, 5)
STRIDES = range(1, 5)
PADDINGS = range(0, 5)
MODES = ("gray", "rgb", "summed")
SIZES = range(16, 641)  # the photo is shrunk so its longer side is at most this many pixels
DEFAULT_SIZE = 256
DEFAULT_KERNEL = "identity"  # no kernel given: the photo as it is
ABSENT = object()  # a field not sent (null is sent, and refused: the schema allows no null)
MAX_WEIGHT = 1000.0  # kernel weights beyond this only saturate the picture; refusing them keeps the maths finite

# What the REST API takes as text, written once: the OpenAPI schema states these patterns and the server holds
# requests to them (a form field is text; a JSON body has its own types).
_SIGMA = r"(?:[1-9][0-9]{0,2}(?:\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9])"  # 0.001 to 999.999, never 0
KERNEL_NAME_PATTERN = ("^(?:identity|sharpen|sobel_x|sobel_y|prewitt_x|prewitt_y|emboss|outline"
                       "|box_blur(?::n=[35])?"
                       f"|gaussian(?::n=[35](?:,sigma={_SIGMA})?|:sigma={_SIGMA})?"
                       "|laplacian(?::neighbours=[48])?)$")
_WS = r"[ \t\n\r]*"  # what JSON allows between tokens
# JSON numbers within MAX_WEIGHT (an exponent only below 1: what JSON.stringify writes for tiny weights).
_WEIGHT = _WS + r"-?(?:1000(?:\.0+)?|(?:0|[1-9][0-9]{0,2})(?:\.[0-9]+)?(?:[eE]-[0-9]{1,3})?)" + _WS


def _grid_text(n: int) -> str:
    """An n x n grid of weights written as JSON text."""
    row = _WS + r"\[" + ",".join([_WEIGHT] * n) + r"\]" + _WS
    return _WS + r"\[" + ",".join([row] * n) + r"\]" + _WS


KERNEL_TEXT_PATTERN = f"^(?:{KERNEL_NAME_PATTERN[1:-1]}|{_grid_text(3)}|{_grid_text(5)})$"  # a form field
FORM_PATTERNS = {  # the other form fields, as text
    "stride": f"^[{STRIDES.start}-{STRIDES.stop - 1}]$",
    "padding": f"^[{PADDINGS.start}-{PADDINGS.stop - 1}]$",
    "size": "^(?:1[6-9]|[2-9][0-9]|[1-5][0-9]{2}|6[0-3][0-9]|640)$",  # SIZES: 16 to 640
    "pixel": "^(?:{0},{0}|\\[{0},{0}\\])$".format("(?:0|[1-9][0-9]{0,5})"),  # "row,col" or "[row,col]"
}
FORM_BOOLEANS = ("true", "false")


@dataclass(frozen=True)
class ConvolveRequest:
    """The validated parameters of one /api/convolve call."""

    kernel: torch.Tensor  # (k, k) float32
    kernel_name: str | None
    stride: int
    padding: int
    mode: str
    size: int
    pixel: tuple[int, int] | None
    include_input: bool = True


# ---------------------------------------------------------------- validation (422 with a clear message)


def parse_kernel(value: Any) -> tuple[torch.Tensor, str | None]:
    """A kernel from a list of lists of numbers (3x3 or 5x5) or a kernel name ('sobel_x', 'gaussian:n=5,sigma=2')."""
    if isinstance(value, str):
        return _named_kernel(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput("kernel must be a 3x3 or 5x5 list of lists of numbers, e.g. [[0,1,0],[1,-4,1],[0,1,0]], "
                           "or a kernel name such as 'sobel_x'")
    rows = []
    for r, row in enumerate(value, 1):
        if not isinstance(row, (list, tuple)):
            raise InvalidInput(f"kernel row {r} is {row!r}, not a list of numbers: give a list of rows")
        rows.append([_weight(v, r, c) for c, v in enumerate(row, 1)])
    n = len(rows)
    ragged = [r for r, row in enumerate(rows, 1) if len(row) != n]
    if ragged:
        r = ragged[0]
        raise InvalidInput(f"kernel row {r} has {len(rows[r - 1])} numbers but the kernel has {n} rows: a kernel is "
                           "square, every row as long as the number of rows (3x3 or 5x5)")
    if n not in KERNEL_SIZES:
        raise InvalidInput(f"the kernel is {n}x{n}; the playground takes 3x3 or 5x5 kernels")
    return torch.tensor(rows, dtype=torch.float32), None


def _weight(v: Any, r: int, c: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidInput(f"kernel[{r}][{c}] is {v!r}, not a number")
    if not math.isfinite(v):
        raise InvalidInput(f"kernel[{r}][{c}] is {v!r}: weights must be finite numbers (no NaN or infinity)")
    if abs(v) > MAX_WEIGHT:
        raise InvalidInput(f"kernel[{r}][{c}] is {v!r}: keep weights between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return float(v)


def _named_kernel(spec: str) -> tuple[torch.Tensor, str]:
    from cnnlab.conv.kernels import parse_kernel as parse_named

    try:
        label, k = parse_named(spec.strip())
    except CnnlabError as exc:
        raise InvalidInput(str(exc)) from None
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] not in KERNEL_SIZES:
        raise InvalidInput(f"kernel {label} is {'x'.join(map(str, k.shape))}; the playground takes 3x3 or 5x5 "
                           "kernels")
    if not re.search(KERNEL_NAME_PATTERN, spec):  # readable, but not as the API writes it (spaces, order)
        raise InvalidInput(f"kernel {spec[:80]!r}: write it as a name with its parameters in order and no spaces, "
                           "e.g. sobel_x, box_blur:n=5, gaussian:n=5,sigma=1.5 or laplacian:neighbours=8")
    return k.float(), label


def _as_int(v: Any) -> int:
    """An int from JSON (an integral float too, as JSON Schema counts 2.0 an integer) or from a form's text
    already checked against its pattern; bools and other floats are refused."""
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        return int(v)
    raise ValueError(v)


def _int_in(name: str, value: Any, allowed: range, form: bool) -> int:
    wrong = InvalidInput(f"{name} must be an integer from {allowed.start} to {allowed.stop - 1}, got {value!r}")
    if form != isinstance(value, str) or (form and not re.search(FORM_PATTERNS[name], value)):
        raise wrong  # a form field is text; JSON has numbers
    try:
        number = _as_int(value)
    except ValueError:
        raise wrong from None
    if number not in allowed:
        raise wrong
    return number


def _pixel(value: Any, form: bool) -> tuple[int, int] | None:
    wrong = InvalidInput(f"pixel must be [row, column] of an output pixel, two integers; got {value!r}")
    if value is ABSENT:
        return None
    if form:
        if not isinstance(value, str) or not re.search(FORM_PATTERNS["pixel"], value):
            raise wrong
        parts: Any = value.strip().strip("[]").split(",")
    else:
        parts = value
    if isinstance(parts, list) and len(parts) == 2:
        try:
            return _as_int(parts[0]), _as_int(parts[1])
        except ValueError:
            pass
    raise wrong


def _form_kernel(text: Any) -> Any:
    """A form's kernel field: a kernel name, or a grid written as JSON text (checked against the pattern)."""
    if not isinstance(text, str):
        raise InvalidInput("kernel must be text in a form: a kernel name, or the kernel as JSON")
    if text.strip().startswith("["):
        try:
            grid = json.loads(text)
        except (ValueError, RecursionError):
            raise InvalidInput(f"kernel {text!r} is not valid JSON: write it like [[0,1,0],[1,-4,1],[0,1,0]]") \
                from None
        parse_kernel(grid)  # its own message for a ragged, wrong-sized or out-of-range grid
        if not re.search(KERNEL_TEXT_PATTERN, text):
            raise InvalidInput(f"kernel {text[:80]!r}: write each weight as a plain decimal number from "
                               f"-{MAX_WEIGHT:g} to {MAX_WEIGHT:g}, e.g. [[0,1,0],[1,-4,1],[0,1,0]]")
        return grid
    return text


def _include_input(value: Any, form: bool) -> bool:
    if value is ABSENT:
        return True
    if form and value in FORM_BOOLEANS:
        return value == "true"
    if not form and isinstance(value, bool):
        return value
    raise InvalidInput(f"include_input must be {'true or false' if form else 'a boolean'}, got {value!r}")


def parse_request(fields: dict[str, Any], form: bool = False) -> ConvolveRequest:
    """Validate the kernel, stride, padding, mode, size, pixel and include_input of a request: JSON values, or a
    form's text (`form`), each held to what the OpenAPI schema states."""
    kernel = fields.get("kernel", DEFAULT_KERNEL)
    if kernel is None:
        raise InvalidInput("no kernel: give 'kernel' as a 3x3 or 5x5 list of lists of numbers, or a kernel name")
    k, name = parse_kernel(_form_kernel(kernel) if form else kernel)
    mode = fields.get("mode", "gray")
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return ConvolveRequest(
        kernel=k, kernel_name=name,
        stride=_int_in("stride", fields.get("stride", "1" if form else 1), STRIDES, form),
        padding=_int_in("padding", fields.get("padding", "0" if form else 0), PADDINGS, form),
        mode=mode, size=_int_in("size", fields.get("size", str(DEFAULT_SIZE) if form else DEFAULT_SIZE), SIZES, form),
        pixel=_pixel(fields.get("pixel", ABSENT), form),
        include_input=_include_input(fields.get("include_input", ABSENT), form),
    )


# ---------------------------------------------------------------- the image


def sample_photo(name: str, size: int) -> torch.Tensor:
    """A photo bundled with scikit-learn ('sample' = china.jpg, or 'sample:flower.jpg') as (3, H, W) in [0, 1]."""
    from cnnlab.conv.images import sample_image

    photo = name.partition(":")[2] or "china.jpg"
    try:
        return sample_image(photo, size=size)
    except CnnlabError as exc:
        raise InvalidInput(str(exc)) from None


def photo_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """An uploaded image as (3, H, W) in [0, 1], shrunk so its longer side is at most `size` (and no side below the
    largest kernel's)."""
    import numpy as np

    from cnnlab.data.images import to_8bit

    img = to_8bit(img, 3)  # any mode: 16-bit, palette, transparency, CMYK
    scale = size / max(img.size)
    if scale < 1:  # the box filter averages whole blocks: no aliasing on big reductions
        # No side shrunk below the largest kernel, so a long thin photo can still be convolved.
        side = max(KERNEL_SIZES)
        img = img.resize((max(min(side, img.width), round(img.width * scale)),
                          max(min(side, img.height), round(img.height * scale))), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------- the convolution


def convolve(image: torch.Tensor, req: ConvolveRequest) -> dict[str, Any]:
    """Filter a (3, H, W) image as the request says; the output PNG, its size worked out, and the clicked pixel."""
    from cnnlab.conv.images import to_gray
    from cnnlab.conv.kernels import apply_kernel

    x = to_gray(image) if req.mode == "gray" else image
    c, h, w = x.shape
    size = _sizes(h, w, req)
    out = apply_kernel(x, req.kernel, stride=req.stride, padding=req.padding,
                       channels="summed" if req.mode == "summed" else "per_channel")
    out = out[None] if out.dim() == 2 else out  # (C', H', W')
    shown, scaling = display_scale(out, float(req.kernel.sum()))
    result: dict[str, Any] = {
        "kernel": req.kernel.tolist(),
        "kernel_name": req.kernel_name,
        "kernel_sum": round(float(req.kernel.sum()), 6),
        "stride": req.stride,
        "padding": req.padding,
        "mode": req.mode,
        "input": {"height": h, "width": w, "channels": c},
        "output": {
            "height": out.shape[1], "width": out.shape[2], "channels": out.shape[0],
            "min": float(out.min()), "max": float(out.max()),
            "image": png_data_url(to_uint8(shown)),
            "scaling": scaling,
            "resolution": "the PNG has one pixel per output value; the page shows it at the input's width "
                          "with nearest-neighbour scaling",
        },
        "size": size,
    }
    if req.include_input:
        result["input"]["image"] = png_data_url(to_uint8(x))
    if req.pixel is not None:
        result["pixel"] = explain_pixel(x, out, req)
    return result


def _sizes(h: int, w: int, req: ConvolveRequest) -> dict[str, Any]:
    from cnnlab.conv.sizes import FORMULA, explain_output_size, output_size

    k = req.kernel.shape[0]
    try:
        oh, ow = (output_size(n, k, req.padding, req.stride) for n in (h, w))
        return {
            "formula": FORMULA,
            "height": oh, "width": ow,
            "height_worked": explain_output_size(h, k, req.padding, req.stride),
            "width_worked": explain_output_size(w, k, req.padding, req.stride),
        }
    except CnnlabError as exc:
        raise InvalidInput(str(exc)) from None


def display_scale(out: torch.Tensor, kernel_sum: float) -> tuple[torch.Tensor, str]:
    """Output values -> [0, 1] for display, and a sentence saying how.

    A kernel whose weights sum to about 1 or more (identity, blurs, sharpen) keeps brightness: values are clipped
    to [0, 1]. One that sums to about 0 or less (edges, gradients) gives signed values around 0: they are shown
    on a symmetric scale, mid-gray = 0.
    """
    if kernel_sum >= 0.5:
        return out.clamp(0, 1), "values clipped to [0, 1]: black = 0 or less, white = 1 or more"
    peak = float(out.abs().max())
    if peak == 0:
        return torch.full_like(out, 0.5), "every output value is 0: shown as mid-gray"
    return 0.5 + 0.5 * out / peak, (f"symmetric scale: mid-gray = 0, white = +{peak:.4g}, black = -{peak:.4g} "
                                    "(the largest absolute output value)")


def explain_pixel(x: torch.Tensor, out: torch.Tensor, req: ConvolveRequest) -> dict[str, Any]:
    """Output pixel (i, j): per channel, the window of the padded input under the kernel, the products, the sum."""
    from cnnlab.conv.ops import pad2d

    i, j = req.pixel  # type: ignore[misc]
    oh, ow = out.shape[1:]
    if not (0 <= i < oh and 0 <= j < ow):
        raise NotFound(f"pixel ({i}, {j}) is outside the {oh}x{ow} output: use 0 <= row < {oh}, "
                       f"0 <= column < {ow}")
    k = req.kernel
    n = k.shape[0]
    r0, c0 = i * req.stride, j * req.stride  # top-left of the window in the padded input
    xp = pad2d(x, req.padding)
    names = ["gray"] if x.shape[0] == 1 else ["red", "green", "blue"]
    channels = []
    for ch, name in enumerate(names):
        window = xp[ch, r0:r0 + n, c0:c0 + n]
        products = window * k
        channels.append({"channel": name, "window": _rounded(window), "products": _rounded(products),
                         "sum": float(products.sum())})
    if req.mode == "summed":
        value: float | list[float] = sum(c["sum"] for c in channels)
        combine = "The three channel sums are added into one output value (as one output channel of a conv layer)"
    elif req.mode == "rgb":
        value = [c["sum"] for c in channels]
        combine = "Each colour channel is filtered on its own: three separate sums, one per output channel, " \
                  "not added together"
    else:
        value = channels[0]["sum"]
        combine = "One channel (gray): one sum"
    actual = out[:, i, j].tolist()
    return {
        "i": i, "j": j, "row0": r0, "col0": c0,
        "window_rows": [r0, r0 + n], "window_cols": [c0, c0 + n],
        "padded_input": f"The input padded by {req.padding} on every side is "
                        f"{xp.shape[1]}x{xp.shape[2]}; the window starts at (i*s, j*s) = ({r0}, {c0})",
        "channels": channels, "combine": combine, "value": value, "output_value": actual,
        "text": _pixel_text(i, j, r0, c0, n, k, channels, req.mode),
    }


def _rounded(t: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in t]


def _num(v: float) -> str:
    text = f"{v:.3f}".rstrip("0").rstrip(".") if not float(v).is_integer() else str(int(v))
    return f"({text})" if v < 0 else text


def _pixel_text(i: int, j: int, r0: int, c0: int, n: int, k: torch.Tensor, channels: list[dict], mode: str) -> str:
    lines = []
    for ch in channels:
        pairs = " + ".join(f"{_num(a)}*{_num(b)}" for a, b in zip(sum(ch["window"], []), k.flatten().tolist()))
        label = "" if ch["channel"] == "gray" else f"[{ch['channel']}]"
        lines.append(f"out{label}[{i}, {j}] = sum(Xpad{label}[{r0}:{r0 + n}, {c0}:{c0 + n}] * K)")
        lines.append(f"  = {pairs}")
        lines.append(f"  = {ch['sum']:.4g}")
    if mode == "summed":
        lines.append(f"out[{i}, {j}] = " + " + ".join(_num(c["sum"]) for c in channels)
                     + f" = {sum(c['sum'] for c in channels):.4g}")
    return "\n".join(lines)
