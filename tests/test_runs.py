"""`cnnlab runs` and `cnnlab compare`: every run in runs/ on one line, however it ended (a run being written by
another process, interrupted, stopped early, diverged, damaged), never a traceback; runs side by side with their
differing settings, metrics and overlaid curves; the same from Python (`cnnlab.runs`, `cnnlab.compare`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnnlab.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short runs on the bundled digits that differ in model and learning rate."""
    import cnnlab

    root = tmp_path_factory.mktemp("trained")
    cnnlab.train(model="mlp", dataset="digits", epochs=2, seed=0, lr=0.002, out=str(root / "mlp-digits"),
                 quiet=True)
    cnnlab.train(model="lenet", dataset="digits", epochs=2, seed=0, lr=0.003, out=str(root / "lenet-digits"),
                 quiet=True)
    return root


@pytest.fixture
def runs_dir(trained: Path, tmp_path: Path) -> Path:
    """The two runs, and copies of one ended every other way a run can end."""
    root = tmp_path / "runs"
    for name in ("mlp-digits", "lenet-digits"):
        shutil.copytree(trained / name, root / name)
    results = json.loads((trained / "lenet-digits" / "results.json").read_text())

    def variant(name: str, results_text: str | None, config_text: str | None = None) -> Path:
        folder = shutil.copytree(trained / "lenet-digits", root / name)
        (folder / "results.json").unlink()
        if results_text is not None:
            (folder / "results.json").write_text(results_text)
        if config_text is not None:
            (folder / "config.json").write_text(config_text)
        return folder

    variant("interrupted", None)
    variant("patience", json.dumps(results | {"stopped": "patience: no better validation loss for 3 epochs"}))
    variant("diverged", json.dumps({"status": "diverged", "epochs_run": 1, "step": 7}))
    variant("torn-results", '{"test_acc": 0.9')  # a file cut short: unreadable, not half-trusted
    variant("bad-config", None, "\x00\x01 not json")
    broken = root / "no-config"  # only a checkpoints folder, with garbage in it
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    return root


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def rows_by_name(out: str) -> dict[str, str]:
    lines = out.splitlines()
    return {line.split()[0]: line for line in lines[2:] if line.strip() and not line.startswith(" ")
            and " run" not in line.split("  ")[0]}


