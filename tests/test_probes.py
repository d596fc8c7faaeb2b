"""Probe snapshots: what `--probe-every N` records during training, and the epoch-by-epoch strips drawn from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cnnlab
from cnnlab.data import get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.inspect.probes import MAX_CHANNELS, MAX_FILTERS, MAX_LAYERS, MAX_SIDE, load_probes, take_snapshot
from cnnlab.viz import save_figure
from cnnlab.viz.probes import pick_epochs, plot_probe_filters, plot_probe_maps


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of LeNet on 200 digits, probed every 2 epochs: snapshots at epochs 0 and 2."""
    out = tmp_path_factory.mktemp("probes") / "run"
    cnnlab.train(model="lenet", dataset="digits", epochs=2, subset=200, probe_every=2, select="best", seed=0,
                 out=str(out), quiet=True)  # best: the validation split the snapshots show is kept
    return out


def test_training_records_snapshots_every_n_epochs_and_before_the_first(probed: Path) -> None:
    files = sorted(p.name for p in (probed / "probes").iterdir())
    assert files == ["epoch-000.pt", "epoch-002.pt"]  # epoch 1 is not a multiple of 2; no temp files left
    snaps = load_probes(probed)
    assert [s["epoch"] for s in snaps] == [0, 2]
    assert all((probed / "probes" / f).stat().st_size < 300_000 for f in files)


def test_snapshot_holds_the_weights_and_maps_of_that_epoch(probed: Path) -> None:
    first, last = load_probes(probed)
    run = cnnlab.load_run(probed, checkpoint="last")  # last.pt is epoch 2, the epoch of the second snapshot
    weight = run.checkpoint["state_dict"]["conv1.weight"]
    assert first["filter_layer"] == "conv1" and first["filters"].shape == (6, 1, 5, 5)
    torch.testing.assert_close(last["filters"], weight)
    assert (first["filters"] - last["filters"]).abs().max() > 1e-3  # training moved the filters
    # The probe images: the first 4 of the validation split, converted to the model's 1x28x28.
    val = get_dataset("digits", "val")
    assert last["images"].shape == (4, 1, 28, 28) and last["images"].dtype == torch.uint8
    assert last["targets"].tolist() == val.targets[:4].tolist()
    assert torch.equal(first["images"], last["images"])
    # conv1's maps recomputed by hand from those images and the epoch-2 weights.
    x = run.pipeline.normalize(last["images"].float() / 255)
    expected = F.conv2d(x, weight, run.checkpoint["state_dict"]["conv1.bias"], padding=2)
    torch.testing.assert_close(last["features"]["conv1"].float(), expected, atol=2e-2, rtol=1e-2)  # stored as fp16
    assert list(last["features"]) == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    assert last["features"]["conv2"].shape == (4, MAX_CHANNELS, 10, 10)  # 16 channels, 8 kept
    assert last["shapes"]["conv2"] == [16, 10, 10] and last["kinds"]["pool1"] == "pool"
    torch.testing.assert_close(last["probs"].sum(1), torch.ones(4))
    torch.testing.assert_close(last["probs"], run.logits(x).softmax(1))


def test_snapshot_of_a_big_model_is_bounded_and_leaves_it_as_found(photos_dir: Path) -> None:
    torch.manual_seed(0)
    model = cnnlab.get_model("resnet18", num_classes=5)
    model.train()
    photo = np.asarray(Image.open(photos_dir / "chelsea.png").convert("RGB").resize((224, 224)))
    images = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    from cnnlab.data import Pipeline

    snap = take_snapshot(model, images, Pipeline.build(3, (3, 224, 224), (0.5,) * 3, (0.25,) * 3))
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert snap["filters"].shape == (MAX_FILTERS, 3, 7, 7)
    assert snap["filter_count"] == 64
    assert 0 < len(snap["features"]) <= MAX_LAYERS + 1  # the block's ReLU runs twice: one more capture at most
    assert list(snap["features"])[:3] == ["conv1", "relu", "maxpool"]
    for name, maps in snap["features"].items():
        assert maps.shape[:2] == (2, MAX_CHANNELS) and max(maps.shape[-2:]) <= MAX_SIDE, name
        assert maps.dtype == torch.float16 and maps.float().std() > 0, name
    assert snap["shapes"]["conv1"] == [64, 112, 112]
    assert snap["probs"].shape == (2, 5)


def test_no_probes_folder_means_no_snapshots(tmp_path: Path) -> None:
    assert load_probes(tmp_path) == []


def test_strips_draw_one_row_per_epoch(probed: Path, tmp_path: Path) -> None:
    snaps = load_probes(probed)
    filt = save_figure(plot_probe_filters(snaps), tmp_path / "filters.png", dpi=50)
    maps = save_figure(plot_probe_maps(snaps, layer="relu1"), tmp_path / "maps.png", dpi=50)
    for path, cols in ((filt, 6), (maps, 7)):
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert img.std() > 20
        # Tiles are 0.8 in: two rows (epochs 0 and 2), `cols` columns (6 filters; the input + 6 channels).
        assert img.shape[0] == round((2 * 0.8 + 0.6) * 50) and img.shape[1] == round((cols * 0.8 + 0.9) * 50)
    with pytest.raises(CnnlabError, match="recorded: conv1, relu1, pool1, conv2, relu2, pool2"):
        plot_probe_maps(snaps, layer="fc1")
    with pytest.raises(CnnlabError, match="--probe-every"):
        plot_probe_filters([])


def test_long_trainings_show_evenly_spaced_epochs() -> None:
    snaps = [{"epoch": e} for e in range(0, 31)]
    picked = [s["epoch"] for s in pick_epochs(snaps, 10)]
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] == 30
    assert picked == sorted(set(picked))
