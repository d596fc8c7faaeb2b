"""The Python API as a notebook user meets it: names accepted where the command line accepts them, and results
that show themselves in Jupyter (a run with its curves, an explanation with its pictures, runs as a table)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import cnnlab
from cnnlab.errors import CnnlabError


def test_summary_takes_a_registered_name_as_cnnlab_summary_does() -> None:
    by_name = cnnlab.summary("lenet")
    assert str(by_name) == str(cnnlab.summary(cnnlab.get_model("lenet")))
    wider = cnnlab.summary("lenet", "3x32x32")  # built for that size: its flatten size computed from it
    assert wider.input_size == (3, 32, 32) and str(wider) == str(cnnlab.summary(cnnlab.get_model(
        "lenet", input_size=(3, 32, 32))))
    with pytest.raises(CnnlabError, match="unknown model 'lenett'. Did you mean: lenet"):
        cnnlab.summary("lenett")


def test_a_run_shows_its_result_and_curves_in_jupyter(digits_run: Path) -> None:
    run = cnnlab.load_run(digits_run)
    shown = run._repr_html_()
    assert "status completed" in shown and "test accuracy" in shown and "(95% CI" in shown
    assert shown.count("<img src='data:image/png;base64,") == 1  # curves.png


def test_an_explanation_shows_its_pictures_in_jupyter(digits_run: Path, tmp_path: Path) -> None:
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    explained = cnnlab.explain(cnnlab.load_run(digits_run), image, tmp_path / "explained")
    shown = explained._repr_html_()
    pngs = [p for p in explained.values() if Path(p).suffix == ".png"]
    assert pngs and shown.count("<figure><img src='data:image/png;base64,") == len(pngs)
    assert all(explained.descriptions[name].split("<")[0][:20] in shown for name in explained)


def test_a_finished_run_says_how_to_train_it_longer_from_python(digits_run: Path) -> None:
    with pytest.raises(CnnlabError, match=r"cnnlab.resume\(run, epochs=N\)"):
        cnnlab.resume(digits_run)
