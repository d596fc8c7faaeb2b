"""The model zoo: every model builds, runs, learns, and the classic ones have the sizes their papers give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, get_model_info, list_models, register_model, unregister_model

ALL = list_models()
HEAVY = {"vgg16", "inception_v3"}  # a forward and backward pass at their input size takes seconds: the slow tier


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL])
def test_forward_backward_on_own_input_size(name: str) -> None:
    torch.manual_seed(0)
    info = get_model_info(name)
    model = cnnlab.get_model(name)
    model.train()
    x = torch.randn(2, *info.input_size)
    out = model(x)
    # Several outputs (Inception v3's main and auxiliary logits in training mode): every one must be a logits
    # batch, and the loss sums them all, so that each head's parameters must get a gradient below.
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    for o in outs:
        assert o.shape == (2, info.num_classes)
        assert torch.isfinite(o).all()
    sum(o.square().mean() for o in outs).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ALL)
def test_metadata_is_complete(name: str) -> None:
    info = get_model_info(name)
    assert len(info.input_size) == 3 and min(info.input_size) >= 1
    assert info.num_classes >= 1
    assert info.description and info.source
    model = cnnlab.get_model(name, num_classes=7)
    assert model.spec.name == name and model.spec.num_classes == 7


# Worked out by hand from the layer sizes: conv = out*(in*k*k) + out, linear = out*in + out.
HAND_COUNTS = {
    "mlp": (784 * 128 + 128) + (128 * 10 + 10),  # 101,770
    "lenet": (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 84 + 84) + (84 * 10 + 10),  # 37,106
    "lenet5": (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10),
    "cifar_net": (6 * 3 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10),
    "mnist_cnn": (32 * 9 + 32) + (64 * 32 * 9 + 64) + (128 * 64 * 9 + 128) + (2048 * 625 + 625) + (625 * 10 + 10),
    "small_convnet": (32 * 3 * 9 + 32)
    + (64 * 32 * 9 + 64)
    + (128 * 64 * 9 + 128)
    + (128 * 128 * 9 + 128)
    + (6272 * 512 + 512)
    + (512 * 1 + 1),  # 3,453,121, the figure Keras prints for this network
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
def test_parameter_counts_match_hand_counts(name: str) -> None:
    assert count_parameters(cnnlab.get_model(name)) == HAND_COUNTS[name]


def test_known_totals() -> None:
    assert HAND_COUNTS["lenet"] == 37106
    assert HAND_COUNTS["small_convnet"] == 3453121
    assert HAND_COUNTS["mnist_cnn"] == 1379557


@pytest.mark.parametrize(
    "name,size",
    [("lenet", (3, 32, 32)), ("mnist_cnn", (1, 32, 32)), ("lenet5", (1, 32, 32)), ("mlp", (3, 32, 32)),
     ("cifar_net", (1, 28, 28)), ("small_convnet", (3, 64, 64)), ("resnet9", (1, 28, 28)), ("fastnet", (3, 32, 32))],
)
def test_other_input_sizes_compute_their_flatten(name: str, size: tuple[int, int, int]) -> None:
    model = cnnlab.get_model(name, input_size=size, num_classes=5)
    assert model(torch.zeros(3, *size)).shape == (3, 5)


def test_lenet_flatten_for_3x32x32_is_576() -> None:
    model = cnnlab.get_model("lenet", input_size=(3, 32, 32))
    assert model.fc1.in_features == 16 * 6 * 6 == 576
    assert model.conv1.in_channels == 3


def test_in_chans_overrides_channels() -> None:
    model = cnnlab.get_model("cifar_net", in_chans=1)
    assert model.conv1.in_channels == 1 and model.spec.input_size == (1, 32, 32)


def test_selectable_activation_and_pooling() -> None:
    model = cnnlab.get_model("lenet5", act="tanh", pool="max")
    assert isinstance(model.act1, nn.Tanh) and isinstance(model.pool2, nn.MaxPool2d)
    with pytest.raises(ValueError, match="activation must be one of"):
        cnnlab.get_model("lenet5", act="swishy")


def test_unknown_model_lists_closest_names() -> None:
    with pytest.raises(CnnlabError) as err:
        cnnlab.get_model("lenett")
    assert "lenet" in str(err.value) and "cnnlab models" in str(err.value)


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet", input_size=(1, 28, 28), description="x", source="y")(lambda **kw: nn.Identity())


def test_register_and_list_pattern() -> None:
    @register_model("test_tiny_zz", input_size=(1, 8, 8), num_classes=3, description="tiny", source="test")
    def tiny(num_classes, input_size):
        return nn.Sequential(nn.Flatten(), nn.Linear(64 * input_size[0], num_classes))

    try:
        assert cnnlab.list_models("test_tiny_*") == ["test_tiny_zz"]
        assert cnnlab.get_model("test_tiny_zz")(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    finally:
        unregister_model("test_tiny_zz")
    assert cnnlab.list_models("test_tiny_*") == []
    assert set(cnnlab.list_models("lenet*")) == {"lenet", "lenet5"}


def test_mnist_cnn_third_pool_takes_7_to_4() -> None:
    model = cnnlab.get_model("mnist_cnn")
    x = model.block2(model.block1(torch.zeros(1, 1, 28, 28)))
    assert x.shape[-2:] == (7, 7)
    assert model.block3(x).shape[-2:] == (4, 4)


def test_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(CnnlabError, match="3x32x32 is too small for this model"):
        cnnlab.get_model("small_convnet", input_size=(3, 32, 32))
