"""--budget: the plan from measured speeds (a fake clock here, never a timing assertion), a schedule that decays over
the planned length, the plan in results.json and in the checkpoint, followed as is by a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SignalAt

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.training import auto, budget, prepare
from cnnlab.training.budget import Measured, plan_budget, revise
from cnnlab.training.checkpoint import load_checkpoint

REVISE_MIN = budget.REVISE_MIN


@pytest.fixture(autouse=True)
def _plans_as_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs measure with a fake clock and train in real time: they follow the plan as made. The revision of
    a plan from how training ran has its own tests (they turn it back on, with a fake clock of the training)."""
    monkeypatch.setattr(budget, "REVISE_MIN", float("inf"))


def test_the_plan_fits_training_validation_and_test_in_the_budget() -> None:
    m = Measured(step_s=0.01, val_s=0.5, test_s=1.0, spent_s=2.0)
    plan = plan_budget(60, steps_per_epoch=100, m=m)
    # 60 s less 5% margin, 2 s spent and the 1 s test leave 54 s; an epoch is 100 x 0.01 + 0.5 = 1.5 s: 36 epochs.
    assert (plan.epochs, plan.total_steps) == (36, 3600)
    used = m.spent_s + plan.epochs * (100 * m.step_s + m.val_s) + m.test_s
    assert used <= 60 * (1 - budget.MARGIN)
    assert plan_budget(60, 100, m, has_val=False).epochs == 54  # no validation split: no validation passes


def test_the_time_after_the_last_whole_epoch_trains_part_of_one_more() -> None:
    m = Measured(step_s=0.01, val_s=0.5, test_s=1.0, spent_s=2.0)
    plan = plan_budget(60, steps_per_epoch=160, m=m)
    # 54 s free; an epoch is 1.6 + 0.5 = 2.1 s: 25 whole epochs (52.5 s), and 1.5 s left hold a validation pass and
    # 100 steps of a 26th epoch.
    assert (plan.epochs, plan.total_steps) == (26, 25 * 160 + 100)
    assert "25 epochs and 100 steps of one more" in plan.describe()
    used = m.spent_s + plan.total_steps * m.step_s + plan.epochs * m.val_s + m.test_s
    assert used <= 60 * (1 - budget.MARGIN) + 1e-9
    few = plan_budget(60, steps_per_epoch=170, m=Measured(step_s=0.01, val_s=0.5, test_s=1.0, spent_s=2.65))
    assert (few.epochs, few.total_steps) == (24, 24 * 170)  # 0.5 s left: room for 5 steps only, not worth a pass


def test_a_budget_under_one_epoch_plans_part_of_it_and_too_little_is_refused_with_the_minimum() -> None:
    m = Measured(step_s=0.1, val_s=1.0, test_s=2.0, spent_s=1.0)
    plan = plan_budget(20, steps_per_epoch=500, m=m)
    assert plan.epochs == 1 and plan.total_steps == 150  # (20 x 0.95 - 1 - 2 - 1) / 0.1
    with pytest.raises(CnnlabError, match=r"--budget 5s is too small: 10 steps .* about 6 s; give --budget 6s"):
        plan_budget(5, steps_per_epoch=500, m=m)


