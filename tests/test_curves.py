"""curves.png drawn by a forked helper: the same file as drawn in-process, and every way out leaves no process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.train.curves import CurvesPainter, draw_curves

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.8 + e / 100, "val_loss": 1.2 / e, "val_acc": 0.78 + e / 100,
            "lr": 0.1, "images_per_s": 1000.0, "elapsed_s": float(e)} for e in (1, 2, 3)]


def _fresh_process(body: str, tmp_path: Path, argument: str | None = None) -> dict:
    """Run `body` in a new interpreter (no matplotlib loaded yet, as in the `cnnlab` command); its JSON result."""
    script = textwrap.dedent("""
        import json, multiprocessing, sys
        from pathlib import Path
        from cnnlab.train.curves import CurvesPainter
        tmp = Path(sys.argv[1])
        history = json.loads(sys.argv[2]) if sys.argv[2].startswith("[") else None
        out = {}
    """) + textwrap.dedent(body) + "\nout['children'] = len(multiprocessing.active_children())\nprint(json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), argument or json.dumps(HISTORY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_helper_draws_the_same_png_as_this_process(tmp_path: Path) -> None:
    out = _fresh_process("""
        p = CurvesPainter().start()
        out["forked"] = p.forked
        p.submit(history, tmp / "helper.png")
        out["written"] = str(p.wait())
    """, tmp_path)
    assert out["forked"] is True
    assert out["written"] == str(tmp_path / "helper.png")
    assert out["children"] == 0  # reaped
    draw_curves(HISTORY, tmp_path / "here.png")
    assert (tmp_path / "helper.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_a_dead_helper_means_the_curves_are_drawn_here(tmp_path: Path) -> None:
    out = _fresh_process("""
        p = CurvesPainter().start()
        p._proc.kill(); p._proc.join()
        p.submit(history, tmp / "c.png")
        p.wait()
        out["forked"] = p.forked
    """, tmp_path)
    assert out == {"forked": False, "children": 0}
    assert (tmp_path / "c.png").read_bytes() == _drawn_here(tmp_path)


def test_closing_without_a_job_ends_the_helper(tmp_path: Path) -> None:
    out = _fresh_process("""
        p = CurvesPainter().start()
        out["forked"] = p.forked
        p.close(); p.close()
        out["waited"] = p.wait()
    """, tmp_path)
    assert out == {"forked": True, "waited": None, "children": 0}
    assert list(tmp_path.iterdir()) == []


def test_no_fork_with_other_threads_or_matplotlib_loaded(tmp_path: Path) -> None:
    out = _fresh_process("""
        import threading
        stop = threading.Event()
        t = threading.Thread(target=stop.wait); t.start()
        out["with_a_thread"] = CurvesPainter().start().forked
        stop.set(); t.join()
        import matplotlib.axes
        p = CurvesPainter().start()
        out["with_matplotlib"] = p.forked
        p.submit(history, tmp / "c.png")
        p.wait()
    """, tmp_path)
    assert out == {"with_a_thread": False, "with_matplotlib": False, "children": 0}
    assert (tmp_path / "c.png").read_bytes() == _drawn_here(tmp_path)


def test_an_error_while_drawing_reaches_the_caller(tmp_path: Path) -> None:
    painter = CurvesPainter().start()  # matplotlib is loaded in this test process: drawn here
    painter.submit([], tmp_path / "c.png")
    with pytest.raises(CnnlabError, match="empty history"):
        painter.wait()


def test_the_test_pass_runs_on_one_thread_fewer_until_the_helper_answers(tmp_path: Path) -> None:
    out = _fresh_process("""
        import time, torch
        torch.set_num_threads(2)
        p = CurvesPainter().start()
        p.submit(history, tmp / "c.png")
        seen = []
        for _ in p.sharing_cores(range(600)):  # up to 60 s
            seen.append(torch.get_num_threads())
            if seen[-1] == 2:
                break
            time.sleep(0.1)
        out["first"], out["last"], out["after"] = seen[0], seen[-1], torch.get_num_threads()
        out["answered"] = p._conn.poll()
        p.wait()
        try:  # an error in the test pass: the threads come back all the same
            for _ in p.sharing_cores(range(3)):
                raise RuntimeError
        except RuntimeError:
            out["after_an_error"] = torch.get_num_threads()
    """, tmp_path)
    assert out == {"first": 1, "last": 2, "after": 2, "answered": True, "after_an_error": 2, "children": 0}
    assert (tmp_path / "c.png").read_bytes() == _drawn_here(tmp_path)


def test_without_a_helper_the_test_pass_keeps_its_threads(tmp_path: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    painter = CurvesPainter().start()  # matplotlib is loaded in this test process: no helper
    painter.submit(HISTORY, tmp_path / "c.png")
    assert [torch.get_num_threads() for _ in painter.sharing_cores(range(3))] == [threads] * 3
    painter.wait()
    assert (tmp_path / "c.png").read_bytes() == _drawn_here(tmp_path)


def test_the_test_pass_gives_the_same_logits_on_one_thread_as_on_two() -> None:
    """What sharing a core with the helper relies on: fewer threads change the speed, not the numbers."""
    import torch

    from cnnlab.models import get_model

    torch.manual_seed(0)
    net = get_model("fastnet", num_classes=10, input_size=(1, 28, 28)).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1000, 1, 28, 28).to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    logits = []
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                logits.append(net(x).float())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(logits[0], logits[1])


TRAIN = """
    import signal
    import cnnlab
    from cnnlab.train import curves
    forked = []
    start = curves.CurvesPainter.start
    curves.CurvesPainter.start = lambda self: forked.append(start(self).forked) or self
    ctrl_c = lambda s, state: state.step == 1 and signal.raise_signal(signal.SIGINT)
    run = cnnlab.train(model="lenet", dataset="digits", epochs=2, subset=200, quiet=True, out=str(tmp / "run"),
                       on_step=ctrl_c if "stop" in sys.argv[2] else None)
    out["status"] = run.status
    out["forked"] = forked
"""


def test_a_training_run_draws_through_the_helper_and_leaves_no_process(tmp_path: Path) -> None:
    out = _fresh_process(TRAIN, tmp_path)
    assert out == {"forked": [True], "status": "completed", "children": 0}
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    draw_curves(history, tmp_path / "here.png")
    assert (run / "curves.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_an_interrupted_run_ends_the_helper(tmp_path: Path) -> None:
    out = _fresh_process(TRAIN, tmp_path, argument="stop")
    assert out == {"forked": [True], "status": "interrupted", "children": 0}
    assert not (tmp_path / "run" / "curves.png").exists()


def _drawn_here(tmp_path: Path) -> bytes:
    draw_curves(HISTORY, tmp_path / "reference.png")
    return (tmp_path / "reference.png").read_bytes()
