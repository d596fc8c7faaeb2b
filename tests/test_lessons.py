"""The lessons (lessons/*.ipynb): committed clean and complete; each executed top to bottom on the real data, with
every number its text promises checked (worked values exactly, trained accuracies within the stated range);
`cnnlab lessons` lists and opens them; the documentation site, built from the executed copies, passes strict mode.

The lessons run once per session (a few minutes in all); the site build reuses their executed copies.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import nbformat
import pytest

from cnnlab.cli import lessons as cli_lessons
from cnnlab.cli.main import main
from test_site import check_site_in_browser

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cnnlab_lessons_execute", ROOT / "lessons" / "execute.py")
execute = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look themselves up there
_spec.loader.exec_module(execute)


class Range(NamedTuple):
    """A trained figure: the lesson states it as a range, and the run must land inside it."""

    low: float
    high: float


class Claim(NamedTuple):
    """A number a lesson promises: the variable holding it, what it must be, and the lesson's words for it."""

    name: str
    expected: Any  # a value (compared exactly), a Range, or a check f(value, all values) -> bool
    said: str | None = None  # the words in the lesson's text that state it, so text and check cannot drift


def close_to(other: str, tol: float) -> Callable[[Any, dict], bool]:
    return lambda value, values: abs(value - values[other]) <= tol


CLAIMS: dict[int, list[Claim]] = {
    1: [
        Claim("toy_shapes", [[1, 6, 6], [1, 1, 6, 6]]),
        Claim("flat_order", [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]),
        Claim("split_sizes", [55000, 5000, 10000], "55,000 / 5,000 / 10,000"),
        Claim("batch_shape", [16, 1, 28, 28]),
        Claim("mlp_params", 101770, "101,770"),
        Claim("mlp_acc", Range(0.97, 0.985), "97-98.5%"),
        Claim("acc_plain", close_to("mlp_acc", 1e-6)),
        Claim("acc_shuffled", close_to("acc_plain", 2e-4), "exactly as well"),
        Claim("acc_shift3", Range(0.40, 0.70), "40-70%"),
        Claim("small_params", 25450),
    ],
    2: [
        Claim("Y", [[19.0, 25.0], [37.0, 43.0]], "[[19, 25], [37, 43]]"),
        Claim("torch_diff", 0.0),
        Claim("Y_flipped", [[5.0, 11.0], [23.0, 29.0]], "[[5, 11], [23, 29]]"),
        Claim("edge_row", [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]),
        Claim("horizontal_response", 0.0),
        Claim("photo_shape", [171, 256]),
        Claim("sobel_shape", [169, 254]),
        Claim("gaussian_sum", lambda v, _: abs(v - 1) < 1e-6),
        Claim("edge_error", lambda v, _: v < 1e-3),
        Claim("sobel_error", lambda v, _: v < 1e-3, "within 0.001"),
    ],
    3: [
        Claim("out_5_3", 3, "A 5x5 input and a 3x3 kernel give 3"),
        Claim("same_size", 8, "turns 8x8 into 8x8"),
        Claim("alexnet", [55, 54, 55], "55x55 from a 227x227"),
        Claim("exercise_sizes", [28, 111, 176], "give 28, 111 and 176"),
        Claim("torch_sizes", [28, 111, 176]),
        Claim("dilated", 3, "it fits 3 times"),
        Claim("Y2", [[56.0, 72.0], [104.0, 120.0]], "[[56, 72], [104, 120]]"),
        Claim("Y2_conv", [[[56.0, 72.0], [104.0, 120.0]]]),
        Claim("Y3", [[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]],
                     [[96.0, 128.0], [192.0, 224.0]]]),
        Claim("pool_max", [[4.0, 5.0], [7.0, 8.0]], "max [[4, 5], [7, 8]]"),
        Claim("pool_avg", [[2.0, 3.0], [5.0, 6.0]], "[[2, 3], [5, 6]]"),
        Claim("pool_padded", [[5.0, 7.0], [13.0, 15.0]], "[[5, 7], [13, 15]]"),
        Claim("pooled_shape", [3, 42, 64], "171x256 becomes 42x64"),
    ],
    4: [
        Claim("stage_shapes", {"conv": [1, 8, 85, 128], "relu": [1, 8, 85, 128], "pool": [1, 8, 42, 64]}),
        Claim("relu_zero_fraction", Range(0.5, 0.9), "more than half"),
        Claim("leaky_zero_fraction", 0.0),
        Claim("change_relu", lambda v, _: 0 < v < 1),
        Claim("change_pool", lambda v, values: v < values["change_relu"], "changes the pooled maps less"),
        Claim("digits_acc", Range(0.95, 0.99), "95-99%"),
    ],
    5: [
        Claim("lenet5_params", 61706, "61,706"),
        Claim("lenet_params", 37106, "37,106"),
        Claim("hand_acc", Range(0.88, 0.95), "88-95%"),
        Claim("pieces_acc", Range(0.88, 0.95)),
        Claim("train_acc", Range(0.88, 0.95)),
        Claim("max_prob", lambda v, _: round(v, 3) == 0.232, "23.2%"),
        Claim("loss_start", lambda v, _: round(v, 2) == 2.30, "ln 10 = 2.30"),
        Claim("loss_floor", lambda v, _: round(v, 2) == 1.46, "below 1.46"),
        Claim("grad_ratio", Range(2.0, 1000.0), "squashed"),
        Claim("plateau_loss", Range(2.25, 2.31), "still 2.30"),
        Claim("lenet_accs", lambda v, _: v[0] < 0.15, "its accuracy is chance, 10%"),
        Claim("lenet_accs", lambda v, _: v[1] > 0.6, "above 60% after"),
        Claim("mlp_accs", lambda v, _: v[0] < v[1]),
    ],
    6: [
        Claim("cnn_params", Range(1.3e6, 1.5e6), "1.4 million"),
        Claim("cnn_acc", Range(0.93, 0.98), "93-98%"),
        Claim("shape_error", lambda v, _: "fc1" in v and "in_features=" in v),
        Claim("fixed_fc1_inputs", 3200, "128 x 5 x 5"),
        Claim("folder_sizes", lambda v, _: sum(v) == 195 and v[2] == 150, "50 per shoe to test on"),
        Claim("cat_top", "Egyptian cat", "class Egyptian cat"),
        Claim("transfer_accs", lambda v, _: v[1] > v[0] + 0.05, "the frozen backbone's features do far better"),
        Claim("transfer_accs", lambda v, _: v[2] < v[1], "Fine-tuning does worse here than the frozen head"),
        Claim("same_top_class", True),
    ],
}


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Callable[[int], Any]:
    """Each lesson executed at most once per session, in a fresh kernel, its copy kept for the site build."""
    out = tmp_path_factory.mktemp("executed") / "lessons"  # the site build takes this folder as docs/lessons
    # An empty torch cache: nothing is downloaded (lesson 6's ImageNet weights come installed, cnnlab[pretrained]).
    env = {"CNNLAB_DATA": str(data_dir), "TORCH_HOME": str(tmp_path_factory.mktemp("torch-home"))}
    done: dict[int, Any] = {}

    def run(number: int) -> Any:
        if number not in done:
            names = [c.name for c in CLAIMS[number]]
            done[number] = execute.execute(execute.lesson_path(number), out, probe=names, env=env)
            print(f"lesson {number}: {done[number].seconds:.1f} s")
        return done[number]

    run.out = out
    return run


