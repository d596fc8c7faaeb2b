"""Output sizes: the formula by hand, against the shapes torch produces, and the worked text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.conv import Layer, explain_output_size, explain_output_sizes, output_size, output_sizes, parse_layer
from cnnlab.errors import CnnlabError
from cnnlab.inspect.summary import output_size_formula


@pytest.mark.parametrize(
    "n, k, p, s, d, expected",
    [
        (227, 11, 0, 4, 1, 55),  # AlexNet conv1: (227 - 11) / 4 + 1
        (28, 5, 2, 1, 1, 28),  # LeNet conv1 with 'same' padding
        (28, 2, 0, 2, 1, 14),  # 2x2 pooling halves
        (7, 2, 0, 2, 1, 3),  # floor(5 / 2) + 1: the last row is dropped
        (32, 3, 1, 2, 1, 16),
        (28, 3, 0, 1, 2, 24),  # dilation 2 makes a 3x3 kernel span 5
        (5, 5, 0, 1, 1, 1),  # the kernel exactly fits once
    ],
)
def test_output_size_by_hand(n: int, k: int, p: int, s: int, d: int, expected: int) -> None:
    assert output_size(n, k, p, s, d) == expected
    # and it agrees with the summary's formula that other parts of cnnlab already print
    assert output_size_formula(n, k, p, s, d)[1] == expected


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6), p=st.integers(0, 3), s=st.integers(1, 4), d=st.integers(1, 3), extra=st.integers(0, 12)
)
def test_output_size_is_the_shape_torch_produces(k: int, p: int, s: int, d: int, extra: int) -> None:
    n = max(1, d * (k - 1) + 1 - 2 * p) + extra
    y = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert output_size(n, k, p, s, d) == y.shape[-1]


def test_explain_alexnet_first_layer() -> None:
    text = explain_output_size(227, 11, stride=4)
    assert text.splitlines() == [
        "n = 227, k = 11, p = 0, s = 4, d = 1",
        "out = floor((n + 2p - d(k-1) - 1) / s) + 1",
        "    = floor((227 + 2*0 - 1*(11-1) - 1) / 4) + 1",
        "    = floor(216 / 4) + 1",
        "    = 54 + 1",
        "    = 55",
    ]


def test_explain_says_when_the_floor_drops_pixels() -> None:
    text = explain_output_size(7, 2, stride=2)
    assert "floor(5 / 2) + 1" in text and text.splitlines()[-2].endswith("= 3")
    assert "remainder 1" in text
    assert "remainder" not in explain_output_size(8, 2, stride=2)


def test_chain_alexnet_front() -> None:
    layers = ["conv1:k=11,s=4", "pool1:k=3,s=2", "conv2:k=5,p=2", "pool2:k=3,s=2"]
    assert output_sizes(227, layers) == [55, 27, 27, 13]
    # the same chain as Layer objects, dicts and tuples (kernel, stride, padding, dilation)
    assert output_sizes(227, [Layer(11, 4), {"kernel": 3, "stride": 2}, (5, 1, 2), (3, 2)]) == [55, 27, 27, 13]
    # and the same as a real stack of torch layers
    x = torch.zeros(1, 3, 227, 227)
    x = F.conv2d(x, torch.zeros(96, 3, 11, 11), stride=4)
    assert x.shape[-1] == 55
    x = F.max_pool2d(x, 3, 2)
    x = F.conv2d(x, torch.zeros(8, 96, 5, 5), padding=2)
    x = F.max_pool2d(x, 3, 2)
    assert x.shape[-1] == 13
    table = explain_output_sizes(227, layers)
    assert "conv1" in table and "floor(216/4) + 1 = 55" in table and "floor(24/2) + 1 = 13" in table


def test_parse_layer() -> None:
    assert parse_layer("pool1:k=3,s=2") == Layer(kernel=3, stride=2, name="pool1")
    assert parse_layer("k=5, p=2, d=2") == Layer(kernel=5, padding=2, dilation=2)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: output_size(3, 5), "larger than the padded input"),
        (lambda: output_size(5, 3, dilation=3), "span 7"),
        (lambda: output_size(28, 3, stride=0), "stride s must be an integer >= 1"),
        (lambda: output_size(28, 3.0), "kernel k must be an integer"),
        (lambda: output_size(28, 3, padding=-1), "padding p must be"),
        (lambda: parse_layer("k3"), "k=3,s=2"),
        (lambda: parse_layer("s=2"), "no kernel size"),
        (lambda: parse_layer("k=a"), "not an integer"),
        (lambda: output_sizes(10, ["k=3", "k=9"]), "layer 2"),
    ],
)
def test_bad_sizes_give_clear_errors(call, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        call()
    assert words in str(info.value)
