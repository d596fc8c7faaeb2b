"""Callbacks, as users write them: the hooks are called when they say, a stop or a change asked for after an epoch is
applied by the run and recorded, a resumed run goes on with it bit for bit, and the documented examples run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SignalAt

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.training import Change
from cnnlab.training.checkpoint import load_checkpoint

# mnist_cnn has dropout: the global RNG and the batch generators must both resume. 4 steps an epoch.
SMALL = dict(model="mnist_cnn", dataset="digits", epochs=3, batch_size=128, augment="none", subset=600, seed=5,
             threads=1, quiet=True)


class Recorder(cnnlab.Callback):
    """Every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, run) -> None:
        self.run = run
        self.calls.append(("begin", run.resumed, run.state.epoch, run.epochs, run.steps_per_epoch))

    def on_step_end(self, step: int, loss: float) -> None:
        self.calls.append(("step", step, loss))

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        self.calls.append(("epoch", epoch, dict(metrics)))

    def on_train_end(self, results) -> None:
        self.calls.append(("end", results))


def test_the_hooks_are_called_in_order_with_the_steps_losses_and_metrics(tmp_path: Path) -> None:
    rec = Recorder()
    run = cnnlab.train(out=str(tmp_path / "r"), callbacks=[rec], **SMALL)
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["begin"] + (["step"] * 4 + ["epoch"]) * 3 + ["end"]
    assert rec.calls[0] == ("begin", False, 0, 3, 4)
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [s[1] for s in steps] == list(range(1, 13))
    epochs = [c for c in rec.calls if c[0] == "epoch"]
    assert [e[1] for e in epochs] == [1, 2, 3] and [e[2] for e in epochs] == run.history
    for e in range(3):  # each epoch's training loss is the mean of its steps' (equal batches)
        losses = [s[2] for s in steps[4 * e: 4 * e + 4]]
        assert sum(losses) / 4 == pytest.approx(run.history[e]["train_loss"], rel=1e-6)
    assert rec.calls[-1] == ("end", run.results) and run.results == json.loads((run.path / "results.json").read_text())
    assert rec.run.run_dir == run.path and rec.run.config.model == "mnist_cnn" and rec.run.is_main
    assert rec.run.model is not None and rec.run.optimizer.param_groups


def test_true_from_on_epoch_end_stops_the_run_and_it_is_recorded(tmp_path: Path) -> None:
    class StopAfterTwo(cnnlab.Callback):
        def on_epoch_end(self, epoch: int, metrics: dict) -> bool:
            return epoch == 2

    run = cnnlab.train(out=str(tmp_path / "r"), callbacks=[StopAfterTwo()], **{**SMALL, "epochs": 5})
    assert run.status == "completed" and len(run.history) == 2 and run.results["epochs_run"] == 2
    reason = "StopAfterTwo.on_epoch_end asked to stop after epoch 2"
    assert run.results["stopped"] == reason and "test_acc" in run.results  # the best weights are still tested
    assert load_checkpoint(run.path / "checkpoints" / "last.pt")["stopped"] == reason
    with pytest.raises(CnnlabError, match="already finished"):  # a resume trains no further
        cnnlab.train(resume=str(run.path), quiet=True)


