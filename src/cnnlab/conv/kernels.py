"""Named image kernels (blur, sharpen, edges), applied to photos, followed by what a conv layer does next."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from cnnlab.conv.ops import conv2d, pool2d
from cnnlab.errors import CnnlabError

Channels = Literal["per_channel", "summed"]


# --- the kernels: each a small function returning a 2-D float tensor, laid out as it slides (cross-correlation) ---


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


MAX_SIZE = 99  # wider kernels are no photo filter anyone means, and n x n of them would be built first


def _size(n: object, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SIZE:
        raise CnnlabError(f"kernel size {what} must be an integer from 1 to {MAX_SIZE}, got {n!r}")
    return int(n)


def identity() -> torch.Tensor:
    """1 in the centre: the output is the input."""
    return _t([[0, 0, 0], [0, 1, 0], [0, 0, 0]])


def box_blur(n: int = 3) -> torch.Tensor:
    """The mean of the n x n neighbourhood: every weight 1/n^2."""
    n = _size(n)
    return torch.full((n, n), 1.0 / (n * n))


def gaussian(n: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """exp(-(x^2 + y^2) / (2 sigma^2)) sampled on an n x n grid around the centre, normalised to sum to 1."""
    n = _size(n)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise CnnlabError(f"gaussian sigma must be a positive number, got {sigma!r}")
    a = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    g = torch.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).float()  # summing to 1 keeps the average brightness


def sharpen() -> torch.Tensor:
    """5 x centre minus the 4 neighbours: the image plus its (negated) Laplacian."""
    return _t([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])


def sobel_x() -> torch.Tensor:
    """Horizontal gradient, smoothed vertically (1 2 1): bright on edges where the image gets brighter to the right."""
    return _t([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def sobel_y() -> torch.Tensor:
    """Vertical gradient, smoothed horizontally: bright where the image gets brighter downwards."""
    return _t([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])


def prewitt_x() -> torch.Tensor:
    """Horizontal gradient with equal (1 1 1) vertical smoothing."""
    return _t([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])


def prewitt_y() -> torch.Tensor:
    """Vertical gradient with equal horizontal smoothing."""
    return _t([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])


def laplacian(neighbours: int = 4) -> torch.Tensor:
    """Sum of the 4 (or 8) neighbours minus that many times the centre: second derivative, zero on flat areas."""
    if neighbours == 4:
        return _t([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    if neighbours == 8:
        return _t([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
    raise CnnlabError(f"laplacian neighbours must be 4 or 8, got {neighbours!r}")


def emboss() -> torch.Tensor:
    """The pixel plus its diagonal gradient (bottom right minus top left): makes the photo look like a relief."""
    return _t([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def outline() -> torch.Tensor:
    """8 x centre minus the 8 neighbours: zero on flat areas, large on every edge."""
    return _t([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])


def edge() -> torch.Tensor:
    """The 1x2 kernel [1, -1]: a pixel minus its right neighbour, nonzero only where the image changes."""
    return _t([[1, -1]])


# name -> factory, in the order `list_kernels()` gives them. The parameters are the factory's keyword arguments.
KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "identity": identity,
    "box_blur": box_blur,
    "gaussian": gaussian,
    "sharpen": sharpen,
    "sobel_x": sobel_x,
    "sobel_y": sobel_y,
    "prewitt_x": prewitt_x,
    "prewitt_y": prewitt_y,
    "laplacian": laplacian,
    "emboss": emboss,
    "outline": outline,
    "edge": edge,
}


@dataclass(frozen=True)
class KernelInfo:
    """A named kernel's description and its parameters with their defaults."""

    name: str
    description: str
    params: dict[str, object]


def list_kernels() -> list[str]:
    """The names `get_kernel` knows."""
    return list(KERNELS)


def kernel_info(name: str) -> KernelInfo:
    """The description and parameters (with defaults) of a named kernel."""
    import inspect

    factory = _factory(name)
    params = {p.name: p.default for p in inspect.signature(factory).parameters.values()}
    return KernelInfo(name, (factory.__doc__ or "").strip(), params)


def _factory(name: str) -> Callable[..., torch.Tensor]:
    try:
        return KERNELS[name]
    except (KeyError, TypeError):
        raise CnnlabError(f"unknown kernel {name!r}; known kernels: {', '.join(KERNELS)}") from None


def get_kernel(name: str, **params: object) -> torch.Tensor:
    """The named kernel as a 2-D float tensor, e.g. get_kernel('gaussian', n=7, sigma=2)."""
    factory = _factory(name)
    known = kernel_info(name).params
    unknown = sorted(set(params) - set(known))
    if unknown:
        options = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
        raise CnnlabError(f"kernel {name!r} has no parameter {', '.join(unknown)}; its parameters: {options}")
    return factory(**params)


def parse_kernel(spec: str) -> tuple[str, torch.Tensor]:
    """'gaussian:n=7,sigma=2' -> ('gaussian(n=7, sigma=2)', its tensor); a bare name uses the defaults."""
    name, _, body = spec.partition(":")
    params: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise CnnlabError(f"cannot read kernel {spec!r}: write parameters as name:key=value,key=value")
        params[key.strip()] = _number(value.strip(), spec)
    kernel = get_kernel(name.strip(), **params)
    label = name.strip() + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
    return label, kernel


