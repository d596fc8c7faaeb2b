"""Inputs users really send: digits drawn dark on white (inverted, and said to be), photos unlike the training
images (said to be), sizes written height x width x channels (refused with the right spelling)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.data.domain import Domain, InputWarning, check_input, measure_domain
from cnnlab.errors import CnnlabError
from cnnlab.models import parse_input_size
from cnnlab.training.run import load_run

N_DIGITS = 300


@pytest.fixture(scope="module")
def mnist_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet on 3,000 real MNIST training digits for two epochs (about 95% on the test split)."""
    out = tmp_path_factory.mktemp("runs") / "lenet-mnist"
    cnnlab.train(model="lenet", dataset="mnist", subset=3000, epochs=2, val_size=0, seed=0, data_dir=str(data_dir),
                 out=str(out), quiet=True)
    return out


@pytest.fixture(scope="module")
def digits(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path], list[int]]:
    """The first 300 real MNIST test digits as PNGs: as stored (light on black) and inverted (dark on white)."""
    test = get_dataset("mnist", "test", data_dir)
    folder = tmp_path_factory.mktemp("digits")
    plain, dark, labels = [], [], []
    for i in range(N_DIGITS):
        pixels = test.images[i, 0].numpy()
        plain.append(folder / f"plain-{i}.png")
        dark.append(folder / f"dark-{i}.png")
        Image.fromarray(pixels).save(plain[-1])
        Image.fromarray(255 - pixels).save(dark[-1])
        labels.append(int(test.targets[i]))
    return plain, dark, labels


def _accuracy(predictions, labels: list[int]) -> float:
    return float(np.mean([p.top[0][0] == str(t) for p, t in zip(predictions, labels)]))


@pytest.mark.slow
def test_the_run_records_its_training_images(mnist_run: Path) -> None:
    domain = load_run(mnist_run).pipeline.domain
    assert domain.background == "dark" and domain.aspect == 1.0
    assert 0.08 < domain.brightness[0] < 0.2 and 0 < domain.brightness[1] < 0.1  # MNIST: mostly black
    assert 0.2 < domain.contrast[0] < 0.4


def test_dark_on_light_mnist_digits_are_inverted_and_read_as_well_as_the_originals(mnist_run: Path, digits) -> None:
    plain, dark, labels = digits
    run = load_run(mnist_run)
    as_trained = run.classify(plain)
    inverted = run.classify(dark)
    untouched = run.classify(dark, invert=False)
    assert not any(p.inverted for p in as_trained) and all(p.inverted for p in inverted)
    assert not any(p.inverted for p in untouched)
    acc, acc_inverted, acc_untouched = (_accuracy(r, labels) for r in (as_trained, inverted, untouched))
    assert acc > 0.85 and acc_inverted == acc  # inverted back, they are the same pixels
    assert acc_untouched < 0.5, acc_untouched  # what users got before: a dark digit on white is read badly
    assert all(any("brightness" in w for w in p.warnings) for p in untouched)  # and said to be unlike the training
    assert sum(any("brightness" in w or "shape" in w for w in p.warnings) for p in as_trained) == 0


