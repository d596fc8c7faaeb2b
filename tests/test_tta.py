"""Test-time augmentation: mirror-averaged outputs, refused where mirroring changes labels, one figure everywhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.apps.serve import create_app
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.training.evaluation import evaluate_run
from cnnlab.training.run import load_run
from cnnlab.training.tta import check_tta, dataset_flip_ok, resolve_tta, with_tta


def test_flip_tta_makes_the_outputs_mirror_invariant() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))  # not mirror-symmetric
    x = torch.randn(8, 1, 28, 28)
    assert not torch.allclose(net(x), net(x.flip(3)), atol=1e-3)
    assert torch.allclose(with_tta(net, x, "flip"), with_tta(net, x.flip(3), "flip"), atol=1e-6)
    assert torch.allclose(with_tta(net, x, "flip"), (net(x) + net(x.flip(3))) / 2)
    assert torch.equal(with_tta(net, x, "none"), net(x))


def test_flip_tta_is_refused_where_mirroring_changes_labels(tmp_path: Path, digits_run: Path, photos_dir: Path,
                                                           capsys) -> None:
    with pytest.raises(CnnlabError, match="flip would change the labels of mnist"):
        check_tta("flip", dataset_flip_ok("mnist"), "mnist")
    assert check_tta("flip", dataset_flip_ok("fashion-mnist")) == "flip"
    assert dataset_flip_ok("folder:/photos") and not dataset_flip_ok("digits")
    with pytest.raises(CnnlabError, match="unknown test-time augmentation 'rotate'"):
        check_tta("rotate", True)
    with pytest.raises(CnnlabError, match="flip would change the labels of digits"):
        cnnlab.train(recipe="digits", tta="flip", out=str(tmp_path / "r"), quiet=True)
    assert not (tmp_path / "r" / "results.json").exists()
    image = str(next(photos_dir.glob("*.png")))
    assert main(["predict", str(digits_run), image, "--tta", "flip"]) == 2
    assert "flip would change the labels of digits" in capsys.readouterr().err
    assert main(["eval", str(digits_run), "--tta", "flip"]) == 2
    client = TestClient(create_app(digits_run))
    png = Path(image).read_bytes()
    # An unknown mode is refused by the API's own schema (it lists the choices), a label-changing one by cnnlab.
    for tta, message in [("flip", "flip would change the labels of digits"), ("rotate", "'none' or 'flip'")]:
        reply = client.post(f"/api/predict?tta={tta}", files={"image": ("x.png", png, "image/png")})
        assert reply.status_code == 422 and message in reply.json()["detail"], reply.text


@pytest.mark.slow
def test_a_run_tested_with_flip_tta_answers_alike_in_train_eval_predict_and_serve(data_dir: Path, tmp_path: Path,
                                                                                     capsys) -> None:
    out = tmp_path / "fashion"
    run = cnnlab.train(model="lenet", dataset="fashion-mnist", subset=3000, epochs=1, augment="flip", tta="flip",
                       seed=0, out=str(out))
    assert run.results["tta"] == "flip"
    assert "with flip TTA" in capsys.readouterr().out
    tested = evaluate_run(load_run(out))  # by default, as the run was tested
    plain = evaluate_run(load_run(out), tta="none")
    assert tested.tta == "flip" and plain.tta == "none"
    assert abs(tested.report.accuracy - run.results["test_acc"]) <= 1e-4
    assert not torch.allclose(tested.logits, plain.logits, atol=1e-3)
    assert main(["eval", str(out), "--tta", "none", "--out", str(tmp_path / "eval")]) == 0
    assert f"accuracy {plain.report.accuracy:.2%}  loss" in capsys.readouterr().out

    image = get_dataset("fashion-mnist", "test", data_dir).images[0]  # (1, 28, 28) uint8
    predictor = load_run(out)
    both = predictor.predict_proba([image, image.flip(2)], tta="flip")
    assert torch.allclose(both[0], both[1], atol=1e-5)  # the image and its mirror get one answer
    assert not torch.allclose(predictor.predict_proba(image), both[0], atol=1e-4)

    buf = io.BytesIO()
    Image.fromarray(image[0].numpy()).save(buf, format="PNG")
    reply = TestClient(create_app(out)).post("/api/predict?tta=flip&topk=10",
                                              files={"image": ("x.png", buf.getvalue(), "image/png")})
    served = torch.zeros(10)
    for p in reply.json()["predictions"]:
        served[p["index"]] = p["probability"]
    assert torch.allclose(served, both[0], atol=1e-5)  # the server gives the same mirror-averaged answer


@pytest.mark.slow
def test_tta_auto_tests_with_mirrors_exactly_where_training_mirrored(data_dir: Path, tmp_path: Path,
                                                                     digits_run: Path) -> None:
    assert resolve_tta("auto", True) == "flip" and resolve_tta("auto", False) == "none"
    assert resolve_tta("auto", True, feature_extraction=True) == "none"  # features computed once, unmirrored
    assert resolve_tta("none", True) == "none" and resolve_tta("flip", False) == "flip"  # given: kept (then checked)
    common = dict(model="lenet", dataset="fashion-mnist", subset=600, epochs=1, seed=0, quiet=True)
    for augment, tta in (("flip", "flip"), ("translate=2", "none")):
        out = tmp_path / augment
        run = cnnlab.train(augment=augment, out=str(out), **common)  # --tta auto, the default
        config = json.loads((out / "config.json").read_text())["config"]
        assert run.results["tta"] == config["tta"] == tta, augment
    assert json.loads((digits_run / "results.json").read_text())["tta"] == "none"  # digits: no flips, no mirrors