def _number(text: str, spec: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise CnnlabError(f"cannot read kernel {spec!r}: {text!r} is not a number") from None


# --- applying a kernel to a photo ---


def as_image(image: object) -> torch.Tensor:
    """A float image: tensors stay (H, W) or (C, H, W), arrays and PIL images are read as (H, W[, C]); uint8 / 255."""
    if isinstance(image, torch.Tensor):
        t = image
    else:
        try:
            arr = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - anything unreadable gets one clear message
            raise CnnlabError(f"cannot read the image: {exc}") from None
        if arr.dtype == object or arr.size == 0:
            raise CnnlabError("the image must be a non-empty array of numbers")
        t = torch.from_numpy(np.array(arr))  # a copy: arrays from PIL are read-only
        if t.dim() == 3:  # arrays are stored height, width, channels; torch wants channels first
            t = t.permute(2, 0, 1)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif not t.is_floating_point():
        t = t.float()
    if t.dim() not in (2, 3):
        raise CnnlabError(f"an image is (H, W) gray or (C, H, W) channels-first, got shape {tuple(t.shape)}")
    return t


def apply_kernel(
    image: object,
    kernel: torch.Tensor | str,
    stride: int = 1,
    padding: int = 0,
    channels: Channels = "per_channel",
) -> torch.Tensor:
    """Slide the kernel over the image: 'per_channel' filters each channel alone (C maps), 'summed' adds them (1 map).

    'per_channel' is what an image editor does to a colour photo. 'summed' is what one output channel of a conv
    layer does: it filters every input channel (with the same 2-D kernel, or one kernel per channel if `kernel` is
    (C, kh, kw)) and adds the results into one feature map of shape (H', W').
    """
    x = as_image(image)
    k = get_kernel(kernel) if isinstance(kernel, str) else torch.as_tensor(kernel)
    k = k.to(x.dtype) if k.is_floating_point() else k.float()
    gray_in = x.dim() == 2
    x3 = x[None] if gray_in else x  # (C, H, W)
    c = x3.shape[0]
    if channels == "per_channel":
        if k.dim() != 2:
            raise CnnlabError(f"per-channel filtering takes one 2-D kernel, got shape {tuple(k.shape)}")
        # Each channel becomes its own one-channel image in a batch, so one 2-D kernel serves them all.
        out = conv2d(x3[:, None], k[None, None], stride=stride, padding=padding)[:, 0]
        return out[0] if gray_in else out
    if channels == "summed":
        if k.dim() == 2:
            weight = k.expand(c, *k.shape)[None]  # the same kernel in every input channel
        elif k.dim() == 3 and k.shape[0] == c:
            weight = k[None]
        else:
            raise CnnlabError(f"summed filtering of a {c}-channel image takes a 2-D or ({c}, kh, kw) kernel, "
                              f"got shape {tuple(k.shape)}")
        return conv2d(x3[None], weight, stride=stride, padding=padding)[0, 0]
    raise CnnlabError(f"channels must be 'per_channel' or 'summed', got {channels!r}")


# --- what a conv layer does after the convolution: an activation, then pooling ---


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0): negative responses become 0."""
    return x.clamp(min=0)


def leaky_relu(x: torch.Tensor, slope: float = 0.1) -> torch.Tensor:
    """x where x > 0, slope * x elsewhere: negatives shrink instead of vanishing."""
    return torch.where(x > 0, x, slope * x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)): squashes any value into (0, 1)."""
    return 1 / (1 + torch.exp(-x))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """(e^x - e^-x) / (e^x + e^-x): squashes into (-1, 1); torch.tanh computes it without overflowing."""
    return torch.tanh(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
}


def activate(fmap: torch.Tensor, name: str = "relu") -> torch.Tensor:
    """The named activation ('relu', 'leaky_relu' (slope 0.1), 'sigmoid', 'tanh') applied to every value."""
    try:
        fn = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise CnnlabError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
    return fn(torch.as_tensor(fmap))


def pool(
    fmap: torch.Tensor, size: int = 2, stride: int | None = None, mode: Literal["max", "avg"] = "max"
) -> torch.Tensor:
    """Max (or average) of each size x size block of a feature map (..., H, W); stride defaults to size."""
    return pool2d(torch.as_tensor(fmap), size, stride, mode=mode)


@dataclass
class FeatureStages:
    """A feature map after each step of conv -> activation -> pool."""

    conv: torch.Tensor
    activated: torch.Tensor
    pooled: torch.Tensor


def conv_activate_pool(
    image: object,
    kernel: torch.Tensor | str,
    activation: str = "relu",
    pool_size: int = 2,
    channels: Channels = "summed",
    padding: int = 0,
) -> FeatureStages:
    """The three steps of a conv block on one kernel: convolve, apply the activation, max-pool."""
    conv = apply_kernel(image, kernel, padding=padding, channels=channels)
    activated = activate(conv, activation)
    return FeatureStages(conv, activated, pool(activated, pool_size))
