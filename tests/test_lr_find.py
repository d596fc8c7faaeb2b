"""The learning-rate range test: it finds a rate that trains on a toy problem, leaves model, optimizer and RNG as it
found them, says so in one line when nothing fits; `--lr auto` trains with its suggestion and a resume keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError
from cnnlab.training import lr_find as finder
from cnnlab.training import prepare
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.config import coerce, resolve
from cnnlab.training.loss import Criterion

CPU = torch.device("cpu")


def toy_batches(n: int = 1024, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Two linearly separable classes in the plane."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y, [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def toy_model(lr: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def one_epoch_accuracy(lr: float) -> float:
    x, y, batches = toy_batches()
    model, opt = toy_model(lr)
    for xb, yb in batches:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (model(x).argmax(1) == y).float().mean().item()


def test_the_suggestion_lies_where_training_converges() -> None:
    # Measured on this problem, one epoch of plain SGD: 1e-4 -> 49%, 1e-2 -> 72%, 0.3-1 -> 98-99%, 10 -> 66%.
    assert one_epoch_accuracy(1e-4) < 0.6 and one_epoch_accuracy(10.0) < 0.8  # the range is not everything
    model, opt = toy_model(0.1)
    result = finder.lr_find(model, Criterion(), opt, toy_batches()[2], CPU)
    assert result.suggestion is not None and 0.1 <= result.suggestion <= 3.0, result.suggestion
    assert one_epoch_accuracy(result.suggestion) >= 0.97
    assert result.lrs == sorted(result.lrs) and len(result.lrs) == len(result.losses) <= finder.NUM_STEPS


def test_the_search_leaves_model_optimizer_and_rng_untouched() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y, batches = toy_batches()
    nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
    opt.step()  # the optimizer has state (Adam's moments, the step count) to keep
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = json.dumps(opt.state_dict()["param_groups"]), {k: {n: t.clone() for n, t in v.items()}
                                                                for k, v in opt.state_dict()["state"].items()}
    rng = torch.get_rng_state()
    result = finder.lr_find(model, Criterion(), opt, batches, CPU, num_steps=60)
    assert result.lrs  # it did train
    assert not model.training  # the mode it was in
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    groups, state = opt_before
    assert json.dumps(opt.state_dict()["param_groups"]) == groups
    for k, v in opt.state_dict()["state"].items():
        for n, t in v.items():
            assert torch.equal(t, state[k][n]), (k, n)
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_descent_rule_on_a_drawn_curve() -> None:
    flat, fall, rise = [2.3] * 10, [2.3 - 0.1 * i for i in range(1, 11)], [1.5, 3.0]
    start, end = finder.descent(flat + fall + rise)
    assert end == 19 and 10 <= start <= 11  # the minimum; the first point of the fall (past a tenth of it)
    assert finder.descent([1.0, 1.001, 0.999, 1.0]) is None  # no fall: nothing to suggest


def test_a_loss_that_is_nan_at_once_gets_one_line_and_nothing_changes() -> None:
    model, opt = toy_model(0.1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, _ = toy_batches(64)
    bad = [(torch.full_like(x, float("nan")), y)]
    result = finder.lr_find(model, Criterion(), opt, bad, CPU, num_steps=20)
    assert result.suggestion is None and result.stopped == "nonfinite"
    assert "not finite from the first step" in result.problem and "\n" not in result.problem
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_lr_accepts_auto_and_budget_reads_durations() -> None:
    assert coerce("lr", "auto") == "auto" and coerce("lr", " AUTO ") == "auto" and coerce("lr", "0.01") == 0.01
    with pytest.raises(CnnlabError, match="setting lr='fast'"):
        coerce("lr", "fast")
    assert resolve({"lr": "auto"}).lr == "auto"
    with pytest.raises(CnnlabError, match="--lr must be > 0"):
        resolve({"lr": -1.0})
    assert [coerce("budget", t) for t in ("90", "60s", "2m", "1.5min", "1h", 30)] == [90, 60, 120, 90, 3600, 30]
    with pytest.raises(CnnlabError, match="a duration is needed"):
        coerce("budget", "soon")
    with pytest.raises(CnnlabError, match="--lr auto and --budget measure one process"):
        resolve({"budget": "30s", "nproc": 2})


SMALL = dict(model="lenet", dataset="digits", epochs=1, subset=256, batch_size=32, threads=1, quiet=True)


def test_lr_auto_trains_with_the_suggestion_exactly_as_if_it_had_been_given(tmp_path: Path) -> None:
    auto = cnnlab.train(lr="auto", out=str(tmp_path / "auto"), **SMALL)
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    lr = config["config"]["lr"]
    assert isinstance(lr, float) and 1e-4 < lr < 1.0
    assert config["resolved"]["choices"]["lr"]["value"] == lr and "range test" in config["resolved"]["choices"]["lr"][
        "reason"]
    given = cnnlab.train(lr=lr, out=str(tmp_path / "given"), **SMALL)
    # The search left weights, optimizer, RNG and batches as they were: the same run, bit for bit.
    a = load_checkpoint(tmp_path / "auto" / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "given" / "checkpoints" / "last.pt")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert auto.results["test_acc"] == given.results["test_acc"]


def test_a_resumed_lr_auto_run_keeps_its_rate_and_never_searches_again(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cnnlab.train(lr="auto", out=str(tmp_path / "r"), **SMALL)
    lr = json.loads((tmp_path / "r" / "config.json").read_text())["config"]["lr"]

    def refuse(*args, **kwargs):
        raise AssertionError("the range test ran again")

    monkeypatch.setattr(prepare, "lr_find", refuse)
    run = cnnlab.train(resume=str(tmp_path / "r"), epochs=2, quiet=True)
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["lr"] == lr


def test_cli_lr_find_plots_and_prints_and_a_flat_curve_is_one_line(tmp_path: Path, capsys) -> None:
    common = ["lr-find", "--subset", "256", "--threads", "1", "--steps", "60"]
    assert main([*common, "--out", str(tmp_path / "lr.png")]) == 0
    out = capsys.readouterr().out
    assert "suggested learning rate:" in out and (tmp_path / "lr.png").stat().st_size > 5000
    assert main([*common, "--start-lr", "1e-9", "--end-lr", "1e-8", "--out", str(tmp_path / "flat.png")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: no learning rate to suggest: the loss never fell") and "\n" not in err
    assert (tmp_path / "flat.png").exists()  # the curve is still drawn, to look at
