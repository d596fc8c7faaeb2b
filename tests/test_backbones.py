"""Torchvision backbones: metadata, heads, local and cached weights, the offline error, freezing, Inception aux."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, get_model_info
from cnnlab.models import weights as weights_mod
from cnnlab.models.backbones import (
    BACKBONES,
    backbone_parameters,
    embed,
    freeze_backbone,
    head_parameters,
)
from cnnlab.models.outputs import split_logits
from cnnlab.models.weights import resolve_weights
from cnnlab.training.loss import Criterion

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(autouse=True)
def empty_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test sees an empty torch cache, never the user's."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def marked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict shifted by 0.5 (counters set to 7): values no fresh initialization produces."""
    return {k: (v + 0.5 if v.is_floating_point() else torch.full_like(v, 7)) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_metadata_matches_torchvision_weights(arch: str) -> None:
    meta_weights = torchvision.models.get_model_weights(arch).DEFAULT
    t = meta_weights.transforms()
    info = get_model_info(arch)
    assert info.input_size == (3, t.crop_size[0], t.crop_size[0])
    assert info.mean == pytest.approx(tuple(t.mean)) and info.std == pytest.approx(tuple(t.std))
    assert BACKBONES[arch].min_size == meta_weights.meta["min_size"][0]
    assert info.num_classes == len(meta_weights.meta["categories"]) == 1000
    with torch.device("meta"):  # shapes only: must work and match the weights' architecture
        model = cnnlab.get_model(arch)  # Inception v3 with its auxiliary head, as torchvision's weights have it
    # The count `cnnlab models` shows without building the model (or importing torchvision).
    assert count_parameters(model) == meta_weights.meta["num_params"] == info.params


SMALL = {"inception_v3": 75, "vgg16": 32, "convnext_tiny": 32}


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_head_has_num_classes_and_embed_feeds_it(arch: str) -> None:
    torch.manual_seed(0)
    size = SMALL.get(arch, 32)
    small = {"aux_logits": False} if arch == "inception_v3" else {}  # the auxiliary head needs 299x299
    model = cnnlab.get_model(arch, num_classes=3, input_size=(size, size), **small).eval()
    head = model.get_submodule(model.head_name)
    assert isinstance(head, nn.Linear) and head.out_features == 3
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = embed(model, x)
        out = model(x)
    assert features.shape == (2, head.in_features)
    torch.testing.assert_close(head(features), out)
    assert len(head_parameters(model)) == 2
    assert len(backbone_parameters(model)) + 2 == len(list(model.parameters()))


def test_one_logit_for_two_classes() -> None:
    model = cnnlab.get_model("mobilenet_v3_small", num_classes=1, input_size=(32, 32)).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_local_imagenet_state_dict_loads_everything_but_the_head(tmp_path: Path) -> None:
    source = torchvision.models.resnet18(num_classes=1000)
    state = marked_state_dict(source)
    path = tmp_path / "resnet18_imagenet.pt"
    torch.save(state, path)

    model = cnnlab.get_model("resnet18", num_classes=5, weights=str(path))

    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert model.fc.weight.shape == (5, 512) and model.fc.bias.shape == (5,)
    assert not torch.equal(model.fc.bias, state["fc.bias"][:5])
    info = model.weights_info
    assert info["source"] == "file" and info["head"] == "new"
    assert sorted(info["skipped"]) == ["fc.bias", "fc.weight"]
    assert info["loaded"] == len(state) - 2
    assert info["file"] == str(path.resolve())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.spec.kwargs["weights"] == str(path)
    json.dumps(info)  # a checkpoint stores it as is


def test_state_dict_with_the_new_head_loads_the_head_too(tmp_path: Path) -> None:
    state = marked_state_dict(cnnlab.get_model("resnet18", num_classes=5))
    path = tmp_path / "checkpoint.pt"
    # Nested under "state_dict" with DataParallel's "module." prefix, as many training scripts save it.
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = cnnlab.get_model("resnet18", num_classes=5, weights=str(path))
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.weights_info["head"] == "loaded" and model.weights_info["skipped"] == []


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(CnnlabError, match="do not fit this model") as err:
        cnnlab.get_model("mobilenet_v3_small", weights=str(path))
    assert "missing" in str(err.value) and "unexpected" in str(err.value)


def test_unknown_weights_value_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError) as err:
        cnnlab.get_model("resnet18", weights=str(tmp_path / "nope.pt"))
    text = str(err.value)
    assert "no such file" in text and "DEFAULT" in text and "IMAGENET1K_V1" in text and "none" in text


