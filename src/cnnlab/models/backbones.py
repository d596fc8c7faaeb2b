"""Torchvision backbones for transfer learning: registry entries, head helpers, freezing, embeddings.

Every builder takes `weights`: None/'none' (random init, the default), 'DEFAULT' or a torchvision weight name
(e.g. 'IMAGENET1K_V1': pretrained, downloaded into the torch cache), or a path to a local state dict. The head is
built for `num_classes`; a file's head is loaded only when its shape fits. Built models carry `head_name`,
`head_names` (Inception v3 adds 'AuxLogits.fc') and `weights_info` (see `cnnlab.models.weights`).

Inception v3 keeps torchvision's auxiliary classifier by default (`aux_logits=True`, which needs 299x299 inputs):
in training mode it returns (logits, aux_logits), and cnnlab.training's loss is `criterion(logits, y) +
0.4 * criterion(aux, y)` (training/loss.py). In eval mode it returns the logits alone.

Input size and normalization are those of the ImageNet weights (`weights.transforms()`: crop size, mean, std);
they are written here rather than read from torchvision at import time because importing torchvision.models
costs about a second on every `import cnnlab`; tests/test_backbones.py checks they match torchvision's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models._registry import InputSize, get_model_info, list_models, register_model
from cnnlab.models.weights import is_random_init, load_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TAGS = ("torchvision", "pretrained")


@dataclass(frozen=True)
class Backbone:
    """What cnnlab needs to know about a torchvision architecture beyond its builder."""

    heads: tuple[str, ...]  # qualified names of the final Linear layers, main head first
    min_size: int  # smallest height/width the network accepts (torchvision's weights meta `min_size`)


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(("fc",), 1),
    "resnet50": Backbone(("fc",), 1),
    "vgg16": Backbone(("classifier.6",), 32),
    "inception_v3": Backbone(("fc", "AuxLogits.fc"), 75),
    "mobilenet_v3_small": Backbone(("classifier.3",), 1),
    "efficientnet_b0": Backbone(("classifier.1",), 1),
    "convnext_tiny": Backbone(("classifier.2",), 32),
}
INCEPTION_AUX_MIN_SIZE = 299  # the auxiliary head's 5x5 conv needs Mixed_6e at 17x17, i.e. a 299x299 input


def build_backbone(
    arch: str, num_classes: int, input_size: InputSize, weights: str | None = None, **tv_kwargs: Any
) -> nn.Module:
    """Build torchvision's `arch` with a `num_classes` head, then load `weights` (see module docstring)."""
    import torchvision.models  # here, not at the top: importing it costs about a second

    c, h, w = input_size
    if c != 3:
        raise CnnlabError(f"{arch} takes 3-channel (RGB) images, got {c} channels; convert gray images to RGB")
    least = INCEPTION_AUX_MIN_SIZE if tv_kwargs.get("aux_logits") else BACKBONES[arch].min_size
    if min(h, w) < least:
        hint = ""
        if tv_kwargs.get("aux_logits"):
            hint = (f"; without its auxiliary head it takes down to {BACKBONES[arch].min_size}x"
                    f"{BACKBONES[arch].min_size}: --model-kwargs '{{\"aux_logits\": false}}'")
        raise CnnlabError(f"{arch} needs inputs of at least {least}x{least}, got {h}x{w}{hint}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **tv_kwargs)
    model.head_names = tuple(n for n in BACKBONES[arch].heads if _has_module(model, n))
    model.head_name = model.head_names[0]
    model.weights_info = load_weights(model, arch, weights, model.head_names)
    return model


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        return isinstance(model.get_submodule(name), nn.Module)
    except AttributeError:
        return False


def _entry(name: str, *, size: int, params: int, description: str, source: str) -> Callable[[Callable], Callable]:
    """`register_model` with what all backbones share: ImageNet classes and normalization, square input; `params`
    with 1000 classes, so `cnnlab models` need not import torchvision (test_backbones checks the counts)."""
    return register_model(
        name,
        input_size=(3, size, size),
        num_classes=1000,
        description=description,
        source=source,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        tags=TAGS,
        params=params,
    )


@_entry(
    "resnet18",
    size=224,
    params=11_689_512,
    description="ResNet-18 (torchvision): basic residual blocks; --weights DEFAULT for ImageNet",
    source="He et al. 2016, Deep Residual Learning for Image Recognition",
)
def resnet18(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """ResNet-18; head `fc`."""
    return build_backbone("resnet18", num_classes, input_size, weights)


@_entry(
    "resnet50",
    size=224,
    params=25_557_032,
    description="ResNet-50 (torchvision): bottleneck residual blocks; --weights DEFAULT for ImageNet",
    source="He et al. 2016, Deep Residual Learning for Image Recognition",
)
def resnet50(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """ResNet-50; head `fc`."""
    return build_backbone("resnet50", num_classes, input_size, weights)


@_entry(
    "vgg16",
    size=224,
    params=138_357_544,
    description="VGG-16 (torchvision): 13 3x3 convs, 3 big Linear layers; --weights DEFAULT for ImageNet",
    source="Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition",
)
def vgg16(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """VGG-16 without BatchNorm; head `classifier.6`."""
    return build_backbone("vgg16", num_classes, input_size, weights)


@_entry(
    "inception_v3",
    size=299,
    params=27_161_264,
    description="Inception v3 (torchvision): factorized convs, auxiliary head; --weights DEFAULT",
    source="Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision",
)
def inception_v3(
    num_classes: int,
    input_size: InputSize,
    weights: str | None = None,
    aux_logits: bool = True,
    transform_input: bool = True,
) -> nn.Module:
    """Inception v3; heads `fc` and, with `aux_logits`, `AuxLogits.fc` (train mode then returns both logits)."""
    # aux_logits is on by default, as in torchvision and the paper: the auxiliary classifier regularizes training
    # (its loss weighs 0.4, see cnnlab/training/loss.py). It needs 299x299 inputs; aux_logits=False allows down to 75x75.
    # transform_input rescales ImageNet-normalized input to the [-1, 1] range Google's weights were trained on;
    # on for random init too, so a checkpoint rebuilds to the same function whatever `weights` it started from.
    return build_backbone(
        "inception_v3", num_classes, input_size, weights,
        aux_logits=aux_logits, transform_input=transform_input,
        # Its truncated-normal init takes a second and loaded weights overwrite it (torchvision skips it too).
        init_weights=is_random_init(weights),
    )


@_entry(
    "mobilenet_v3_small",
    size=224,
    params=2_542_856,
    description="MobileNet V3 Small (torchvision): for phones; --weights DEFAULT for ImageNet",
    source="Howard et al. 2019, Searching for MobileNetV3",
)
def mobilenet_v3_small(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """MobileNet V3 Small; head `classifier.3`."""
    return build_backbone("mobilenet_v3_small", num_classes, input_size, weights)


@_entry(
    "efficientnet_b0",
    size=224,
    params=5_288_548,
    description="EfficientNet-B0 (torchvision): MBConv + squeeze-excite; --weights DEFAULT for ImageNet",
    source="Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
)
def efficientnet_b0(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """EfficientNet-B0; head `classifier.1`."""
    return build_backbone("efficientnet_b0", num_classes, input_size, weights)


@_entry(
    "convnext_tiny",
    size=224,
    params=28_589_128,
    description="ConvNeXt-Tiny (torchvision): 7x7 depthwise, LayerNorm; --weights DEFAULT for ImageNet",
    source="Liu et al. 2022, A ConvNet for the 2020s",
)
def convnext_tiny(num_classes: int, input_size: InputSize, weights: str | None = None) -> nn.Module:
    """ConvNeXt-Tiny; head `classifier.2`."""
    return build_backbone("convnext_tiny", num_classes, input_size, weights)


def pretrained_backbones() -> list[str]:
    """Zoo models with a replaceable head and ImageNet weights: torchvision's and EfficientNet-Lite0."""
    return [n for n in list_models() if "pretrained" in get_model_info(n).tags]


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of the model's classification heads (main first)."""
    names = getattr(model, "head_names", None)
    if not names:
        spec = getattr(model, "spec", None)
        raise CnnlabError(
            f"{spec.name if spec else 'this model'} has no replaceable head: --freeze-backbone, --unfreeze-after "
            f"and --feature-extraction work with the pretrained backbones ({', '.join(pretrained_backbones())})"
        )
    return tuple(names)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the classification head(s): what a feature-extraction run trains."""
    return [p for name in head_names(model) for p in model.get_submodule(name).parameters()]


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the head(s)."""
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def freeze_backbone(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) everything but the head(s): parameters and BatchNorm statistics; heads stay trainable.

    Frozen means unchanged by training, buffers included: the backbone's BatchNorm layers are put in eval mode, so
    they normalize with their stored running statistics and stop updating them (torchvision's and Keras' practice
    for feature extraction: a small dataset's batch statistics would otherwise drift away from the ones the
    pretrained weights were trained with). `model.train()` switches them back to training mode, so call this
    after it (cnnlab.training does, every epoch). Unfreezing puts them back in the model's own mode.
    Optimizers skip parameters whose `.grad` is None, so a frozen layer keeps its values even when passed to the
    optimizer, weight decay included.
    """
    for p in backbone_parameters(model):
        p.requires_grad_(not frozen)
    for p in head_parameters(model):
        p.requires_grad_(True)
    in_head = tuple(n + "." for n in head_names(model))
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (name + ".").startswith(in_head):
            m.train(model.training and not frozen)
    return model


def headless(model: nn.Module) -> nn.Module:
    """The backbone alone: the same layers (weights shared, nothing copied) with the main head replaced by an
    identity, so that its output is the image embedding `embed` reads. The model itself is left as it is."""
    path = head_names(model)[0].split(".")
    top = copy.copy(model)
    parent = top
    for name in path[:-1]:  # copy the modules along the head's path, so the replacement touches only the copies
        parent._modules = dict(parent._modules)
        child = copy.copy(parent._modules[name])
        parent._modules[name] = child
        parent = child
    parent._modules = dict(parent._modules)
    parent._modules[path[-1]] = nn.Identity()
    return top


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features the main head receives for `x` (N, D): the backbone's image embedding."""
    captured: list[torch.Tensor] = []
    # A pre-hook reads the head's input without changing the model, so it is safe to call at any time.
    hook = model.get_submodule(head_names(model)[0]).register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0]