def lesson_text(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def test_six_lessons_numbered_in_order() -> None:
    paths = execute.lesson_paths()
    assert [int(p.name[:2]) for p in paths] == list(range(1, 7)), paths
    assert sorted(CLAIMS) == list(range(1, 7))


@pytest.mark.parametrize("path", execute.lesson_paths(), ids=lambda p: p.name[:2])
def test_lesson_is_committed_clean_and_complete(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit lessons without outputs"
    assert nb.metadata.kernelspec.name == "python3"
    first = nb.cells[0].source
    assert first.startswith(f"# {int(path.name[:2])}. ") and "**You will be able to**" in first
    text = lesson_text(path)
    exercises = text.split("## Exercises", 1)[1].split("##", 1)[0]
    numbered = [line for line in exercises.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert 2 <= len(numbered) <= 4, numbered
    solutions = [c for c in code if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 1 and solutions[0].metadata["jupyter"]["source_hidden"] is True
    assert "## Sources" in text
    for claim in CLAIMS[int(path.name[:2])]:  # the lesson states each checked number in its own words
        assert claim.said is None or claim.said in text, f"{path.name} no longer says {claim.said!r}"


@pytest.mark.slow
@pytest.mark.parametrize("number", range(1, 7))
def test_lesson_runs_and_keeps_its_promises(number: int, executed) -> None:
    result = executed(number)
    values = result.values
    wrong = []
    for claim in CLAIMS[number]:
        value = values[claim.name]
        if isinstance(claim.expected, Range):
            ok = claim.expected.low <= value <= claim.expected.high
        elif callable(claim.expected):
            ok = claim.expected(value, values)
        elif isinstance(claim.expected, float):
            ok = math.isclose(value, claim.expected, abs_tol=0.0)
        else:
            ok = value == claim.expected
        if not ok:
            wrong.append(f"{claim.name} = {value!r}, lesson promises {claim.expected!r}")
    assert not wrong, "\n".join(wrong)
    nb = nbformat.read(result.path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "every lesson shows pictures"


def test_cnnlab_lessons_lists_them_in_order(capsys: pytest.CaptureFixture) -> None:
    assert main(["lessons"]) == 0
    out = capsys.readouterr().out
    assert "1. Images are tensors" in out and "6. A deeper CNN" in out
    assert main(["lessons", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["number"] for x in listed] == list(range(1, 7)) and all(x["summary"] for x in listed)


def test_open_copies_a_lesson_and_keeps_a_changed_copy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "course"
    assert main(["lessons", "open", "2", str(folder), "--no-start"]) == 0
    copy = folder / execute.lesson_path(2).name
    assert copy.read_bytes() == execute.lesson_path(2).read_bytes()
    assert "jupyter lab 02-" in capsys.readouterr().out
    copy.write_text(copy.read_text().replace("Cross-correlation", "My notes on cross-correlation"))
    mine = copy.read_bytes()
    assert main(["lessons", "open", "2", str(folder), "--no-start"]) == 0
    assert copy.read_bytes() == mine and "kept your copy" in capsys.readouterr().out


def test_open_starts_jupyter_in_the_lesson_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "jupyter-lab"
    fake.parent.mkdir()
    record = tmp_path / "started.txt"
    fake.write_text(f"#!/bin/sh\necho \"$(pwd -P) $@\" > {record}\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))  # Jupyter is looked for beside it
    assert cli_lessons.find_jupyter() == [str(fake)]
    assert main(["lessons", "open", "1", str(tmp_path / "course")]) == 3  # Jupyter's own exit code
    assert record.read_text().split() == [str((tmp_path / "course").resolve()), execute.lesson_path(1).name]


def test_open_without_jupyter_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cli_lessons, "find_jupyter", lambda: None)
    assert main(["lessons", "open", "6", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert cli_lessons.INSTALL_HINT in out and (tmp_path / execute.lesson_path(6).name).is_file()


def test_open_refuses_a_missing_lesson_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lessons", "open", "9", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: there is no lesson 9: choose 1-6") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_docs_site_builds_strict_from_the_executed_lessons(executed, tmp_path: Path) -> None:
    for number in range(1, 7):
        executed(number)
    site = tmp_path / "site"
    env = {**os.environ, "CNNLAB_EXECUTED_LESSONS": str(executed.out)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lesson2 = (site / "lessons" / "02-cross-correlation-by-hand" / "index.html").read_text()
    assert "tensor([[19., 25.]," in lesson2  # outputs as the lesson printed them
    assert '<details class="solution">' in lesson2
    cli = (site / "cli" / "index.html").read_text()
    for command in ("cnnlab train", "cnnlab lessons open", "cnnlab conv-size", "--recipe"):
        assert command in cli
    assert "train_one_epoch" in (site / "api" / "training" / "index.html").read_text()
    assert "fast-mnist" in (site / "recipes" / "index.html").read_text()
    assert (site / "ARCHITECTURE" / "index.html").is_file()
    pages = list(site.rglob("*.html"))
    assert not [p for p in pages if 'src="http' in p.read_text()], "the site must work offline"
    for page in ("getting-started", "howto/own-images", "reference/config", "reference/rest-api",
                 "reference/file-formats", "troubleshooting", "changelog"):
        html = (site / page / "index.html").read_text()
        assert "<!-- generated:" not in html, page  # every generated part filled in
    assert "--augment-on-overfit" in (site / "reference" / "config" / "index.html").read_text()
    check_site_in_browser(site)  # tests/test_site.py: offline, no script error, a desktop's and a phone's size


# ---- the API the lessons needed (findings fixed for them)


def test_a_run_is_evaluated_and_drawn_from_the_public_api(digits_run: Path) -> None:
    import cnnlab
    from cnnlab.training import EvalResult, evaluate_run

    result = evaluate_run(cnnlab.load_run(digits_run))
    assert isinstance(result, EvalResult) and result.report.accuracy == pytest.approx(
        json.loads((digits_run / "results.json").read_text())["test_acc"], abs=1e-9)
    confusion, mistakes = result.confusion_figure(), result.mistakes_figure(6)
    assert confusion.axes and len([a for a in mistakes.axes if a.images]) == 6
    assert result.mistakes_figure(0) is None


def test_a_summary_shows_as_its_table_in_jupyter() -> None:
    from IPython.lib.pretty import pretty

    import cnnlab

    table = cnnlab.summary(cnnlab.get_model("lenet"), (1, 28, 28))
    assert pretty(table) == str(table) and "conv1" in pretty(table)


def test_a_folder_dataset_sees_images_added_in_the_same_process(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cnnlab.data import get_dataset

    def add(cls: str, n: int) -> None:
        (tmp_path / cls).mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{cls}{i}.png")

    add("a", 5)
    add("b", 5)
    assert get_dataset(f"folder:{tmp_path}", "train", val_size=0).classes == ("a", "b")
    add("c", 5)  # lesson 6 adds a class to its folder and trains again, in the same kernel
    data = get_dataset(f"folder:{tmp_path}", "train", val_size=0)
    assert data.classes == ("a", "b", "c") and sum(data.info.counts.values()) == 15