def test_weight_names_resolve_to_torchvision_enum_members() -> None:
    assert resolve_weights("resnet50", None) == ("none", None)
    assert resolve_weights("resnet50", "none") == ("none", None)
    assert resolve_weights("resnet50", "DEFAULT")[1] is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert resolve_weights("resnet50", "imagenet1k_v1")[1] is torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    full = resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1")
    assert full == ("torchvision", torchvision.models.ResNet50_Weights.IMAGENET1K_V1)


def test_default_weights_load_from_the_torch_cache_without_network(
    empty_torch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = marked_state_dict(torchvision.models.resnet18())
    cached = empty_torch_cache / "hub" / "checkpoints" / RESNET18_FILE
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)

    def no_download(*args, **kwargs):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = cnnlab.get_model("resnet18", num_classes=4, weights="DEFAULT")
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 4
    info = model.weights_info
    assert info["source"] == "torchvision" and info["name"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert info["file"] == str(cached) and info["url"].endswith(RESNET18_FILE) and "categories" not in info

    imagenet = cnnlab.get_model("resnet18", weights="IMAGENET1K_V1")  # 1000 classes: the file's head is kept
    assert torch.equal(imagenet.fc.weight, state["fc.weight"])
    assert imagenet.weights_info["head"] == "loaded" and len(imagenet.weights_info["categories"]) == 1000


def assert_offline_error(err: CnnlabError, cache: Path) -> None:
    """The offline error names the file, its full cache path, the URL and both ways out."""
    text = str(err)
    expected = cache / "hub" / "checkpoints" / RESNET18_FILE
    assert RESNET18_FILE in text and str(expected) in text
    assert "https://download.pytorch.org/models/" + RESNET18_FILE in text
    assert "--weights PATH" in text and "--weights none" in text
    assert not expected.exists() and not list(expected.parent.glob("*.partial"))  # nothing half-written left


def test_offline_default_weights_error_through_the_real_download(
    empty_torch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This sandbox has no DNS: name resolution fails at once. Making that deterministic keeps the test
    # offline on any machine while torch.hub and urllib run for real.
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(CnnlabError) as err:
        cnnlab.get_model("resnet18", num_classes=2, weights="DEFAULT")
    assert "Name or service not known" in str(err.value)
    assert_offline_error(err.value, empty_torch_cache)


def test_offline_error_from_a_failing_download_function(
    empty_torch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fail(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(CnnlabError) as err:
        cnnlab.get_model("resnet18", weights="DEFAULT")
    expected = empty_torch_cache / "hub" / "checkpoints" / RESNET18_FILE
    assert calls == [("https://download.pytorch.org/models/" + RESNET18_FILE, str(expected), "f37072fd")]
    assert_offline_error(err.value, empty_torch_cache)


def test_a_stalled_download_times_out_instead_of_hanging(
    empty_torch_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that accepts the connection and never answers: without a timeout urllib would wait forever.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    )
    monkeypatch.setattr(weights_mod, "DOWNLOAD_TIMEOUT_S", 0.5)
    before = socket.getdefaulttimeout()
    errors: list[BaseException] = []

    def download() -> None:
        try:
            cnnlab.get_model("resnet18", weights="DEFAULT")
        except BaseException as exc:  # what the main thread checks
            errors.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    try:
        worker.start()
        worker.join(120)  # a download without a timeout would wait for this server for ever
    finally:
        server.close()
    assert not worker.is_alive(), "the download hung on a server that never answers"
    (err,) = errors
    assert isinstance(err, CnnlabError) and "timed out" in str(err)
    assert socket.getdefaulttimeout() == before  # the process-wide default is restored
    assert_offline_error(err, empty_torch_cache)


def test_frozen_backbone_is_unchanged_by_a_training_step() -> None:
    torch.manual_seed(0)
    model = freeze_backbone(cnnlab.get_model("resnet18", num_classes=3, input_size=(32, 32)))
    assert all(not p.requires_grad for p in backbone_parameters(model))
    assert all(p.requires_grad for p in head_parameters(model))
    assert count_parameters(model, trainable_only=True) == 512 * 3 + 3
    before = {n: t.clone() for n, t in model.state_dict().items()}
    # All parameters go to the optimizer, with momentum and weight decay: frozen ones must still not move.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    model.train()
    freeze_backbone(model)  # after .train(), which would put BatchNorm back in training mode
    assert model.training and not model.bn1.training and not model.layer4[1].bn2.training
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    # Parameters and buffers: BatchNorm running statistics and counters do not move either.
    for name, t in model.state_dict().items():
        if name.startswith("fc."):
            assert not torch.equal(t, before[name]), name
        else:
            assert torch.equal(t, before[name]), name
    freeze_backbone(model, frozen=False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    freeze_backbone(model.eval(), frozen=False)  # unfreezing an eval-mode model leaves it in eval mode
    assert not any(m.training for m in model.modules())


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """BatchNorm running statistics equal to those of batch `x` (one train-mode pass, a cumulative average)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)


def test_inception_aux_logits_path_with_both_heads_replaced(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.inception_v3(num_classes=1000, aux_logits=True, init_weights=False)
    state = marked_state_dict(source)
    path = tmp_path / "inception_imagenet.pt"
    torch.save(state, path)

    model = cnnlab.get_model("inception_v3", num_classes=3, weights=str(path)).train()  # aux head by default
    assert model.head_names == ("fc", "AuxLogits.fc")
    heads = ["AuxLogits.fc.bias", "AuxLogits.fc.weight", "fc.bias", "fc.weight"]
    assert sorted(model.weights_info["skipped"]) == heads
    assert torch.equal(model.AuxLogits.conv1.conv.weight, state["AuxLogits.conv1.conv.weight"])
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert model.fc.out_features == 3 and model.AuxLogits.fc.out_features == 3

    # Frozen backbone: backward stays in the heads (fast), and both heads must still get gradients.
    x, y = torch.randn(2, 3, 299, 299), torch.tensor([0, 2])
    calibrate_batchnorm(model, x)  # frozen BatchNorm uses running statistics: make them fit the marked weights
    freeze_backbone(model)
    out = model(x)
    logits, aux = split_logits(out)
    assert logits.shape == (2, 3) and aux is not None and aux.shape == (2, 3)
    ce = nn.functional.cross_entropy
    loss, main = Criterion()(out, y)  # the training loss: main head + 0.4 x auxiliary head
    assert main is logits
    torch.testing.assert_close(loss, ce(logits, y) + 0.4 * ce(aux, y))
    loss.backward()
    assert model.AuxLogits.fc.weight.grad is not None and model.fc.weight.grad is not None
    assert model.AuxLogits.conv1.conv.weight.grad is None and model.Mixed_7c.branch_pool.conv.weight.grad is None

    model.eval()
    with torch.no_grad():
        logits, aux = split_logits(model(torch.randn(1, 3, 299, 299)))
    assert logits.shape == (1, 3) and aux is None

    # The same torchvision file fits a model built without the auxiliary head.
    plain = cnnlab.get_model("inception_v3", num_classes=3, weights=str(path), aux_logits=False)
    assert plain.AuxLogits is None and plain.head_names == ("fc",)
    assert torch.equal(plain.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert any(k.startswith("AuxLogits.conv0") for k in plain.weights_info["skipped"])


def test_inputs_the_networks_cannot_take_are_clear_errors() -> None:
    with pytest.raises(CnnlabError, match="3-channel"):
        cnnlab.get_model("resnet18", in_chans=1)
    with pytest.raises(CnnlabError, match="at least 75x75"):
        cnnlab.get_model("inception_v3", input_size=(64, 64), aux_logits=False)
    with pytest.raises(CnnlabError, match="at least 299x299") as err:  # the default keeps the auxiliary head
        cnnlab.get_model("inception_v3", input_size=(224, 224))
    assert "aux_logits" in str(err.value) and "75x75" in str(err.value)
    assert cnnlab.get_model("inception_v3", input_size=(224, 224), aux_logits=False).AuxLogits is None


def test_split_logits_passes_a_plain_tensor_through() -> None:
    t = torch.randn(2, 4)
    logits, aux = split_logits(t)
    assert logits is t and aux is None
    y = torch.tensor([1, 3])
    torch.testing.assert_close(Criterion()(t, y)[0], nn.functional.cross_entropy(t, y))
