"""Transfer learning in the real training loop: weights from a file and the offline error for DEFAULT, freezing
(parameters and BatchNorm statistics) and unfreezing, Inception v3's auxiliary head, and feature extraction."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from test_folder_e2e import PHOTOS, make_photo_folder, one_torch_thread  # noqa: F401 (a fixture, used by name)
from torch import nn

import cnnlab
from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError
from cnnlab.training import features
from cnnlab.training.checkpoint import load_checkpoint

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache and a network that cannot be reached, for every test: nothing may be downloaded."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return home


@pytest.fixture(scope="module")
def five(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five classes, one per photo, 20 crops each (most of the photo: an easy dataset)."""
    return make_photo_folder(photos_dir, tmp_path_factory.mktemp("five"))


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local state dict shaped like torchvision's ImageNet resnet18 (1000-class head), with BatchNorm running
    statistics of its own (so loaded buffers are told apart from fresh ones) and a counter of 7."""
    torch.manual_seed(123)
    model = torchvision.models.resnet18(num_classes=1000)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one pass sets the statistics of that batch
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 48, 48) * 4 - 2)
    state = model.state_dict()
    for k in state:
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
    path = tmp_path_factory.mktemp("weights") / "resnet18_imagenet.pth"
    torch.save(state, path)
    return path


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything but the head `fc`: parameters and buffers."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


# ---------------------------------------------------------------- weights


def test_default_weights_offline_is_a_clear_cli_error(five: Path, offline: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--model", "resnet18", "--weights", "DEFAULT", "--dataset", f"folder:{five}",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "\nerror: cannot get the pretrained weights" in err and "Traceback" not in err
    assert str(offline / "hub" / "checkpoints" / RESNET18_FILE) in err
    assert "--weights PATH" in err and "--weights none" in err
    assert not (tmp_path / "run").exists()  # no run folder is left behind


def test_weights_from_a_file_end_to_end_are_recorded_and_rebuilt_offline(
    five: Path, imagenet_file: Path, photos_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--model", "resnet18", "--weights", str(imagenet_file), "--dataset", f"folder:{five}",
                 "--input-size", "32x32", "--epochs", "1", "--batch-size", "16", "--out", str(run_dir),
                 "--quiet"]) == 0
    info = load_checkpoint(run_dir / "checkpoints" / "best.pt")["weights"]
    assert info["source"] == "file" and info["file"] == str(imagenet_file.resolve())
    assert info["sha256"] == hashlib.sha256(imagenet_file.read_bytes()).hexdigest()
    assert info["head"] == "new" and sorted(info["skipped"]) == ["fc.bias", "fc.weight"]
    assert info["loaded"] == len(torch.load(imagenet_file)) - 2
    assert json.loads((run_dir / "config.json").read_text())["resolved"]["weights"] == info

    # The checkpoint holds the weights: rebuilding reads neither the file nor the network.
    imagenet_file.rename(tmp_path / "moved.pth")
    try:
        def no_download(*args, **kwargs):
            raise AssertionError("a trained run must not download weights")

        monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
        run = cnnlab.load_run(run_dir)
        model = run.model
        assert model.fc.out_features == len(PHOTOS) and model.weights_info == {"weights": "none", "source": "random"}
        ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")["state_dict"]
        assert all(torch.equal(v, ckpt[k]) for k, v in model.state_dict().items())
        assert [c for c, _ in run.predict(photos_dir / "rocket.jpg", topk=5)] != []
    finally:
        (tmp_path / "moved.pth").rename(imagenet_file)


# ---------------------------------------------------------------- freezing


def test_frozen_backbone_is_bit_identical_after_training(five: Path, imagenet_file: Path, tmp_path: Path) -> None:
    file_state = torch.load(imagenet_file)
    seen: list[dict] = []

    class Watch(cnnlab.Callback):
        def on_train_begin(self, run) -> None:
            self.net = run.model

        def on_step_end(self, step: int, loss: float) -> None:
            bn = [m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
            seen.append({"train": self.net.training, "bn_train": any(m.training for m in bn),
                         "fc": self.net.fc.weight.detach().clone()})

    run = cnnlab.train(model="resnet18", dataset=f"folder:{five}", weights=str(imagenet_file), input_size="32x32",
                       freeze_backbone=True, epochs=2, batch_size=16, out=str(tmp_path / "r"), quiet=True,
                       callbacks=[Watch()])
    assert len(seen) >= 4 and all(st["train"] and not st["bn_train"] for st in seen)
    # Every backbone tensor, BatchNorm running statistics and counters included, is the file's, bit for bit.
    for which in ("last", "best"):
        state = load_checkpoint(tmp_path / "r" / "checkpoints" / f"{which}.pt")["state_dict"]
        for k, v in backbone_state(file_state).items():
            assert torch.equal(state[k], v), (which, k)
    final = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["state_dict"]["fc.weight"]
    assert final.shape == (len(PHOTOS), 512) and not torch.equal(final, seen[0]["fc"])  # the head did learn
    assert run.results["test_acc"] > 0


@pytest.mark.slow
def test_unfreeze_after_one_epoch_fine_tunes_the_backbone_with_a_lower_rate(
    five: Path, imagenet_file: Path, tmp_path: Path
) -> None:
    file_state = torch.load(imagenet_file)
    steps: list[dict] = []

    class Watch(cnnlab.Callback):
        def on_train_begin(self, run) -> None:
            self.run = run

        def on_step_end(self, step: int, loss: float) -> None:
            net = self.run.model
            head = {id(net.fc.weight), id(net.fc.bias)}
            lrs = {("head" if id(g["params"][0]) in head else "backbone", round(g["lr"], 12))
                   for g in self.run.optimizer.param_groups}
            moved = [k for k, v in backbone_state(net.state_dict()).items() if not torch.equal(v, file_state[k])]
            steps.append({"epoch": self.run.state.epoch, "lrs": lrs, "moved": moved})

    cnnlab.train(model="resnet18", dataset=f"folder:{five}", weights=str(imagenet_file), input_size="32x32",
                 unfreeze_after=1, backbone_lr_scale=0.1, lr=1e-3, schedule="constant", epochs=2, batch_size=16,
                 out=str(tmp_path / "r"), quiet=True, callbacks=[Watch()])
    first = [st for st in steps if st["epoch"] == 0]
    second = [st for st in steps if st["epoch"] == 1]
    assert first and second
    assert all(st["moved"] == [] for st in first)  # epoch 1: the head alone
    moved = set(second[0]["moved"])  # epoch 2: weights and BatchNorm statistics both move
    assert "conv1.weight" in moved and "layer4.1.conv2.weight" in moved and "bn1.running_mean" in moved
    assert first[0]["lrs"] == second[0]["lrs"] == {("head", 1e-3), ("backbone", 1e-4)}


# ---------------------------------------------------------------- Inception v3


@pytest.mark.slow
def test_inception_v3_trains_its_auxiliary_head_at_299(photos_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "two"
    for split, seed in (("train", 0), ("test", 1)):
        make_photo_folder(photos_dir, root / split, ("chelsea", "coffee"), per_class=1, size=299, seed=seed)
    grads: dict[str, bool] = {}

    class Watch(cnnlab.Callback):
        def on_train_begin(self, run) -> None:
            self.run = run

        def on_step_end(self, step: int, loss: float) -> None:
            # AdamW's first moment is (1 - beta1) * grad after one step: nonzero exactly where a gradient arrived.
            for name, p in self.run.model.named_parameters():
                if name.startswith("AuxLogits."):
                    moment = self.run.optimizer.state.get(p, {}).get("exp_avg")
                    grads[name] = moment is not None and bool(moment.abs().sum() > 0)

    run = cnnlab.train(model="inception_v3", dataset=f"folder:{root}", epochs=1, batch_size=2, val_size=0,
                       schedule="constant", lr=1e-3, out=str(tmp_path / "r"), quiet=True, callbacks=[Watch()])
    assert run.results["epochs_run"] == 1
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]
    assert resolved["input_size"] == [3, 299, 299] and resolved["steps_per_epoch"] == 1
    # The auxiliary classifier sits on Mixed_6e: only the auxiliary loss reaches it, so its gradients prove the
    # loop trains with that loss (compute_loss: main + 0.4 * auxiliary).
    assert {"AuxLogits.conv0.conv.weight", "AuxLogits.conv1.conv.weight", "AuxLogits.fc.weight"} <= set(grads)
    assert all(grads.values())
    model = cnnlab.load_run(tmp_path / "r").model  # rebuilt with its auxiliary head; eval mode gives logits only
    assert model.AuxLogits is not None
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 299, 299)).shape == (2, 2)


# ---------------------------------------------------------------- feature extraction


@pytest.mark.slow
def test_feature_extraction_fits_a_head_in_seconds_and_reuses_its_cache(
    five: Path, photos_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []
    real_embed = features.embed_split

    def counting_embed(cfg, forward, data, pipeline, device, label, out):
        calls.append(label)
        return real_embed(cfg, forward, data, pipeline, device, label, out)

    monkeypatch.setattr(features, "embed_split", counting_embed)
    settings = dict(model="resnet18", dataset=f"folder:{five}", input_size="64x64", feature_extraction=True,
                    val_size=0.2, quiet=True)
    first = cnnlab.train(**settings, out=str(tmp_path / "a"))
    assert sorted(calls) == ["test", "train", "val"]
    info = first.results["feature_extraction"]
    cache_files = sorted((tmp_path / "cache" / "features").glob("resnet18-*.pt"))
    assert len(cache_files) == 3 and sorted(str(p) for p in cache_files) == sorted(
        c["file"] for c in info["cache"].values())
    assert not any(c["hit"] for c in info["cache"].values()) and info["features"] == 512
    assert first.results["train_seconds"] < 5  # the promise: seconds for the head (measured: about 0.1 s)
    assert first.results["test_acc"] >= 0.85  # 20 test images of 5 classes, chance is 0.2
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["config"]["feature_extraction"] and config["resolved"]["augment"] == "none"

    # The checkpoint holds the whole model: evaluating it on the images gives the accuracy of the embeddings.
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(first.results["test_acc"])
    top = cnnlab.load_run(tmp_path / "a").predict([photos_dir / f"{n}.png" for n in ("chelsea", "coffee")])
    assert [t[0][0] for t in top] == ["chelsea", "coffee"]

    second = cnnlab.train(**settings, out=str(tmp_path / "b"))
    assert len(calls) == 3  # nothing embedded again
    assert all(c["hit"] for c in second.results["feature_extraction"]["cache"].values())
    assert second.results["test_acc"] == first.results["test_acc"]
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "best.pt")["state_dict"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)

    cnnlab.train(**settings, seed=1, out=str(tmp_path / "c"))  # other (random) backbone weights: other embeddings
    assert len(calls) == 6 and len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 6

    with pytest.raises(CnnlabError, match="not resumed"):
        cnnlab.train(resume=str(tmp_path / "a"))


def test_feature_extraction_needs_a_backbone_and_nothing_to_unfreeze(five: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="no replaceable head.*resnet18"):
        cnnlab.train(model="small_convnet", dataset=f"folder:{five}", input_size="64x64", feature_extraction=True,
                     out=str(tmp_path / "r"), quiet=True)
    with pytest.raises(CnnlabError, match="drop --unfreeze-after"):
        cnnlab.train(model="resnet18", feature_extraction=True, unfreeze_after=2)
