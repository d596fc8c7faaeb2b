"""Your own photos end to end: a folder of crops of the shared photos, trained, evaluated, predicted, explained,
reported and exported with the `cnnlab` commands, for two classes (single logit) and for many."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli.main import main
from cnnlab.training.auto import SHIFT_MIN_EPOCHS

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket")


def make_photo_folder(photos_dir: Path, root: Path, names: tuple[str, ...] = PHOTOS, per_class: int = 20,
                      size: int = 64, side: tuple[float, float] = (0.6, 1.0), seed: int = 0) -> Path:
    """One class per photo: `per_class` random square crops (`side` of the shorter edge), half PNG, half JPEG."""
    rng = random.Random(seed)
    for name in names:
        img = Image.open(next(photos_dir.glob(f"{name}.*"))).convert("RGB")
        w, h = img.size
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            s = int(min(w, h) * rng.uniform(*side))
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            crop = img.crop((x, y, x + s, y + s)).resize((size, size), Image.BILINEAR)
            crop.save(folder / f"{name}_{k:02d}.{'jpg' if k % 2 else 'png'}")
    return root


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for these small models: on the shared 2-core machine, two threads waiting on each other
    made a resnet18 step on 8 images 3 to 15 times slower (0.3 s against 1-5 s, measured under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cats(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes, the cats-vs-dogs setup in small: the cat photo against the astronaut."""
    return make_photo_folder(photos_dir, tmp_path_factory.mktemp("cats"), ("chelsea", "astronaut"), per_class=30)


@pytest.fixture(scope="module")
def five(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five classes, one per photo."""
    return make_photo_folder(photos_dir, tmp_path_factory.mktemp("five"))


def predict_json(capsys: pytest.CaptureFixture, model: str | Path, images: list[Path]) -> dict[str, list]:
    """`cnnlab predict --json`: image name -> [(class, probability), ...]."""
    capsys.readouterr()
    assert main(["predict", str(model), *map(str, images), "--json", "--topk", "5"]) == 0
    return {Path(r["image"]).stem: [(p["class"], p["probability"]) for p in r["predictions"]]
            for r in json.loads(capsys.readouterr().out)}


@pytest.mark.slow
def test_small_convnet_at_its_150x150_default_with_one_sigmoid_output(cats: Path, tmp_path: Path) -> None:
    long_enough = SHIFT_MIN_EPOCHS  # fewer epochs get flips alone (a short run is still fitting its data)
    run = cnnlab.train(model="small_convnet", dataset=f"folder:{cats}", epochs=long_enough, subset=8, batch_size=8,
                       out=str(tmp_path / "r"), quiet=True)
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]
    assert resolved["input_size"] == [3, 150, 150] and resolved["num_outputs"] == 1 and resolved["single_logit"]
    # What photos above 64 px need, chosen from the data: flips, crops keeping at least half, colour jitter.
    assert resolved["augment"] == "flip,crop=0.5,jitter=0.2"
    assert run.results["epochs_run"] == long_enough and run.history[0]["train_loss"] > 0
    probs = cnnlab.load_run(tmp_path / "r").predict_proba(next((cats / "chelsea").iterdir()))
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(1), torch.ones(1))


@pytest.mark.slow
def test_cats_vs_astronauts_end_to_end_with_the_cli(cats: Path, photos_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "cats"
    assert main(["train", "--model", "small_convnet", "--dataset", f"folder:{cats}", "--input-size", "64x64",
                 "--epochs", "4", "--batch-size", "8", "--out", str(run), "--quiet"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test_acc"] >= 0.75  # 12 test images, chance is 0.5

    assert main(["eval", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out and (run / "eval-test" / "confusion.png").is_file()

    photos = [photos_dir / "chelsea.png", photos_dir / "astronaut.png"]
    top = predict_json(capsys, run, photos)
    assert [top[p][0][0] for p in ("chelsea", "astronaut")] == ["chelsea", "astronaut"]

    capsys.readouterr()
    assert main(["explain", str(run), str(photos[0]), "--out", str(tmp_path / "explain"), "--channels", "2",
                 "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["prediction"][0]["class"] == "chelsea"
    assert explained["files"] and all(Path(f).is_file() for f in explained["files"].values())

    assert main(["report", str(run), "--images", "0", "--mistakes", "4"]) == 0  # the small report: seconds
    html = (run / "report.html").read_text()
    assert "chelsea" in html and "astronaut" in html

    # The TorchScript-based exporter: 1 s here against 8 s for torch.export's (tests/test_export.py covers both).
    assert main(["export", str(run), "--exporter", "legacy"]) == 0
    exported = predict_json(capsys, run / "model.onnx", photos)
    for name in ("chelsea", "astronaut"):
        (c1, p1), (c2, p2) = top[name][0], exported[name][0]
        assert c1 == c2 and p1 == pytest.approx(p2, abs=1e-4)


@pytest.mark.slow
def test_resnet18_from_scratch_on_five_classes(five: Path, photos_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "five"
    assert main(["train", "--model", "resnet18", "--dataset", f"folder:{five}", "--input-size", "48x48",
                 "--epochs", "2", "--batch-size", "8", "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["weights"]["source"] == "random" and config["resolved"]["classes"] == list(PHOTOS)
    results = json.loads((run / "results.json").read_text())
    assert results["test_acc"] >= 0.5  # 20 test images, chance is 0.2

    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(results["test_acc"])
    top = predict_json(capsys, run, [photos_dir / "coffee.png"])
    assert len(top["coffee"]) == 5 and {c for c, _ in top["coffee"]} == set(PHOTOS)
