"""Outputs that agree with each other: eval's mistakes.png shows mistakes only, the report shows every probe
snapshot and the resolved augmentation once, kernels.png keeps its titles inside, a one-epoch run draws a curve,
and the summary's pooling formula is torch's."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.cli.main import main
from cnnlab.inspect.summary import output_size_formula
from cnnlab.training.evaluation import evaluate_run
from cnnlab.training.run import load_run


def test_eval_mistakes_png_shows_only_mistakes_and_says_how_many(digits_run: Path, tmp_path: Path, capsys,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnlab.viz

    drawn = {}
    real = cnnlab.viz.plot_mistakes

    def spy(images, true, pred, confidence, classes, **kw):
        drawn.update(true=list(true), pred=list(pred), title=kw.get("title"))
        return real(images, true, pred, confidence, classes, **kw)

    monkeypatch.setattr(cnnlab.viz, "plot_mistakes", spy)
    ev = evaluate_run(load_run(digits_run))
    wrong = len(ev.wrong)
    assert 0 < wrong < 24  # a good model: fewer mistakes than the gallery's 24 tiles
    assert main(["eval", str(digits_run), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert len(drawn["true"]) == wrong and all(t != p for t, p in zip(drawn["true"], drawn["pred"]))
    assert f"{wrong} of the {wrong} misclassified images" in drawn["title"]
    assert f"mistakes: {wrong} of {ev.n} images misclassified" in out
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["mistakes"] == wrong
    assert main(["eval", str(digits_run), "--out", str(tmp_path / "f"), "--mistakes", "2"]) == 0
    assert len(drawn["true"]) == 2 and drawn["title"].startswith(f"2 of the {wrong} misclassified")


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet on 600 digits for one epoch, probed once (epochs 0 and 1)."""
    out = tmp_path_factory.mktemp("one") / "run"
    cnnlab.train(model="lenet", dataset="digits", epochs=1, subset=600, batch_size=16, probe_every=1, seed=0,
                 out=str(out), quiet=True)
    return out


def test_a_one_epoch_run_records_and_draws_a_loss_curve(one_epoch: Path) -> None:
    from cnnlab.viz import plot_curves

    row = json.loads((one_epoch / "metrics.jsonl").read_text().splitlines()[0])
    curve = row["train_loss_curve"]
    assert len(curve) >= 30 and curve[-1][0] == 1.0 and 0 < curve[0][0] < 0.1  # 38 steps, one point per step
    assert curve[0][1] > curve[-1][1]  # the loss fell during the epoch
    fig = plot_curves(load_run(one_epoch).history)
    loss_axes = fig.axes[0]
    lines = [line for line in loss_axes.get_lines() if len(line.get_xdata()) > 2]
    assert lines and list(lines[0].get_xdata()) == [p[0] for p in curve]  # a real curve, not a single star
    assert loss_axes.get_xlim()[0] == 0.0 and 1.0 < loss_axes.get_xlim()[1] < 1.1  # the epoch, from its start
    assert load_run(one_epoch, checkpoint="last").checkpoint["history"][0]["train_loss_curve"] == curve


@pytest.mark.slow
def test_the_report_shows_every_probe_snapshot_and_the_resolved_augmentation_once(one_epoch: Path,
                                                                                   tmp_path: Path) -> None:
    from cnnlab.apps.report import render_report
    from cnnlab.inspect.probes import load_probes

    run_dir = tmp_path / "run"
    shutil.copytree(one_epoch, run_dir)
    first = torch.load(run_dir / "probes" / "epoch-000.pt", weights_only=True)
    for epoch in range(11):  # eleven snapshots, as in the run the issue saw
        torch.save(first | {"epoch": epoch}, run_dir / "probes" / f"epoch-{epoch:03d}.pt")
    assert len(load_probes(run_dir)) == 11
    html = render_report(load_run(run_dir), mistakes=2, feature_images=0)
    for epoch in range(11):
        assert f"<th>epoch {epoch}</th>" in html, epoch  # the predictions table: every snapshot
    assert html.count('alt="first-layer filters by epoch"') == 1  # 11 rows fit one figure
    setup = html[html.index('id="setup"'):html.index('id="curves"')]
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]["augment"]
    assert f"<th>augmentation</th><td>{resolved}</td>" in setup
    assert "<th>augment</th>" not in setup  # not a second, contradicting "auto"


def test_kernel_figure_titles_stay_inside_the_picture(photos_dir: Path) -> None:
    from cnnlab.conv.images import load_image
    from cnnlab.conv.kernels import parse_kernel
    from cnnlab.viz.conv import pipeline_figure

    image = load_image(photos_dir / "camera.png", gray=True, size=64)
    kernels = dict(parse_kernel(k) for k in ("sobel_x", "gaussian:n=7,sigma=2", "laplacian"))
    fig = pipeline_figure(image, kernels)
    fig.canvas.draw()
    box = fig.bbox
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        title = ax.title
        if title.get_text():
            ext = title.get_window_extent(renderer)
            assert ext.x0 >= box.x0 - 0.5 and ext.x1 <= box.x1 + 0.5, (title.get_text(), ext, box)


def test_pooling_formula_is_torchs_over_a_grid() -> None:
    misses, checked = [], 0
    for n, k, s, p, ceil in itertools.product(range(1, 13), range(1, 5), range(1, 4), range(0, 3), (False, True)):
        if p > k // 2 or n + 2 * p < k:
            continue  # torch refuses these
        for pool in (nn.MaxPool2d(k, s, p, ceil_mode=ceil), nn.AvgPool2d(k, s, p, ceil_mode=ceil)):
            expected = pool(torch.zeros(1, 1, n, n)).shape[-1]
            text, value, _ = output_size_formula(n, k, p, s, 1, ceil)
            checked += 1
            if value != expected or not text.endswith(f"= {expected}") and f"= {expected} (" not in text:
                misses.append((type(pool).__name__, n, k, s, p, ceil, text, expected))
    assert checked > 500 and not misses, misses[:5]
    text, value, _ = output_size_formula(5, 2, 1, 2, 1, True)  # the MaxPool2d(2, 2, padding=1, ceil)
    assert value == 3 and "right padding" in text
    summary = cnnlab.summary(nn.Sequential(nn.MaxPool2d(2, 2, padding=1, ceil_mode=True)), (1, 5, 5))
    assert summary.rows[0].output_shape == (1, 3, 3) and summary.rows[0].formulas[0].startswith("H,W: ceil(")
    assert "= 3" in summary.rows[0].formulas[0]


def test_lenets_summary_has_no_identity_row() -> None:
    s = cnnlab.summary(cnnlab.get_model("lenet"), (1, 28, 28))
    assert "Identity" not in str(s) and [r.name for r in s.rows][-1] == "fc2"
    with_softmax = cnnlab.summary(cnnlab.get_model("lenet", final_softmax=True), (1, 28, 28))
    assert [r.type for r in with_softmax.rows][-1] == "Softmax"  # a layer that does something keeps its row
