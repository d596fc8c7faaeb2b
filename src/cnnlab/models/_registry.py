"""One model registry: `register_model`, `get_model`, `list_models`, in the style of timm and torchvision."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

from cnnlab.errors import CnnlabError

InputSize = tuple[int, int, int]  # (channels, height, width)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model before building it."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: InputSize  # default (C, H, W) the model was designed for
    num_classes: int  # default number of outputs (1 means a single logit for two classes)
    description: str  # one line
    source: str  # paper or tutorial it comes from
    mean: tuple[float, ...] | None = None  # normalization the model needs (pretrained weights), else the dataset's
    std: tuple[float, ...] | None = None
    fixed_input: bool = False  # True when the input size cannot change (e.g. a hard-coded flatten)
    tags: tuple[str, ...] = ()
    params: int | None = None  # parameters at the default size, where building the model just to count is costly


@dataclass
class ModelSpec:
    """How a built model was made: enough to rebuild it from a checkpoint."""

    name: str
    num_classes: int
    input_size: InputSize
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs_are_probs(self) -> bool:
        """Whether the model ends in a softmax (the tutorials' `final_softmax`): its outputs are probabilities."""
        return bool(self.kwargs.get("final_softmax"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(d["name"], int(d["num_classes"]), tuple(d["input_size"]), dict(d.get("kwargs", {})))


_REGISTRY: dict[str, ModelInfo] = {}


class UnknownModelError(CnnlabError, KeyError):
    """Raised for a model name the registry does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


def register_model(
    name: str,
    *,
    input_size: InputSize,
    num_classes: int = 10,
    description: str,
    source: str,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    fixed_input: bool = False,
    tags: tuple[str, ...] = (),
    params: int | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder `fn(num_classes, input_size, **kwargs) -> nn.Module` to the registry."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = ModelInfo(
            name, builder, tuple(input_size), num_classes, description, source, mean, std, fixed_input, tags, params
        )
        return builder

    return add


def unregister_model(name: str) -> None:
    """Remove a model from the registry (for tests and plug-ins that replace one)."""
    _REGISTRY.pop(name, None)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style pattern."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; an unknown name lists the closest ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `cnnlab models` to see all {len(_REGISTRY)} models."
        ) from None


def get_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    input_size: InputSize | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; `input_size` is (C, H, W) or (H, W), `in_chans` overrides its channels."""
    info = get_model_info(name)
    size = resolve_input_size(info, in_chans, input_size)
    classes = info.num_classes if num_classes is None else int(num_classes)
    if classes < 1:
        raise CnnlabError(f"num_classes must be at least 1, got {classes}")
    model = info.builder(num_classes=classes, input_size=size, **kwargs)
    model.spec = ModelSpec(name, classes, size, dict(kwargs))
    return model


def resolve_input_size(
    info: ModelInfo, in_chans: int | None = None, input_size: InputSize | tuple[int, int] | None = None
) -> InputSize:
    """Merge the model's default (C, H, W) with the caller's overrides."""
    c, h, w = info.input_size
    if input_size is not None:
        if len(input_size) == 3:
            c, h, w = input_size
        elif len(input_size) == 2:
            h, w = input_size
        else:
            raise CnnlabError(f"input_size must be (C, H, W) or (H, W), got {tuple(input_size)}")
    if in_chans is not None:
        c = in_chans
    size = (int(c), int(h), int(w))
    if info.fixed_input and size[1:] != info.input_size[1:]:
        raise CnnlabError(
            f"model {info.name!r} only takes {info.input_size[1]}x{info.input_size[2]} inputs, got {h}x{w}"
        )
    return size


def parse_input_size(text: str) -> InputSize | tuple[int, int]:
    """Parse '1x28x28', '3,32,32' or '28x28' into a tuple of ints."""
    parts = text.lower().replace(",", "x").replace("*", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise CnnlabError(f"cannot read input size {text!r}: write it as CxHxW, e.g. 1x28x28") from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise CnnlabError(f"cannot read input size {text!r}: write it as CxHxW, e.g. 1x28x28")
    if len(dims) == 3 and dims[2] in (1, 3, 4) and min(dims[:2]) > 4 and dims[0] not in (1, 3, 4):
        h, w, c = dims  # NumPy and PIL write images height x width x channels; torch (and cnnlab) channels first
        raise CnnlabError(f"input size {text!r} looks like height x width x channels; cnnlab writes it channels "
                          f"first, CxHxW: use {c}x{h}x{w}")
    return dims


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