def test_the_python_api_says_so_and_can_be_told_not_to(mnist_run: Path, digits) -> None:
    plain, dark, labels = digits
    run = load_run(mnist_run)
    with pytest.warns(InputWarning, match="inverted"):
        top = run.predict(dark[0])
    assert top[0][0] == str(labels[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        run.predict(plain[0])  # an image like the training images: nothing to say
        probs = run.predict_proba([plain[0], plain[1]])
    assert probs.shape == (2, 10)
    with pytest.warns(InputWarning, match="brightness"):
        run.predict_proba(dark[0], invert=False)


def test_the_cli_inverts_and_says_so(mnist_run: Path, digits, capsys) -> None:
    plain, dark, labels = digits
    assert main(["predict", str(mnist_run), str(dark[0]), str(plain[0])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"{dark[0]}: {labels[0]} ") and "note: inverted" in lines[1]
    assert lines[2].startswith(f"{plain[0]}: {labels[0]} ") and "note:" not in "".join(lines[3:])
    assert main(["predict", str(mnist_run), str(dark[0]), "--no-invert", "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)[0]
    assert reply["inverted"] is False and any("brightness" in w for w in reply["warnings"])


def test_the_rest_api_inverts_and_says_so(mnist_run: Path, digits) -> None:
    from fastapi.testclient import TestClient

    from cnnlab.apps.serve import create_app

    plain, dark, labels = digits
    client = TestClient(create_app(mnist_run))
    files = {"image": ("dark.png", dark[0].read_bytes(), "image/png")}
    reply = client.post("/api/predict", files=files).json()
    assert reply["inverted"] is True and reply["predictions"][0]["class"] == str(labels[0])
    off = client.post("/api/predict?invert=false", files=files).json()
    assert off["inverted"] is False and off["warnings"]
    explained = client.post("/api/explain", files=files).json()
    assert explained["inverted"] is True and explained["predictions"][0]["class"] == str(labels[0])


def test_photos_to_a_digit_model_are_said_to_be_unlike_its_training_images(mnist_run: Path, photos_dir: Path,
                                                                            capsys) -> None:
    run = load_run(mnist_run)
    astronaut, rocket = run.classify([photos_dir / "astronaut.png", photos_dir / "rocket.jpg"])
    assert any("colour image" in w for w in astronaut.warnings)
    assert any("brightness" in w for w in astronaut.warnings)
    assert any("shape (640x427" in w for w in rocket.warnings)
    assert main(["predict", str(mnist_run), str(photos_dir / "astronaut.png")]) == 0
    assert "note: a colour image, but the model was trained on gray images" in capsys.readouterr().out


def test_explain_inverts_and_notes(mnist_run: Path, digits, tmp_path: Path, capsys) -> None:
    plain, dark, labels = digits
    assert main(["explain", str(mnist_run), str(dark[0]), "--out", str(tmp_path / "e"), "--json",
                 "--layers", "conv1"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["inverted"] is True and reply["prediction"][0]["class"] == str(labels[0])
    assert reply["notes"][0].startswith("inverted")


def test_polarity_is_measured_for_folders_and_photos_have_none() -> None:
    g = torch.Generator().manual_seed(0)
    strokes = (torch.rand(50, 1, 28, 28, generator=g) > 0.9).to(torch.uint8) * 255
    strokes[:, :, :3] = 0
    strokes[:, :, -3:] = 0
    strokes[:, :, :, :3] = 0
    strokes[:, :, :, -3:] = 0
    assert measure_domain(strokes).background == "dark"
    assert measure_domain(255 - strokes).background == "light"
    noise = torch.randint(0, 256, (50, 3, 32, 48), generator=g, dtype=torch.uint8)
    photos = measure_domain(noise, varied_sizes=True)
    assert photos.background is None and photos.aspect is None
    assert measure_domain(strokes, dark_background=False).background == "light"  # the dataset's info wins
    same = Domain.from_dict(measure_domain(strokes).to_dict())
    assert same == measure_domain(strokes)
    with pytest.raises(CnnlabError, match="unreadable"):
        Domain.from_dict({"background": "purple"})
    from cnnlab.data import Pipeline

    pipe = Pipeline.build(1, (1, 28, 28), (0.13,), (0.31,), domain=measure_domain(strokes))
    assert Pipeline.from_dict(json.loads(json.dumps(pipe.to_dict()))) == pipe  # as checkpoints and exports hold it
    old = {k: v for k, v in pipe.to_dict().items() if k != "domain"}  # a run from before domains were recorded
    assert Pipeline.from_dict(old).domain is None
    light = torch.full((1, 28, 28), 250, dtype=torch.uint8)
    out, found = check_input(Domain("dark"), light, (28, 28), False, 1)
    assert found.inverted and int(out.max()) == 5
    out, found = check_input(None, light, (28, 28), True, 1)  # nothing recorded: nothing said, nothing changed
    assert not found.inverted and not found.warnings and torch.equal(out, light)


def test_sizes_written_height_width_channels_are_refused_with_the_right_spelling(capsys) -> None:
    with pytest.raises(CnnlabError, match="looks like height x width x channels.*use 3x32x32"):
        parse_input_size("32x32x3")
    assert parse_input_size("3x32x32") == (3, 32, 32) and parse_input_size("1x28x28") == (1, 28, 28)
    assert parse_input_size("28x28") == (28, 28)
    assert main(["summary", "lenet", "--input-size", "32x32x3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use 3x32x32" in err and "too small" not in err
    assert main(["summary", "lenet", "--input", "3x32x32"]) == 0  # the former flag name still works
    assert main(["summary", "lenet", "--input-size", "3x32x32"]) == 0