def test_a_change_applies_from_the_next_epoch_is_recorded_and_a_resume_goes_on_with_it_bit_for_bit(
        tmp_path: Path) -> None:
    class ShiftFromEpochTwo(cnnlab.Callback):
        def on_train_begin(self, run) -> None:
            self.run = run
            self.seen: list[tuple[int, str]] = []

        def on_step_end(self, step: int, loss: float) -> None:
            self.seen.append((self.run.state.epoch, self.run.config.augment))

        def on_epoch_end(self, epoch: int, metrics: dict) -> Change | None:
            if epoch == 1:
                return Change(settings={"augment": "translate=1,cutout=4"}, record={"shifted": True},
                              note="shifts from epoch 2")
            return None

    straight_cb = ShiftFromEpochTwo()
    straight = cnnlab.train(out=str(tmp_path / "a"), callbacks=[straight_cb], **SMALL)
    assert [a for e, a in straight_cb.seen] == ["none"] * 4 + ["translate=1,cutout=4"] * 8
    rows = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("shifted") for r in rows] == [True, None, None]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["config"]["augment"] == "translate=1,cutout=4"
    assert config["resolved"]["changes"] == [{"epoch": 1, "by": "ShiftFromEpochTwo",
                                              "settings": {"augment": "translate=1,cutout=4"}}]
    # The same run, Ctrl-C half-way through epoch 2, then resumed: identical weights.
    first = cnnlab.train(out=str(tmp_path / "b"), callbacks=[ShiftFromEpochTwo(), SignalAt(6)], **SMALL)
    assert first.status == "interrupted"
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert saved["config"]["augment"] == "translate=1,cutout=4" and saved["changes"][0]["epoch"] == 1
    resumed = cnnlab.train(resume=str(tmp_path / "b"), quiet=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results["test_acc"] == straight.results["test_acc"]


def test_on_train_end_hears_of_an_interrupted_run_as_none(tmp_path: Path) -> None:
    rec = Recorder()
    run = cnnlab.train(out=str(tmp_path / "r"), callbacks=[SignalAt(2), rec], **SMALL)
    assert run.status == "interrupted" and rec.calls[-1] == ("end", None)
    again = Recorder()
    cnnlab.train(resume=str(tmp_path / "r"), callbacks=[again], quiet=True)
    assert again.calls[0] == ("begin", True, 0, 3, 4) and again.calls[1][:2] == ("step", 3)


def test_what_is_not_a_callback_or_a_decision_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="is not a callback: pass an object"):
        cnnlab.train(out=str(tmp_path / "a"), callbacks=[Recorder], **SMALL)  # the class, not an instance
    with pytest.raises(CnnlabError, match="on_step= became callbacks="):
        cnnlab.train(out=str(tmp_path / "b"), on_step=lambda job, state: None, **SMALL)

    class Chatty(cnnlab.Callback):
        def on_epoch_end(self, epoch, metrics):
            return "stop please"

    with pytest.raises(CnnlabError, match="Chatty.on_epoch_end returned str"):
        cnnlab.train(out=str(tmp_path / "c"), callbacks=[Chatty()], **SMALL)

    class RateChanger(cnnlab.Callback):
        def on_epoch_end(self, epoch, metrics):
            return Change(settings={"lr": 0.1})

    with pytest.raises(CnnlabError, match="RateChanger: a callback may change augment, augment_on_overfit, epochs"):
        cnnlab.train(out=str(tmp_path / "d"), callbacks=[RateChanger()], **SMALL)


def test_a_plain_object_with_one_hook_is_a_callback(tmp_path: Path) -> None:
    class Steps:  # no base class: any of the hooks will do
        def __init__(self) -> None:
            self.n = 0

        def on_step_end(self, step: int, loss: float) -> None:
            self.n += 1

    steps = Steps()
    cnnlab.train(out=str(tmp_path / "r"), callbacks=[steps], **{**SMALL, "epochs": 1})
    assert steps.n == 4


def _documented_example() -> str:
    text = (ROOT / "docs" / "callbacks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/callbacks.md holds one example"
    return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_documented_example(), "docs/callbacks.md", "exec"), namespace)  # our own docs, run as written
    run = namespace["run"]
    rows = (run.path / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_loss,val_acc" and len(rows) == 1 + len(run.history)
    assert [int(r.split(",")[0]) for r in rows[1:]] == [h["epoch"] for h in run.history]
    assert run.results["stopped"].startswith("StopWhenGoodEnough.on_epoch_end asked to stop after epoch")
    assert len(run.history) < 20 and run.history[-1]["val_loss"] < 0.2
    assert all(h["val_loss"] >= 0.2 for h in run.history[:-1])  # it stopped at the first epoch under 0.2
