"""FeatureExtractor: captured activations against a manual forward through the same sub-modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.inspect import FeatureExtractor, Features


def _photo(photos_dir: Path, name: str, size: int, gray: bool = False) -> torch.Tensor:
    """A real photo as a (1, C, size, size) float batch in [0, 1]."""
    img = Image.open(photos_dir / name).convert("L" if gray else "RGB").resize((size, size))
    a = np.array(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(a)[None] if gray else torch.from_numpy(a).permute(2, 0, 1)
    return t[None]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_lenet_default_layers_equal_manual_forward(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("lenet").eval()
    x = _photo(photos_dir, "camera.png", 28, gray=True)
    with FeatureExtractor(model) as fx:
        model(x)
    f = fx.features
    # Every conv, activation and pool layer, in the order they ran; the final Identity and Linear layers are not.
    assert list(f) == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "relu3"]
    with torch.no_grad():
        c1 = model.conv1(x)
        r1 = model.relu1(c1)
        p1 = model.pool1(r1)
        c2 = model.conv2(p1)
        r2 = model.relu2(c2)
        p2 = model.pool2(r2)
        r3 = model.relu3(model.fc1(model.flatten(p2)))
    for name, manual in zip(f, [c1, r1, p1, c2, r2, p2, r3]):
        assert torch.equal(f[name], manual), name
    assert f["conv1"].shape == (1, 6, 28, 28) and f["pool2"].shape == (1, 16, 5, 5)
    assert f["conv1"].min() < 0 and f["relu1"].min() == 0  # the photo gives both signs before the ReLU
    assert f.kinds == {"conv1": "conv", "relu1": "act", "pool1": "pool", "conv2": "conv", "relu2": "act",
                       "pool2": "pool", "relu3": "act"}
    assert f.types["pool1"] == "MaxPool2d"
    assert all(not t.requires_grad and t.device.type == "cpu" for t in f.values())
    assert _hooks(model) == 0


def test_nested_blocks_equal_manual_forward(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("mnist_cnn").eval()
    x = _photo(photos_dir, "camera.png", 28, gray=True)
    feats = FeatureExtractor(model, layers=["block2.conv", "block2.relu", "block3.pool", "block1"])(x)
    assert list(feats) == ["block1", "block2.conv", "block2.relu", "block3.pool"]  # run order
    with torch.no_grad():
        b1 = model.block1(x)
        conv = model.block2.conv(b1)
        relu = model.block2.relu(conv)
        b2 = model.block2.drop(model.block2.pool(relu))
        b3 = model.block3.pool(model.block3.relu(model.block3.conv(b2)))
    assert torch.equal(feats["block1"], b1)
    assert torch.equal(feats["block2.conv"], conv)
    assert torch.equal(feats["block2.relu"], relu)
    assert torch.equal(feats["block3.pool"], b3) and b3.shape == (1, 128, 4, 4)
    assert _hooks(model) == 0


def test_torchvision_resnet_inplace_relu_and_reused_module(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = _photo(photos_dir, "astronaut.png", 64)
    with FeatureExtractor(model, layers=["bn1", nn.ReLU, "layer1.0.bn2"]) as fx:
        model(x)
    f = fx.features
    with torch.no_grad():
        bn1 = model.bn1(model.conv1(x))
        stem = model.maxpool(torch.relu(bn1))
        block = model.layer1[0]
        mid = torch.relu(block.bn1(block.conv1(stem)))
        bn2 = block.bn2(block.conv2(mid))
        out = torch.relu(bn2 + stem)
    # ReLU(inplace=True) overwrites bn1's output after the hook ran: the stored copy keeps the negatives.
    assert torch.equal(f["bn1"], bn1) and f["bn1"].min() < 0
    assert torch.equal(f["relu"], torch.relu(bn1))
    # BasicBlock calls its one ReLU twice: both calls are kept. `out += identity` is in place on bn2's output.
    assert torch.equal(f["layer1.0.relu"], mid)
    assert torch.equal(f["layer1.0.relu#2"], out)
    assert torch.equal(f["layer1.0.bn2"], bn2)
    assert "layer4.1.relu#2" in f and f["layer4.1.relu#2"].shape == (1, 512, 2, 2)
    assert _hooks(model) == 0


def test_selectors_by_type_and_name() -> None:
    model = cnnlab.get_model("resnet9")
    convs = FeatureExtractor(model, layers=nn.Conv2d).names
    assert convs == [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)] and len(convs) == 8
    assert FeatureExtractor(model, layers="res1.conv2.bn").names == ["res1.conv2.bn"]
    mixed = FeatureExtractor(model, layers=[nn.MaxPool2d, "prep"]).names
    assert mixed == ["prep", "pool1", "pool2", "pool3"]


def test_each_forward_pass_starts_fresh_and_hooks_go_on_error() -> None:
    model = cnnlab.get_model("lenet").eval()
    with FeatureExtractor(model, layers=["pool2"]) as fx:
        model(torch.zeros(2, 1, 28, 28))
        first = fx.features
        model(torch.ones(3, 1, 28, 28))
    assert isinstance(first, Features) and first["pool2"].shape[0] == 2
    assert list(fx.features) == ["pool2"] and fx.features["pool2"].shape[0] == 3  # no 'pool2#2'
    with pytest.raises(RuntimeError):
        with FeatureExtractor(model) as fx:
            model(torch.zeros(1, 3, 28, 28))  # wrong channel count
    assert _hooks(model) == 0


def test_bad_selectors_say_what_exists() -> None:
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(CnnlabError, match=r"no layer named 'layer5'.*Did you mean: layer4.*Available layers: conv1"):
        FeatureExtractor(model, layers="layer5")
    with pytest.raises(CnnlabError, match="no layer of type LSTM"):
        FeatureExtractor(model, layers=nn.LSTM)
    with pytest.raises(CnnlabError, match="names or nn.Module types"):
        FeatureExtractor(model, layers=[3])
    with pytest.raises(CnnlabError, match="no conv, activation or pooling layer"):
        FeatureExtractor(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
