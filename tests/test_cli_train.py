"""The training-side CLI: train, eval, recipes, datasets, models, summary; their --help and outputs."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.main import build_parser, main
from cnnlab.training.config import add_arguments, explicit_settings


def test_every_command_has_help(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"models", "summary", "datasets", "train", "recipes", "eval", "predict"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: cnnlab " + name) and len(out) > 200
    assert main([]) == 0 and "commands:" in capsys.readouterr().out


def test_models_and_summary_commands(capsys) -> None:
    assert main(["models", "lenet*"]) == 0
    out = capsys.readouterr().out
    assert "lenet" in out and "lenet5" in out and "37.11K" in out and "1x28x28" in out
    assert main(["models", "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert {"mlp", "lenet", "lenet5", "cifar_net", "mnist_cnn", "small_convnet", "resnet9", "fastnet"} <= names
    assert main(["summary", "lenet", "--input", "3x32x32"]) == 0
    assert "(32 + 2*2 - 5) / 1 + 1 = 32" in capsys.readouterr().out
    assert main(["summary", "lenet", "--input", "1x32x32", "--fixed"]) == 1
    assert "expects 400 input features but gets 576" in capsys.readouterr().out
    assert main(["summary", "lenett"]) == 2
    assert "Did you mean: lenet" in capsys.readouterr().err


def test_datasets_command_and_sample_grid(data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["datasets", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "yes" in out and "bundled" in out and "cifar10" in out
    png = tmp_path / "grid.png"
    assert main(["datasets", "--show", "mnist", "--data-dir", str(data_dir), "--out", str(png)]) == 0
    img = Image.open(png).convert("L")
    assert img.width > 400 and img.height > 600
    hist = img.histogram()
    assert hist[0] > 10000 and sum(hist[200:]) > 2000  # black backgrounds and white strokes
    assert main(["datasets", "--show", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "--download" in capsys.readouterr().err


def resolve_settings(recipe: str) -> dict:
    from cnnlab.training.config import coerce
    from cnnlab.training.recipes import get_recipe

    return {k: coerce(k, v) for k, v in get_recipe(recipe).settings.items()}


def test_recipes_command(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("seed-mlp", "seed-lenet", "seed-cnn", "digits"):
        assert name in out
    assert not re.search(r"\d+\.\d+%", out)  # what recipes reach is measured, in docs/recipes.md, not in code
    for name in ("seed-cnn", "fast-fashion"):  # flags with JSON and booleans among them
        assert main(["recipes", name]) == 0
        text = capsys.readouterr().out
        command = text[text.index("cnnlab train"):].replace("\\\n", " ")
        argv = shlex.split(command)[2:]  # what a user pastes after `cnnlab train`
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        assert explicit_settings(parser.parse_args(argv)) == resolve_settings(name)


def test_train_json_and_eval_outputs(tmp_path: Path, capsys) -> None:
    run = tmp_path / "r"
    assert main(["train", "--recipe", "digits", "--epochs", "2", "--subset", "400", "--json", "--out", str(run)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "done"] and events[-1]["test_acc"] > 0.3
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "most confused" in out and "precision" in out
    for name in ("confusion.png", "mistakes.png"):
        img = Image.open(run / "eval-test" / name)
        img.load()
        assert img.width > 300 and len(np.unique(np.asarray(img.convert("L")))) > 10
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 10 and "test_top3_acc" in metrics


def test_quiet_is_silent_in_the_library_and_one_result_line_in_the_command(tmp_path: Path, capsys) -> None:
    import cnnlab

    run = cnnlab.train(model="lenet", epochs=1, subset=300, out=str(tmp_path / "lib"), quiet=True)
    captured = capsys.readouterr()
    assert run.results["test_acc"] > 0 and captured.out == "" and captured.err == ""
    assert main(["train", "--model", "lenet", "--epochs", "1", "--subset", "300", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test accuracy ") and "s of training" in lines[0]


@pytest.mark.slow
def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path: Path) -> None:
    run = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "--recipe", "digits", "--epochs", "50", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:  # wait until training has really started: its first epoch is done
        if line.startswith("epoch   1/50"):
            break
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 130
    assert f"resume with: cnnlab train --resume {run}" in out
    assert (run / "checkpoints" / "last.pt").is_file()


def test_sample_grid_of_an_rgb_folder(tmp_path: Path, capsys) -> None:
    for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (30 + i, 20), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    png = tmp_path / "grid.png"
    assert main(["datasets", "--show", f"folder:{tmp_path / 'imgs'}", "--out", str(png), "--per-class", "3"]) == 0
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    reds = ((pixels[:, 0] > 180) & (pixels[:, 2] < 60)).sum()
    blues = ((pixels[:, 2] > 180) & (pixels[:, 0] < 60)).sum()
    assert reds > 1000 and blues > 1000  # both classes drawn in colour
