"""Grad-CAM and saliency: a model that only looks at one quadrant, hand-computed maps, and the model left as found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.inspect import GradCAM, find_target_layer, saliency
from cnnlab.models.classic import LeNet

QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0), "bottom-right": (1, 1)}


def _photo(photos_dir: Path, name: str, size: int, gray: bool = False) -> torch.Tensor:
    """A real photo as a (1, C, size, size) float batch in [0, 1]."""
    img = Image.open(photos_dir / name).convert("L" if gray else "RGB").resize((size, size))
    a = np.array(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(a)[None] if gray else torch.from_numpy(a).permute(2, 0, 1)
    return t[None]


class QuadrantMask(nn.Module):
    """Zero every position outside one quadrant of the map."""

    def __init__(self, size: int, row: int, col: int):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        half = size // 2
        mask[..., row * half : (row + 1) * half, col * half : (col + 1) * half] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class QuadrantNet(nn.Module):
    """conv -> ReLU -> mask -> global average -> linear: the logits depend on one quadrant of the image only."""

    def __init__(self, in_chans: int, size: int, row: int, col: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU())
        self.mask = QuadrantMask(size, row, col)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight.uniform_(0.1, 1.0)  # positive: every active unit is evidence for every class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.mask(self.features(x)))))


def _quadrant_mass(maps: torch.Tensor, row: int, col: int, margin: int = 0) -> float:
    """Share of the total map mass inside one quadrant (grown by `margin` pixels)."""
    n = maps.shape[-1]
    half = n // 2
    r0, r1 = max(0, row * half - margin), min(n, (row + 1) * half + margin)
    c0, c1 = max(0, col * half - margin), min(n, (col + 1) * half + margin)
    return float(maps[..., r0:r1, c0:c1].sum() / maps.sum())


@pytest.mark.parametrize("quadrant", list(QUADRANTS))
def test_gradcam_lights_the_only_region_the_logit_sees(photos_dir: Path, quadrant: str) -> None:
    torch.manual_seed(0)
    row, col = QUADRANTS[quadrant]
    model = QuadrantNet(3, 64, row, col).eval()
    x = _photo(photos_dir, "astronaut.png", 64)
    with GradCAM(model) as cam:
        heat = cam(x)
    assert cam.layer_name == "mask"  # the last spatial output, found automatically
    assert heat.shape == (1, 64, 64) and heat.max() == 1.0 and heat.min() >= 0
    # Bilinear upsampling from the 64x64 map is the identity here: all the mass is in the quadrant.
    assert _quadrant_mass(heat, row, col) > 0.999
    sal = saliency(model, x)
    assert sal.shape == (1, 64, 64) and sal.max() == 1.0
    # Input gradients reach one pixel beyond the quadrant (the 3x3 conv), never further.
    assert _quadrant_mass(sal, row, col, margin=1) == pytest.approx(1.0)
    assert _quadrant_mass(sal, row, col) > 0.9


def test_one_channel_input_and_a_named_layer(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = QuadrantNet(1, 32, 1, 0).eval()
    x = _photo(photos_dir, "camera.png", 32, gray=True)
    heat = GradCAM(model, target_layer=model.mask)(x, target=2)
    assert heat.shape == (1, 32, 32) and _quadrant_mass(heat, 1, 0) > 0.999
    # On the conv output the gradient is zero outside the quadrant, but Grad-CAM averages it over the map,
    # so the heat spreads: the named layer is really the one used.
    with GradCAM(model, "features.0") as cam:
        spread = cam(x, target=2)
    assert cam.layer_name == "features.0" and cam.targets.tolist() == [2]
    assert _quadrant_mass(spread, 1, 0) < 0.9


def test_gradcam_matches_hand_computation_on_lenet(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("lenet").eval()
    x = torch.cat([_photo(photos_dir, "camera.png", 28, gray=True), _photo(photos_dir, "coffee.png", 28, gray=True)])
    with GradCAM(model) as cam:
        heat = cam(x, target=[4, 5])
    assert cam.layer_name == "pool2" and cam.targets.tolist() == [4, 5]
    # By hand: pool2's maps A, dScore/dA for each image's class, channel weights = spatial mean of the gradient.
    a = model.pool2(model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(x))))))
    logits = model.fc2(model.relu3(model.fc1(model.flatten(a))))
    (grad,) = torch.autograd.grad(logits[0, 4] + logits[1, 5], a)
    manual = F.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    manual = F.interpolate(manual, size=(28, 28), mode="bilinear", align_corners=False)[:, 0].detach()
    manual = manual / manual.flatten(1).amax(1)[:, None, None]
    assert torch.allclose(heat, manual, atol=1e-5)
    assert 0.1 < (heat > 0).float().mean() < 0.9  # a map with hot and cold parts, not a constant
    assert torch.allclose(cam.outputs, logits.detach(), atol=1e-5)


def test_prediction_is_the_default_target(photos_dir: Path) -> None:
    torch.manual_seed(1)
    model = cnnlab.get_model("cifar_net").eval()
    x = torch.cat([_photo(photos_dir, n, 32) for n in ("chelsea.png", "coffee.png", "rocket.jpg")])
    cam = GradCAM(model)
    heat = cam(x)
    predicted = model(x).argmax(1)
    assert cam.targets.tolist() == predicted.tolist()
    assert torch.equal(heat, cam(x, target=predicted))


def test_inplace_relu_after_target_layer_gives_the_same_map(photos_dir: Path) -> None:
    torch.manual_seed(0)

    def net(inplace: bool) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(6, 4, 3, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    a, b = net(False), net(True)
    b.load_state_dict(a.state_dict())
    x = _photo(photos_dir, "chelsea.png", 24)
    expected = GradCAM(a, "0")(x, target=1)
    assert torch.allclose(GradCAM(b, "0")(x, target=1), expected, atol=1e-6)
    assert expected.max() == 1.0


def test_resnet18_and_the_model_is_left_as_found(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    model.train()
    model.layer1.eval()  # a mixed state (e.g. frozen BatchNorm) must come back as it was
    for p in model.layer2.parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    stats = model.bn1.running_mean.clone()
    x = torch.cat([_photo(photos_dir, "astronaut.png", 64), _photo(photos_dir, "rocket.jpg", 64)])
    with torch.no_grad():  # callers often sit in no_grad; attribution needs gradients anyway
        with GradCAM(model) as cam:
            heat = cam(x, target=4)
            assert len(model.layer4._forward_hooks) == 1  # found on the first call, kept for the block
        sal = saliency(model, x, target=4)
    assert cam.layer_name == "layer4"
    assert heat.shape == (2, 64, 64) and sal.shape == (2, 64, 64)
    for m in (heat, sal):
        assert m.min() >= 0 and m.max() == 1.0 and not m.requires_grad
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.bn1.running_mean, stats)  # ran in eval mode: BatchNorm statistics untouched
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_single_logit_model(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("small_convnet", input_size=(3, 64, 64)).eval()
    x = _photo(photos_dir, "chelsea.png", 64)
    cam = GradCAM(model)
    assert cam.layer_name == find_target_layer(model) == "block4"
    heat = cam(x)
    assert cam.targets.tolist() == [0] and heat.shape == (1, 64, 64)
    assert torch.equal(cam(x, target=0), heat)
    with torch.inference_mode():  # a serving loop's context: the maps come out the same
        assert torch.equal(cam(x), heat)
        assert torch.equal(saliency(model, x), saliency(model, x, target=0))
    with pytest.raises(CnnlabError, match="one logit: the only target is 0"):
        cam(x, target=1)


def test_find_target_layer_inside_nested_blocks() -> None:
    assert find_target_layer(cnnlab.get_model("mnist_cnn")) == "block3"
    assert find_target_layer(cnnlab.get_model("fastnet")) == "conv3"  # not pool3: its 1x1 output has no 'where'
    assert find_target_layer(cnnlab.get_model("resnet9")) == "res3"  # the block, so the residual add counts
    resnet = torchvision.models.resnet18(weights=None)
    assert find_target_layer(resnet, (3, 64, 64)) == "layer4"
    # At 32x32 layer4 is 1x1; layer3 (2x2) is the last map that can still say where.
    assert find_target_layer(resnet, torch.zeros(1, 3, 32, 32)) == "layer3"


def test_saliency_of_a_linear_model_is_its_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    sal = saliency(model, torch.rand(1, 2, 4, 4), target=1)
    expected = model[1].weight[1].detach().abs().view(2, 4, 4).amax(0)
    assert torch.allclose(sal[0], expected / expected.max())


def test_clear_errors() -> None:
    mlp = cnnlab.get_model("mlp")
    with pytest.raises(CnnlabError, match=r"no layer with a spatial \(N, C, H, W\) output.*saliency"):
        GradCAM(mlp)
    lenet = cnnlab.get_model("lenet")
    with pytest.raises(CnnlabError, match="no layer named 'conv9'.*Available layers: conv1, relu1"):
        GradCAM(lenet, "conv9")
    with pytest.raises(CnnlabError, match=r"spatial \(N, C, H, W\) output at layer 'fc1'"):
        GradCAM(lenet, "fc1")(torch.zeros(1, 1, 28, 28))
    with pytest.raises(CnnlabError, match="out of range: the model has 10 classes"):
        GradCAM(lenet)(torch.zeros(1, 1, 28, 28), target=10)
    with pytest.raises(CnnlabError, match="2 targets for 3 images"):
        saliency(lenet, torch.zeros(3, 1, 28, 28), target=[1, 2])
    # No spec and a hard-coded flatten: the 224x224 guess fails, and the message says what to pass.
    with pytest.raises(CnnlabError, match="pass an example input of the right size"):
        find_target_layer(LeNet(10, (1, 28, 28)))
    assert find_target_layer(LeNet(10, (1, 28, 28)), (1, 28, 28)) == "pool2"
    assert sum(len(m._forward_hooks) for m in lenet.modules()) == 0
