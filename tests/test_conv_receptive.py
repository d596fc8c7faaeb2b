"""Receptive fields: the layer-by-layer formula against an independent measure (the input pixels where the gradient
of one unit is not zero), on random chains of layers and on the zoo's networks."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnlab
from cnnlab.conv import Layer, explain_receptive_fields, model_layers, output_sizes, receptive_fields
from cnnlab.errors import CnnlabError


def gradient_rows(model: nn.Module, n: int, unit: int, channels: int = 1) -> tuple[int, int] | None:
    """The input rows [first, last + 1) where the gradient of output unit (unit, unit), summed over its channels, is
    not zero; None when no row is."""
    x = torch.ones(1, channels, n, n, requires_grad=True)
    model(x)[0, :, unit, unit].sum().backward()
    rows = (x.grad[0].abs().sum(0) != 0).any(dim=1).nonzero().flatten()
    return (int(rows.min()), int(rows.max()) + 1) if len(rows) else None


def chain(layers: list[Layer]) -> nn.Sequential:
    """Conv layers with all-positive weights and average pools: every unit passes gradient to all of its field."""
    modules = []
    for i, layer in enumerate(layers):
        if i % 2:
            modules.append(nn.AvgPool2d(layer.kernel, layer.stride, min(layer.padding, layer.kernel // 2)))
        else:
            conv = nn.Conv2d(1, 1, layer.kernel, layer.stride, layer.padding, layer.dilation, bias=False)
            conv.weight.data.fill_(1.0)
            modules.append(conv)
    return nn.Sequential(*modules)


def as_built(layers: list[Layer]) -> list[Layer]:
    """The layers as `chain` builds them (a pool's padding is at most half its window, and it is not dilated)."""
    return [Layer(x.kernel, x.stride, min(x.padding, x.kernel // 2), 1) if i % 2 else x for i, x in enumerate(layers)]


LAYER = st.builds(Layer, kernel=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 2),
                  dilation=st.integers(1, 2))


@settings(max_examples=60, deadline=None)
@given(st.lists(LAYER, min_size=1, max_size=4), st.integers(12, 40), st.data())
def test_the_formula_is_where_the_gradient_is(layers: list[Layer], n: int, data: st.DataObject) -> None:
    layers = as_built(layers)
    try:
        sizes = output_sizes(n, layers)
    except CnnlabError:
        return  # a kernel larger than its padded input: no such network
    field = receptive_fields(layers, n)[-1]
    assert field.out == sizes[-1]
    unit = data.draw(st.integers(0, sizes[-1] - 1))
    measured = gradient_rows(chain(layers), n, unit)
    whole = field.span(unit)
    if 0 <= whole[0] and whole[1] <= n:  # inside the image: the field's first and last rows are taps
        assert measured == whole
    else:  # cut by the border: a dilated or strided field may start in one of its holes, never outside its span
        start, stop = field.span(unit, n)
        assert measured is None or start <= measured[0] < measured[1] <= stop


def test_lenet_and_fastnet_by_hand() -> None:
    lenet = receptive_fields(model_layers(cnnlab.get_model("lenet"), (1, 28, 28)), 28)
    assert [(f.name, f.size, f.jump, f.first, f.out) for f in lenet] == [
        ("conv1", 5, 1, -2, 28), ("pool1", 6, 2, -2, 14), ("conv2", 14, 2, -2, 10), ("pool2", 16, 4, -2, 5)]
    fastnet = receptive_fields(model_layers(cnnlab.get_model("fastnet"), (1, 28, 28)), 28)
    assert [f.size for f in fastnet] == [5, 9, 11, 19, 27]  # the global pool sees 27 of 28 rows: the floor drops one
    assert fastnet[-1].name == "pool" and fastnet[-1].span(0, 28) == (0, 27)


@pytest.mark.parametrize("name", ["lenet", "fastnet", "mnist_cnn", "cifar_net"])
def test_the_zoos_fields_are_where_the_gradient_is(name: str) -> None:
    """model_layers reads the layers in the order they run; each layer's middle unit matches its gradient, measured on
    a copy whose weights are positive and whose max pools average (a max passes gradient to one input only)."""
    model = cnnlab.get_model(name)
    size = model.spec.input_size
    layers = model_layers(model, size)
    measurable = copy.deepcopy(model).eval()
    for full, module in list(measurable.named_modules()):
        parent, _, child = full.rpartition(".")
        holder = measurable.get_submodule(parent) if parent else measurable
        if isinstance(module, nn.MaxPool2d):
            setattr(holder, child, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            setattr(holder, child, nn.AdaptiveAvgPool2d(module.output_size))
        elif isinstance(module, nn.Conv2d):
            module.weight.data.abs_()
            if module.bias is not None:
                module.bias.data.abs_()
    for layer, field in zip(layers, receptive_fields(layers, size[1])):
        outputs = {}
        hook = measurable.get_submodule(layer.name).register_forward_hook(lambda m, a, out: outputs.update(y=out))
        x = torch.ones(1, *size, requires_grad=True)
        measurable(x)
        hook.remove()
        unit = (field.out - 1) // 2
        outputs["y"][0, :, unit, unit].sum().backward()
        rows = (x.grad[0].abs().sum(0) != 0).any(dim=1).nonzero().flatten()
        assert (int(rows.min()), int(rows.max()) + 1) == field.span(unit, size[1]), (name, layer.name)


def test_the_table_works_each_layer_out() -> None:
    text = explain_receptive_fields(["conv1:k=3,p=1", "pool1:k=2,s=2", "conv2:k=3,p=1"], 32)
    assert "r = r_prev + d(k-1) * j_prev" in text
    assert "3 + 1*(2-1)*1 = 4" in text and "4 + 1*(3-1)*2 = 8" in text


def test_padding_moves_the_field_and_only_a_global_pool_is_read() -> None:
    assert receptive_fields([Layer(3, padding=1)])[0].first == -1
    with pytest.raises(CnnlabError, match="no fixed window"):
        model_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4)), (1, 16, 16))
