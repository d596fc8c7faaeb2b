"""Honest figures on small test sets: the accuracy's Wilson interval, balanced accuracy and per-class recall where
the classes are unbalanced, and `--class-weights` for unbalanced training data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SignalAt
from PIL import Image
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.utils.class_weight import compute_class_weight

import cnnlab
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.loss import Criterion, balanced_weights, class_weights
from cnnlab.training.metrics import accuracy_text, report, wilson_interval

Z = 1.959963984540054


# ---------------------------------------------------------------- the Wilson interval


@pytest.mark.parametrize("k, n, low, high", [
    # By hand: at k = 0 the interval is [0, z^2 / (n + z^2)]; at k = n it is [n / (n + z^2), 1].
    (0, 10, 0.0, Z**2 / (10 + Z**2)),
    (10, 10, 10 / (10 + Z**2), 1.0),
    (0, 1, 0.0, Z**2 / (1 + Z**2)),
    # 5 of 10: centre 0.5, half-width z / (1 + z^2/10) * sqrt(0.25/10 + z^2/400) = 1.416009 * 0.186021 = 0.263407.
    (5, 10, 0.5 - 0.263407, 0.5 + 0.263407),
    # 206 of 220: p = 0.936364, centre (p + z^2/440) / (1 + z^2/220) = 0.928875,
    # half-width z / (1 + z^2/220) * sqrt(p (1 - p) / 220 + z^2/193600) = 0.032843.
    (206, 220, 0.928875 - 0.032843, 0.928875 + 0.032843),
])
def test_the_wilson_interval_matches_a_hand_computation(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1.5e-6) and hi == pytest.approx(high, abs=1.5e-6)
    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")  # and SciPy's
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_the_accuracy_text_shows_the_interval_under_1000_images() -> None:
    assert accuracy_text(206 / 220, 220) == "93.6% (95% CI 89.6-96.2%, 220 images)"
    assert accuracy_text(0.9361, 10_000) == "93.61%"  # a large test split: the interval is narrow, not shown
    assert accuracy_text(0.5, None) == "50.00%"


# ---------------------------------------------------------------- balanced accuracy and per-class recall


def unbalanced_toy(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets with 200 / 30 / 8 images in three classes, predictions right 90% of the time."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((200,), 0), torch.full((30,), 1), torch.full((8,), 2)])
    pred = torch.where(torch.rand(len(y), generator=g) < 0.9, y, torch.randint(0, 3, (len(y),), generator=g))
    return y, pred


def test_balanced_accuracy_and_per_class_recall_agree_with_sklearn() -> None:
    y, pred = unbalanced_toy()
    rep = report(F.one_hot(pred, 3).float() * 5, y, 0.0, ("a", "b", "c"))
    assert rep.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert rep.recall == pytest.approx(recall_score(y, pred, average=None).tolist(), abs=1e-12)
    saved = rep.to_dict("test")
    assert saved["test_balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert saved["test_images"] == 238 and saved["test_class_imbalance"] == 25.0
    assert (saved["test_acc_ci_low"], saved["test_acc_ci_high"]) == wilson_interval(int((y == pred).sum()), 238)


# ---------------------------------------------------------------- class weights in the loss


def test_balanced_weights_are_sklearns_and_auto_weighs_only_unbalanced_classes() -> None:
    counts = [300, 30, 45]
    y = np.repeat(np.arange(3), counts)
    assert balanced_weights(counts) == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=y))
    assert class_weights("auto", [140, 100])[0] is None  # 1.4:1 is balanced enough
    weights, why = class_weights("auto", [150, 100])
    assert weights == pytest.approx((250 / 300, 250 / 200)) and "1.5x" in why
    assert class_weights("none", counts)[0] is None
    assert class_weights("balanced", [100, 100])[0] == (1.0, 1.0)


def test_the_weighted_loss_is_torchs_and_one_logit_agrees_with_two() -> None:
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(64, generator=g), torch.randint(0, 2, (64,), generator=g)
    w = (0.6, 3.0)
    two = torch.stack([torch.zeros_like(z), z], 1)  # softmax of (0, z) is sigmoid(z)
    loss2, _ = Criterion(class_weights=w)(two, y)
    assert loss2 == pytest.approx(F.cross_entropy(two, y, weight=torch.tensor(w)).item(), rel=1e-6)
    loss1, _ = Criterion(single_logit=True, class_weights=w)(z[:, None], y)
    assert loss1 == pytest.approx(loss2.item(), rel=1e-5)
    # Evaluation reports the plain per-image loss, weights or not.
    assert torch.equal(Criterion(class_weights=w).per_image(two, y), Criterion().per_image(two, y))


# ---------------------------------------------------------------- end to end on a small unbalanced folder


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 images of the digit 0 and 12 of the digit 1 (the bundled 8x8 digits) as PNGs: 5:1."""
    root = tmp_path_factory.mktemp("lopsided")
    digits = get_dataset("digits", "train")
    for digit, count in (("0", 60), ("1", 12)):
        (root / digit).mkdir()
        idx = (digits.targets == int(digit)).nonzero().flatten()[:count]
        for i in idx.tolist():
            Image.fromarray(digits.images[i, 0].numpy()).save(root / digit / f"{i}.png")
    return root


SMALL = dict(model="lenet", epochs=2, batch_size=16, select="best", seed=0)  # best: the validation split is kept


