"""The layer summary: shapes and formulas against hand-computed values, and the shape-mismatch message."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnlab
from cnnlab.inspect.summary import ShapeMismatchError, output_size_formula


def _rows(summary):
    return [(r.name, r.input_shape, r.output_shape) for r in summary.rows]


def test_lenet_rows_against_hand_computed_shapes() -> None:
    s = cnnlab.summary(cnnlab.get_model("lenet"), (1, 28, 28))
    assert _rows(s) == [
        ("conv1", (1, 28, 28), (6, 28, 28)),  # (28 + 2*2 - 5)/1 + 1 = 28
        ("relu1", (6, 28, 28), (6, 28, 28)),
        ("pool1", (6, 28, 28), (6, 14, 14)),  # (28 - 2)/2 + 1 = 14
        ("conv2", (6, 14, 14), (16, 10, 10)),  # (14 - 5)/1 + 1 = 10
        ("relu2", (16, 10, 10), (16, 10, 10)),
        ("pool2", (16, 10, 10), (16, 5, 5)),
        ("flatten", (16, 5, 5), (400,)),
        ("fc1", (400,), (84,)),
        ("relu3", (84,), (84,)),
        ("fc2", (84,), (10,)),  # no row for the softmax slot: an nn.Identity when the model outputs logits
    ]
    conv1 = s.rows[0]
    assert conv1.formulas == ["H,W: (28 + 2*2 - 5) / 1 + 1 = 28"]
    assert conv1.params == 6 * 25 + 6
    assert s.total_params == 37106 and s.trainable_params == 37106
    # mult-adds: conv1 28*28*6*25 + conv2 10*10*16*150 + fc1 400*84 + fc2 84*10
    assert s.macs == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 84 + 84 * 10
    text = str(s)
    assert "(28 + 2*2 - 5) / 1 + 1 = 28" in text and "Total params: 37,106" in text


def test_mnist_cnn_rows_and_inexact_mark() -> None:
    s = cnnlab.summary(cnnlab.get_model("mnist_cnn"), (1, 28, 28))
    shapes = {r.name: r.output_shape for r in s.rows}
    assert shapes["block1.pool"] == (32, 14, 14)
    assert shapes["block2.pool"] == (64, 7, 7)
    assert shapes["block3.pool"] == (128, 4, 4)
    assert shapes["flatten"] == (2048,)
    assert shapes["fc1"] == (625,)
    pool3 = next(r for r in s.rows if r.name == "block3.pool")
    assert pool3.formulas == ["H,W: floor((7 + 2*1 - 2) / 2) + 1 = 4"] and pool3.dropped == 1
    exact = next(r for r in s.rows if r.name == "block2.pool")
    assert exact.dropped == 0
    assert "not exact" in str(s)


@pytest.mark.parametrize(
    "n,k,p,s,d,expected",
    [(227, 11, 0, 4, 1, 55), (28, 5, 2, 1, 1, 28), (7, 3, 0, 2, 1, 3), (32, 3, 1, 2, 1, 16), (28, 3, 0, 1, 2, 24)],
)
def test_output_size_formula_matches_torch(n, k, p, s, d, expected) -> None:
    text, out, _ = output_size_formula(n, k, p, s, d)
    assert out == expected == nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, n, n)).shape[-1]
    assert text.endswith(f"= {expected}")


def test_frozen_parameters_are_counted_apart() -> None:
    model = cnnlab.get_model("lenet")
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    s = cnnlab.summary(model, (1, 28, 28))
    assert s.frozen_params == 156 and s.trainable_params == 37106 - 156
    assert "(156 frozen)" in str(s)


class HardCodedLeNet(nn.Module):
    """A learner's LeNet with the flatten size typed in for 28x28 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(400, 84)

    def forward(self, x):
        return self.fc1(self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x))))))


def test_mismatch_names_layer_and_fix() -> None:
    with pytest.raises(ShapeMismatchError) as err:
        cnnlab.summary(HardCodedLeNet(), (1, 32, 32))
    e = err.value
    assert e.layer == "fc1"
    assert [r.name for r in e.rows] == ["conv1", "pool1", "conv2", "pool2", "flatten"]
    assert "expects 400 input features but gets 576" in e.message
    assert "in_features=576" in e.message
    assert "Traceback" not in str(e) and "flatten" in str(e)


def test_channel_mismatch_message() -> None:
    with pytest.raises(ShapeMismatchError, match="expects 1 input channels but gets 3"):
        cnnlab.summary(HardCodedLeNet(), (3, 28, 28))


def test_works_on_torchvision_resnet18() -> None:
    s = cnnlab.summary(torchvision.models.resnet18(num_classes=10), (3, 64, 64))
    names = [r.name for r in s.rows]
    assert "layer1.0.conv1" in names and names[-1] == "fc"
    assert s.rows[-1].output_shape == (10,)
    assert s.total_params == sum(p.numel() for p in torchvision.models.resnet18(num_classes=10).parameters())
