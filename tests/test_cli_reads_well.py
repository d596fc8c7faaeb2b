"""A CLI that reads well: every --help ends with examples and lists the choices once, a usage error is one line,
`last` names the newest run wherever a run is expected, and pictures that belong to no run go to one folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cnnlab.cli.main import COMMAND_MODULES, main
from cnnlab.errors import CnnlabError
from cnnlab.training.run import find_run

COMMANDS = [m.replace("_", "-") for m in COMMAND_MODULES]


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_examples_and_says_each_default_once(command: str, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    text = help_text(capsys, command)
    blocks = text.rstrip().split("\n\n")
    assert blocks[-1].startswith("examples:"), blocks[-1][:80]
    examples = blocks[-1].splitlines()[1:]
    assert examples and all(line.strip().startswith(("cnnlab ", "curl ")) for line in examples)
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and "(default: )" not in flat
    assert not re.search(r"\(default: [^)]*\)[^(]{0,3}\(default:", flat), flat


def test_the_top_level_help_ends_with_examples_too(capsys) -> None:
    text = help_text(capsys)
    assert text.rstrip().split("\n\n")[-1].startswith("examples:")


def test_train_lists_the_choices(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    flat = " ".join(help_text(capsys, "train").split())
    for flag, choices in [("--schedule", "constant,step,cosine,onecycle"), ("--device", "auto,cpu,cuda,mps"),
                          ("--amp", "off,auto,bf16,fp16"), ("--optimizer", "sgd,adam,adamw")]:
        assert f"{flag} {{{choices}}}" in flat, flag
        assert f"one of {choices.replace(',', ', ')}" in flat, flag


@pytest.mark.parametrize("argv,hint", [
    (["train", "--optimizer", "rmsprop"], "cnnlab train --help"),
    (["eval"], "cnnlab eval --help"),
    (["trian"], "Did you mean: train?"),
    (["kernels", "--activation", "relu6"], "Did you mean: relu"),
])
def test_a_usage_error_is_one_line_and_a_pointer_to_the_commands_help(argv: list[str], hint: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: cnnlab") and "usage:" not in captured.err
    assert hint in captured.err and not captured.out


def _fake_run(root: Path, name: str, when: float) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    os.utime(run / "config.json", (when, when))
    return run


def test_last_is_the_newest_run_and_a_missing_run_names_the_closest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    older = _fake_run(runs, "lenet-digits-20261203-090000", 1_000_000)
    newer = _fake_run(runs, "lenet-mnist-20261203-080000", 2_000_000)  # started later, though named earlier
    (runs / "notes").mkdir()  # not a run
    assert find_run("last", runs) == newer
    assert find_run(older.name, runs) == older  # a bare name is looked up in runs/
    assert find_run(older, runs) == older
    with pytest.raises(CnnlabError) as info:
        find_run(runs / "lenet-digits", runs)
    assert str(info.value).startswith(f"no run at {runs / 'lenet-digits'}; did you mean: {older}?")
    assert f"`last` is the newest: {newer}" in str(info.value)
    with pytest.raises(CnnlabError, match="did you mean: .*lenet-mnist-20261203-080000"):
        find_run(runs / "lenet-mnits-20261203-080000", runs)
    with pytest.raises(CnnlabError, match="newest run in .*there is none"):
        find_run("last", tmp_path / "nothing")


def test_last_works_wherever_a_run_is_expected(digits_run: Path, tmp_path: Path, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(digits_run, tmp_path / "runs" / digits_run.name)
    monkeypatch.chdir(tmp_path)
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "blank.png")
    assert main(["predict", "last", "blank.png", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"]
    assert main(["eval", "last", "--mistakes", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["figures"]["mistakes"].startswith(f"runs/{digits_run.name}/")
    assert main(["eval", "runs/lenet-digit"]) == 2
    assert f"did you mean: runs/{digits_run.name}?" in capsys.readouterr().err


def test_pictures_without_out_go_to_one_folder_and_the_command_says_where(tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["kernels", "--kernel", "sobel_x", "--size", "32"]) == 0
    assert "wrote cnnlab-figures/kernels.png" in capsys.readouterr().out
    assert main(["learn-kernel", "--kernel", "edge", "--size", "24", "--steps", "50"]) == 0
    assert "wrote cnnlab-figures/learned-kernel-edge.png" in capsys.readouterr().out
    assert main(["datasets", "--show", "digits", "--per-class", "2"]) == 0
    assert "wrote cnnlab-figures/digits-samples.png" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnnlab-figures"]  # nothing else scattered here
    assert sorted(p.name for p in (tmp_path / "cnnlab-figures").iterdir()) == [
        "digits-samples.png", "kernels.png", "learned-kernel-edge.png"]


def test_recipes_point_to_the_documented_table_which_alone_holds_their_results(capsys) -> None:
    from cnnlab.training.recipes import list_recipes

    assert main(["recipes"]) == 0
    assert "the documentation's Recipes page, \"What they reach\" (docs/recipes.md" in capsys.readouterr().out
    page = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    assert "## What they reach" in page and "| `fast-mnist` * |" in page
    for recipe in list_recipes():  # what a recipe reaches (accuracy, time) is measured: written once, in the table
        assert not re.search(r"\d\s?(s|sec|seconds?|min|minutes?)\b|accura|reach", recipe.description), recipe.name