def test_an_unbalanced_folder_is_weighted_and_its_small_test_split_reported_honestly(
        lopsided: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    run = cnnlab.train(dataset=f"folder:{lopsided}", out=str(out), **SMALL)
    printed = capsys.readouterr().out
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    weights = resolved["class_weights"]["weights"]
    train = get_dataset(f"folder:{lopsided}", "train")
    assert weights == pytest.approx(balanced_weights(torch.bincount(train.targets).tolist()))
    assert weights[1] > 4 * weights[0]
    assert "class weights 0 0." in printed and "(auto: the largest class has" in printed
    assert load_checkpoint(out / "checkpoints" / "best.pt")["class_weights"] == pytest.approx(weights)

    results = json.loads((out / "results.json").read_text())
    n = results["test_images"]
    assert n == sum(c["support"] for c in results["per_class"]) < 20
    low, high = wilson_interval(round(results["test_acc"] * n), n)
    assert (results["test_acc_ci_low"], results["test_acc_ci_high"]) == pytest.approx((low, high))
    assert results["test_balanced_acc"] == pytest.approx(sum(c["recall"] for c in results["per_class"]) / 2)
    shown = f"test accuracy {results['test_acc']:.1%} (95% CI {low * 100:.1f}-{high:.1%}, {n} images)"
    assert shown in printed and "balanced accuracy " in printed and "classes unbalanced" in printed
    assert run.results["test_balanced_acc"] == results["test_balanced_acc"]

    assert main(["eval", str(out)]) == 0
    evaluated = capsys.readouterr().out
    assert f"accuracy {results['test_acc']:.1%} (95% CI {low * 100:.1f}-{high:.1%}, {n} images)" in evaluated
    assert "balanced accuracy" in evaluated
    saved = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert saved["test_acc_ci_low"] == pytest.approx(low) and saved["test_images"] == n
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_balanced_acc"] == pytest.approx(results["test_balanced_acc"])

    assert main(["report", str(out), "--mistakes", "0", "--images", "0"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"(95% CI {low * 100:.1f}-{high:.1%}, {n} images)" in page and "balanced accuracy" in page
    assert f"1 {weights[1]:.2f} (auto: the largest class has" in page


def test_json_output_carries_the_interval(lopsided: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cnnlab.train(dataset=f"folder:{lopsided}", out=str(tmp_path / "run"), json=True, class_weights="none",
                 **{**SMALL, "epochs": 1})
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["event"] == "done" and 0 <= done["test_acc_ci_low"] <= done["test_acc"] <= done["test_acc_ci_high"]
    assert done["test_images"] < 20 and "test_balanced_acc" in done
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["class_weights"] == {"weights": None, "why": "none"}


def test_a_resumed_run_keeps_its_class_weights(lopsided: Path, tmp_path: Path) -> None:
    settings = dict(dataset=f"folder:{lopsided}", quiet=True, threads=1, **SMALL)
    straight = cnnlab.train(out=str(tmp_path / "a"), **settings)

    ctrl_c = SignalAt(3)  # in the second epoch (2 steps per epoch)
    assert cnnlab.train(out=str(tmp_path / "b"), callbacks=[ctrl_c], **settings).status == "interrupted"
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert ckpt["class_weights"] and ckpt["config"]["class_weights"] == "auto" and ckpt["step"] == 3
    resumed = cnnlab.train(resume=str(tmp_path / "b"), quiet=True)
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt") for r in "ab")
    assert b["class_weights"] == ckpt["class_weights"] == a["class_weights"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert resumed.results["test_acc"] == straight.results["test_acc"]


def test_weights_saved_in_the_checkpoint_win_over_the_data_on_resume(lopsided: Path, tmp_path: Path) -> None:
    from cnnlab.training.config import resolve
    from cnnlab.training.plan import Plan
    from cnnlab.training.record import restore
    from cnnlab.training.setup import build

    cnnlab.train(dataset=f"folder:{lopsided}", out=str(tmp_path / "b"), quiet=True, **{**SMALL, "epochs": 1})
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    ckpt["class_weights"] = [1.0, 2.0]  # as if the folder had changed since
    with build(Plan(resolve({**ckpt["config"], "resume": None, "recipe": None})), run_dir=tmp_path / "b") as job:
        restore(job, ckpt)
        assert job.criterion.class_weights == (1.0, 2.0) and "checkpoint" in job.criterion.weights_why
        del ckpt["class_weights"]  # a run from before class weights trained unweighted: it resumes unweighted
        restore(job, ckpt)
        assert job.criterion.class_weights is None


def test_auto_leaves_a_balanced_built_in_dataset_bit_for_bit_unchanged(tmp_path: Path) -> None:
    runs = {cw: cnnlab.train(dataset="digits", subset=300, epochs=1, class_weights=cw, out=str(tmp_path / cw),
                             quiet=True) for cw in ("auto", "none")}
    a, b = (load_checkpoint(tmp_path / cw / "checkpoints" / "last.pt") for cw in ("auto", "none"))
    assert a["class_weights"] is None and b["class_weights"] is None
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert runs["auto"].results["test_loss"] == runs["none"].results["test_loss"]


def test_feature_extraction_and_a_single_logit_train_with_class_weights(lopsided: Path, tmp_path: Path) -> None:
    run = cnnlab.train(dataset=f"folder:{lopsided}", model="resnet18", input_size="3x32x32", feature_extraction=True,
                       class_weights="balanced", out=str(tmp_path / "fx"), quiet=True, epochs=3, batch_size=16)
    w = load_checkpoint(tmp_path / "fx" / "checkpoints" / "best.pt")["class_weights"]
    assert w[1] > 4 * w[0]
    assert math.isfinite(run.results["test_loss"]) and "test_balanced_acc" in run.results
    one = cnnlab.train(dataset=f"folder:{lopsided}", single_logit=True, out=str(tmp_path / "one"), quiet=True,
                       **SMALL)
    assert one.model.fc2.out_features == 1 and math.isfinite(one.history[-1]["train_loss"])
    w = load_checkpoint(tmp_path / "one" / "checkpoints" / "best.pt")["class_weights"]
    assert w[1] > 4 * w[0]
