"""Prediction on any image a user has: modes, bit depths, sizes, folders, and files that are not images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.training import load_run


def _digit(index: int = 0) -> tuple[np.ndarray, str]:
    test = get_dataset("digits", "test")
    return test.images[index, 0].numpy(), str(int(test.targets[index]))


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("odd")
    arr, _ = _digit(0)
    big = np.kron(arr, np.ones((64, 64), np.uint8))  # 512x512 blocks of the 8x8 digit
    files = {
        "gray.png": Image.fromarray(arr),
        "rgb.jpg": Image.fromarray(big).convert("RGB"),
        "rgba.png": Image.fromarray(big).convert("RGBA"),
        "deep.tiff": Image.fromarray(big.astype(np.uint16) * 257),
        "palette.bmp": Image.fromarray(big).convert("P"),
        "tiny.png": Image.new("L", (1, 1), 128),
        "huge.webp": Image.fromarray(big).resize((4000, 3000)),
    }
    paths = {}
    for name, img in files.items():
        paths[name] = folder / name
        img.save(paths[name])
    paths["corrupt.png"] = folder / "corrupt.png"
    good = paths["gray.png"].read_bytes()
    paths["corrupt.png"].write_bytes(good[: len(good) // 2])
    return paths


def test_predict_accepts_every_mode_and_size(digits_run: Path, odd_images: dict[str, Path]) -> None:
    run = load_run(digits_run)
    _, label = _digit(0)
    for name in ("gray.png", "rgb.jpg", "rgba.png", "deep.tiff", "palette.bmp", "huge.webp"):
        top = run.predict(odd_images[name], topk=3)
        assert len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1.0001
        assert top[0][0] == label, f"{name}: {top}"
    tiny = run.predict(odd_images["tiny.png"], topk=2)
    assert len(tiny) == 2 and 0 <= tiny[0][1] <= 1


def test_predict_python_inputs_agree(digits_run: Path) -> None:
    run = load_run(digits_run)
    arr, label = _digit(3)
    as_path = run.predict_proba(Image.fromarray(arr))
    for x in (arr, torch.from_numpy(arr), torch.from_numpy(arr).float() / 255, Image.fromarray(arr)):
        assert torch.allclose(run.predict_proba(x), as_path, atol=1e-5)
    batch = run.predict([arr, arr], topk=1)
    assert len(batch) == 2 and batch[0][0][0] == label


def test_cli_predict_reports_bad_files_and_predicts_the_rest(digits_run: Path, odd_images: dict[str, Path],
                                                              capsys) -> None:
    folder = odd_images["gray.png"].parent
    code = main(["predict", str(digits_run), str(folder), "--json", "--topk", "2"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1  # one file failed
    by_name = {Path(r["image"]).name: r for r in results}
    assert set(by_name) == set(odd_images)
    assert "corrupt" in by_name["corrupt.png"]["error"] or "truncated" in by_name["corrupt.png"]["error"]
    assert str(odd_images["corrupt.png"]) in captured.err
    good = [r for n, r in by_name.items() if n != "corrupt.png"]
    assert all(len(r["predictions"]) == 2 for r in good)


def test_cli_predict_plain_text(digits_run: Path, odd_images: dict[str, Path], capsys) -> None:
    assert main(["predict", str(digits_run), str(odd_images["gray.png"])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(odd_images["gray.png"]) + ": ") and "%" in line


def test_cli_predict_missing_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["predict", str(tmp_path / "nope"), "x.png"]) == 2
    assert "no run at" in capsys.readouterr().err