class FakeClock:
    """Every reading is `tick` seconds after the previous one."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


RUN = dict(model="lenet", dataset="digits", subset=512, batch_size=64, lr=3e-3, augment="none", select="best", threads=1,
           seed=3, quiet=True)  # the settings the chooser would otherwise pick from the data


def test_a_budget_run_follows_its_plan_and_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each clock reading 10 ms after the last: a step "takes" 10 ms, evaluation 10 ms per batch of 1000 at most.
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.01))
    run = cnnlab.train(budget="1s", out=str(tmp_path / "r"), **RUN)
    b = run.results["budget"]
    assert b["budget_s"] == 1 and b["steps_per_epoch"] == 8 and b["step_s"] == pytest.approx(0.01)
    assert b["epochs"] == run.results["epochs_run"] == len(run.history) > 1
    assert b["total_steps"] == b["steps_run"] and b["epochs"] == -(-b["total_steps"] // 8)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["config"]["epochs"] == b["epochs"] and config["resolved"]["budget"]["epochs"] == b["epochs"]
    assert run.history[-1]["lr"] < 0.05 * run.history[0]["lr"] or run.history[-1]["lr"] < 1e-4  # it decayed


def test_part_of_an_epoch_is_planned_and_decays_to_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.05))  # 50 ms a step: one epoch of 32 steps does not fit in 2 s
    run = cnnlab.train(budget=2.0, out=str(tmp_path / "r"), **{**RUN, "batch_size": 16})
    b = run.results["budget"]
    assert b["epochs"] == 1 and 0 < b["total_steps"] == b["steps_run"] < b["steps_per_epoch"]
    row = run.history[-1]
    assert row.get("partial") and row["lr"] < 0.1 * 3e-3  # the one-cycle ran its whole course in those steps


def test_resume_follows_the_saved_plan_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.01))
    whole = cnnlab.train(budget="1s", out=str(tmp_path / "a"), **RUN)
    cnnlab.train(budget="1s", out=str(tmp_path / "b"), callbacks=[SignalAt(13)], **RUN)  # in the second epoch
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert ckpt["status"] == "interrupted" and ckpt["budget"]["total_steps"] == whole.results["budget"]["total_steps"]

    def refuse(*args, **kwargs):
        raise AssertionError("a resume measured again")

    monkeypatch.setattr(prepare, "measure", refuse)
    resumed = cnnlab.train(resume=str(tmp_path / "b"), quiet=True)
    assert resumed.results["budget"]["epochs"] == whole.results["budget"]["epochs"]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_budget_too_small_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.5))
    with pytest.raises(CnnlabError, match=r"^--budget 1s is too small: .* give --budget \d+s or more$"):
        cnnlab.train(budget="1s", out=str(tmp_path / "r"), **RUN)


def test_a_short_plan_trains_without_the_chosen_shifts_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys) -> None:
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.01))
    run = cnnlab.train(dataset="digits", subset=512, budget="0.6s", threads=1, seed=3, out=str(tmp_path / "r"))
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    epochs = run.results["budget"]["epochs"]
    assert epochs < auto.SHIFT_MIN_EPOCHS and config["config"]["augment"] == "none"  # digits: no flips either
    chosen = config["auto"]["chosen"]["augment"]
    assert chosen["value"] == "none" and f"{epochs} pass" in chosen["reason"]
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("auto: "))
    assert f"no augmentation (a run of {epochs} epoch" in line and "shifts" not in line
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["config"]["augment"] == "none"


def test_a_plan_is_revised_from_the_speed_training_ran_at(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "REVISE_MIN", REVISE_MIN)
    m = Measured(step_s=0.01, val_s=0.5, test_s=1.0, spent_s=2.0)
    plan = plan_budget(60, steps_per_epoch=100, m=m)
    assert (plan.epochs, plan.total_steps) == (36, 3600)
    # 10 epochs in, at 5 ms a step: 2 + 10 x (0.5 + 0.5) = 12 s used; 57 - 12 - 1 = 44 s hold 44 more epochs of 1 s.
    faster = revise(plan, steps_done=1000, epochs_done=10, used_s=12.0)
    assert faster.step_s == pytest.approx(0.005) and (faster.epochs, faster.total_steps) == (54, 5400)
    assert faster.revised_from == 3600 and faster.budget_s == 60 and faster.test_s == 1.0
    # At 20 ms a step: 27 s used; 29 s left hold 11 epochs of 2.5 s, then a validation pass and 50 steps of one more.
    slower = revise(plan, steps_done=1000, epochs_done=10, used_s=27.0)
    assert (slower.epochs, slower.total_steps) == (22, 1000 + 1100 + 50)
    used = 27.0 + (slower.total_steps - 1000) * 0.02 + 12 * 0.5 + 1.0
    assert used <= 60 * (1 - budget.MARGIN) + 1e-9
    again = revise(slower, steps_done=1500, epochs_done=15, used_s=2 + 15 * 0.5 + 1500 * 0.01)  # 10 ms a step now
    assert again.revised_from == 3600 and again.total_steps > slower.total_steps  # the first plan's steps kept
    # As planned (within REVISE_MIN of it): no revision; a budget spent: the run ends with this epoch.
    assert revise(plan, 1000, 10, used_s=2 + 10 * 0.5 + 1000 * 0.0101) is None
    spent = revise(plan, 1000, 10, used_s=56.0)
    assert (spent.epochs, spent.total_steps) == (10, 1000)
    assert revise(plan, 3600, 36, used_s=40.0) is None  # the run's end: nothing to revise


class TrainingClock:
    """The budget's clock in a test: each optimizer step (a callback counts them) takes `step_s` seconds."""

    def __init__(self, step_s: float) -> None:
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.t

    def on_step_end(self, step: int, loss: float) -> None:
        self.t += self.step_s


@pytest.mark.parametrize("step_s", [0.005, 0.03])
def test_a_run_that_trains_faster_or_slower_than_measured_is_replanned(
        step_s: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(budget, "REVISE_MIN", REVISE_MIN)
    monkeypatch.setattr(prepare, "CLOCK", FakeClock(0.01))  # measured: 10 ms a step
    clock = TrainingClock(step_s)
    monkeypatch.setattr(budget, "NOW", clock)
    run = cnnlab.train(budget="1s", out=str(tmp_path / "r"), callbacks=[clock], **{**RUN, "quiet": False})
    b = run.results["budget"]
    first = b["revised_from"]
    assert first > 0 and (b["total_steps"] > first if step_s < 0.01 else b["total_steps"] < first)
    assert b["steps_run"] == b["total_steps"] and b["epochs_run"] == b["epochs"] == len(run.history)
    assert b["within"] and b["used_s"] <= 1.0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["config"]["epochs"] == b["epochs"] and config["resolved"]["budget"]["total_steps"] == b["total_steps"]
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["budget"]["total_steps"] == b["total_steps"]
    out = capsys.readouterr().out
    assert "re-planned from" in out and f"({first:,} steps planned at the start)" in out