def test_every_run_is_one_line_however_it_ended(runs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["runs", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0 and err == "" and "Traceback" not in out
    rows = rows_by_name(out)
    assert sorted(rows) == ["bad-config", "diverged", "interrupted", "lenet-digits", "mlp-digits", "no-config",
                            "patience", "torn-results"]
    status = {name: line.split()[3] for name, line in rows.items()}
    assert status == {"mlp-digits": "completed", "lenet-digits": "completed", "interrupted": "stopped",
                      "patience": "stopped", "diverged": "failed", "torn-results": "failed", "bad-config": "failed",
                      "no-config": "failed"}
    assert "cnnlab train --resume" in rows["interrupted"] and "patience" in rows["patience"]
    assert "step 7" in rows["diverged"] and "unreadable" in rows["torn-results"]
    assert "not a checkpoint" in rows["no-config"] or "corrupt" in rows["no-config"]
    lenet = rows["lenet-digits"].split()
    assert lenet[1:3] == ["lenet", "digits"] and lenet[4] == "2"
    acc = json.loads((runs_dir / "lenet-digits" / "results.json").read_text())["test_acc"]
    assert f"{acc:.1%} (" in rows["lenet-digits"] and ", 359)" in rows["lenet-digits"]  # 359 test images: interval
    assert out.rstrip().endswith(f"8 runs in {runs_dir}/: 2 stopped, 2 completed, 4 failed")


def test_a_run_being_written_by_another_process_is_running(runs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    folder = runs_dir / "interrupted"
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_loss": 0.1')  # the writer is in the middle of appending a row
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from cnnlab.training.rundir import RunLock
            lock = RunLock(Path({str(folder)!r})).acquire()
            print("held", flush=True)
            sys.stdin.read()  # until the test is done
            lock.release()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = run_cli(["runs", "interrupted", "--runs-dir", str(runs_dir), "--json"], capsys)
        (row,) = json.loads(out)
        assert code == 0 and err == ""
        assert row["status"] == "running" and f"pid {holder.pid}" in row["note"]
        assert row["epochs"] == 2 and row["test_acc"] is None  # the torn row is not read
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # The writer let go (a killed one would too: the OS frees its lock): the run is stopped, resumable.
    (row,) = json.loads(run_cli(["runs", "interrupted", "--runs-dir", str(runs_dir), "--json"], capsys)[1])
    assert row["status"] == "stopped"
    (folder / ".lock-owner.json").write_text('{"pid": 1, "host": "x", "since": "0", "command": "killed"}')
    (row,) = json.loads(run_cli(["runs", "interrupted", "--runs-dir", str(runs_dir), "--json"], capsys)[1])
    assert row["status"] == "stopped"  # a killed writer's note, its lock free


def test_sort_filter_and_json(runs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    listed = json.loads(run_cli(["runs", "--runs-dir", str(runs_dir), "--sort", "acc", "--json"], capsys)[1])
    accs = [r["test_acc"] for r in listed]
    tested = [a for a in accs if a is not None]
    assert tested == sorted(tested, reverse=True) and accs[:len(tested)] == tested  # best first, untested last
    assert {"name", "model", "dataset", "status", "epochs", "test_acc", "test_acc_ci", "wall_s",
            "started"} <= set(listed[0])
    names = run_cli(["runs", "digits", "--runs-dir", str(runs_dir), "--sort", "name", "--names"], capsys)[1]
    assert names.split() == [str(runs_dir / "lenet-digits"), str(runs_dir / "mlp-digits")]
    code, out, err = run_cli(["runs", "--runs-dir", str(runs_dir / "none")], capsys)
    assert code == 2 and "no folder" in err and len(err.splitlines()) == 1


def test_compare_shows_what_differs_the_metrics_and_one_figure(runs_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out_png = tmp_path / "mlp-vs-lenet.png"
    code, out, err = run_cli(["compare", "mlp-digits", "lenet-digits", "--runs-dir", str(runs_dir), "--out",
                              str(out_png)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["mlp-digits", "lenet-digits"]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip() and not line.startswith("curves")}
    assert table["model"] == ["mlp", "lenet"] and table["lr"] == ["0.002", "0.003"]
    assert "seed" not in table and "dataset" not in table and "out" not in table  # the same, or not a setting
    accs = [json.loads((runs_dir / n / "results.json").read_text())["test_acc"] for n in ("mlp-digits",
                                                                                       "lenet-digits")]
    assert all(f"{a:.1%} (95% CI" in out for a in accs)
    assert out_png.is_file() and f"curves: {out_png}" in out
    from PIL import Image

    assert Image.open(out_png).size[0] > 600


def test_compare_refuses_what_it_cannot_read_in_one_line(runs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    for args in (["no-config", "mlp-digits"], ["mlp-digits"], ["mlp-digits", "nothing-here"],
                 ["mlp-digits", "mlp-digits"]):
        code, out, err = run_cli(["compare", *args, "--runs-dir", str(runs_dir)], capsys)
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, (args, err)


def test_compare_and_runs_from_python(runs_dir: Path) -> None:
    import cnnlab

    listed = cnnlab.runs(runs_dir, "digits", sort="name")
    assert [r.name for r in listed] == ["lenet-digits", "mlp-digits"]
    assert "lenet-digits" in str(listed) and "<pre>" in listed._repr_html_()
    result = cnnlab.compare(runs_dir / "mlp-digits", cnnlab.load_run(runs_dir / "lenet-digits"))
    assert result.settings["model"] == ["mlp", "lenet"] and result.names == ["mlp-digits", "lenet-digits"]
    fig = result.figure()
    colours = {line.get_color() for ax in fig.axes for line in ax.get_lines()}
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert len(colours) == 2 and {"mlp-digits, train", "lenet-digits, train"} <= labels  # one colour per run
    assert "<img" in result._repr_html_() and json.dumps(result.to_dict())

