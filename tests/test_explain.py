"""`cnnlab explain`: the PNGs it says it wrote exist and show the right pixels (trained LeNet, random ResNet-18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.apps.explain import as_subject, default_out_dir, explain
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.errors import CnnlabError


def pixels(path: Path) -> np.ndarray:
    """RGB pixels of a PNG that must not be blank."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    assert img.std() > 10, f"{path.name} is blank"
    return img


def printed_paths(out: str) -> list[Path]:
    """The file paths listed under 'wrote N files to ...'."""
    lines = out.split("wrote ", 1)[1].splitlines()[1:]
    return [Path(line.split()[1]) for line in lines if line.startswith("  ")]


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test digit (8x8 gray) saved as a PNG file, as a user would have it."""
    test = get_dataset("digits", "test")
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(test.images[0, 0].numpy()).save(path)
    return path


def test_trained_lenet_files_and_pixels(digits_run: Path, digit_png: Path, tmp_path: Path) -> None:
    run = cnnlab.load_run(digits_run)
    # Predicting first builds the model under inference mode; Grad-CAM must still get its gradients.
    top_class, top_p = run.predict(digit_png, topk=1)[0]
    result = explain(run, digit_png, tmp_path / "out")
    assert list(result) == ["input", "predictions", "filters", "features-01", "gradcam"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in result.values())
    assert result["features-01"].name == "features-01-conv1-pool2.png"
    # The input as the model sees it: 1x28x28 gray, each pixel an 8x8 block of the 224x224 PNG.
    seen = Image.open(result["input"])
    assert seen.mode == "L" and seen.size == (224, 224)
    blocks = np.asarray(seen)[::8, ::8].astype(int)
    expected = (run.pipeline.denormalize(run.pipeline.load(digit_png))[0, 0] * 255 + 0.5).to(torch.uint8).numpy()
    assert np.array_equal(blocks, expected) and expected.std() > 20
    assert np.array_equal(np.asarray(seen)[:8, :8], np.full((8, 8), blocks[0, 0]))
    for path in result.values():
        pixels(path)
    # What it says matches what the run predicts, and Grad-CAM explains that prediction.
    assert result.top[0][0] == top_class and abs(result.top[0][1] - top_p) < 1e-5
    assert len(result.top) == 5 and result.target == top_class and result.cam_layer
    assert result.notes == []  # a trained run: no "untrained" warning
    assert "1x28x28" in result.descriptions["input"] and "6 layers" in result.descriptions["features-01"]
    assert default_out_dir(as_subject(run), "some/my digit.png") == run.path / "explain-my_digit"


def test_cli_target_layers_and_topk(digits_run: Path, digit_png: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x"
    assert main(["explain", str(digits_run), str(digit_png), "--out", str(out), "--target", "3",
                 "--layers", "conv1,relu*", "--topk", "3"]) == 0
    text = capsys.readouterr().out
    paths = printed_paths(text)
    assert [p.name for p in paths] == ["input.png", "predictions.png", "filters.png",
                                       "features-01-conv1-relu2.png", "gradcam.png"]
    assert all(p.is_file() for p in paths)
    assert "prediction: 3 " not in text and "for 3)" in text  # the chosen class, not the prediction
    assert text.count("%") == 3  # three classes in the prediction line
    assert "4 layers" not in text and "3 layers, conv1 ... relu2" in text  # relu3 is a vector: no map
    for p in paths:
        pixels(p)


@pytest.mark.slow
def test_untrained_resnet18_on_a_photo(photos_dir: Path, tmp_path: Path, capsys) -> None:
    photo = photos_dir / "chelsea.png"
    assert main(["explain", "--model", "resnet18", str(photo), "--out", str(tmp_path / "r"), "--channels", "2"]) == 0
    text = capsys.readouterr().out
    assert "resnet18, untrained (random weights, seed 0)" in text and "meaningless" in text
    paths = printed_paths(text)
    assert [p.name for p in paths] == [
        "input.png", "predictions.png", "filters.png", "features-01-conv1-maxpool.png", "features-02-layer1.png",
        "features-03-layer2.png", "features-04-layer3.png", "features-05-layer4.png", "gradcam.png"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(p.name for p in paths)
    # 224x224 RGB, ImageNet-normalized and back: the photo squashed to the model's square input.
    seen = Image.open(paths[0])
    assert seen.mode == "RGB" and seen.size == (224, 224)
    reference = np.asarray(Image.open(photo).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR), float)
    assert np.corrcoef(np.asarray(seen, float).ravel(), reference.ravel())[0, 1] > 0.98
    for p in paths:
        pixels(p)
    # Random filters of a 3-channel first layer are drawn in colour.
    filters = pixels(paths[2])
    assert ((filters.max(axis=2) - filters.min(axis=2)) > 40).sum() > 1000


@pytest.mark.slow
def test_untrained_lenet_json_default_folder_and_channels(photos_dir: Path, tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet").mkdir()  # --model names a model even when a folder of that name exists
    assert main(["explain", "--model", "lenet", str(photos_dir / "rocket.jpg"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trained"] is False and "meaningless" in report["notes"][0]
    files = {k: Path(v) for k, v in report["files"].items()}
    assert all(p.parent == Path("cnnlab-figures/explain-lenet-rocket") and p.is_file() for p in files.values())
    assert Image.open(files["input"]).mode == "L"  # LeNet's own input: one channel
    assert main(["explain", "--model", "lenet", str(photos_dir / "rocket.jpg"), "--in-chans", "3",
                 "--input-size", "32x48", "--layers", "conv1", "--out", "rgb", "--json"]) == 0
    seen = Image.open(json.loads(capsys.readouterr().out)["files"]["input"])
    assert seen.mode == "RGB" and seen.size == (48 * 7, 32 * 7)  # 32x48 scaled to a short side >= 224


def test_clear_errors(digits_run: Path, digit_png: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(CnnlabError, match="no such file"):
        explain(digits_run, tmp_path / "missing.png", tmp_path / "o")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(CnnlabError, match="not an image"):
        explain(digits_run, text, tmp_path / "o")
    with pytest.raises(CnnlabError, match=r"no layer named 'conv9'.*Available layers: conv1, relu1"):
        explain(digits_run, digit_png, tmp_path / "o", layers="conv9")
    with pytest.raises(CnnlabError, match="no conv, activation or pool layer matches 'layer4.*'"):
        explain(digits_run, digit_png, tmp_path / "o", layers="layer4.*")
    with pytest.raises(CnnlabError, match="unknown class 'cat'.*0, 1, 2"):
        explain(digits_run, digit_png, tmp_path / "o", target="cat")
    with pytest.raises(CnnlabError, match=r"class index 10 out of range.*\(0..9\)"):
        explain(digits_run, digit_png, tmp_path / "o", target=10)
    with pytest.raises(CnnlabError, match="no such run folder or checkpoint, and no model of that name"):
        explain("resnet-18", digit_png, tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="holds no checkpoint"):
        explain(tmp_path / "empty", digit_png, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # bad input is refused before anything is written
    for argv, words in (
        (["explain", str(digit_png)], "give a run folder or --model NAME"),
        (["explain", str(digits_run), str(digit_png), "--model", "lenet"], "not both"),
        (["explain", str(digits_run), str(digit_png), "--in-chans", "3"], "go with --model"),
    ):
        assert main(argv) == 2
        assert words in capsys.readouterr().err


def test_help_reads_well(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: cnnlab explain [-h] [--model NAME]") and "[RUN] IMAGE" in text
    flat = " ".join(text.split())
    for words in ("the input as the model sees it", "untrained (random weights)", "(default: 5)",
                  "RUN/explain-<image name>/", "cnnlab explain --model resnet18 photo.jpg"):
        assert words in flat, words
    assert max(len(line) for line in text.splitlines()) <= 80
