"""Export to ONNX and TorchScript: outputs match torch on real images, metadata round-trips, predict runs exports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.apps.export import ExportMetadata, OnnxPredictor, TorchScriptPredictor, export_run, load_predictor
from cnnlab.cli.main import main
from cnnlab.data import get_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models import onnx as onnx_module
from cnnlab.training import load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory) -> Path:
    """A FastNet (BatchNorm, so running statistics matter) after one tiny epoch on the digits."""
    out = tmp_path_factory.mktemp("runs") / "fastnet-digits"
    cnnlab.train(model="fastnet", dataset="digits", epochs=1, subset=300, seed=0, out=str(out), quiet=True)
    return out


@pytest.fixture(scope="module")
def exports(digits_run: Path, bn_run: Path, tmp_path_factory) -> dict:
    """(run name, format) -> ExportResult, all four exported once."""
    folder = tmp_path_factory.mktemp("exports")
    runs = {"lenet": digits_run, "fastnet": bn_run}
    suffix = {"onnx": "onnx", "torchscript": "torchscript"}
    return {(name, fmt): export_run(path, format=fmt, out=folder / f"{name}.{suffix[fmt]}")
            for name, path in runs.items() for fmt in suffix}


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> list[Path]:
    """Three digits test images saved as PNG files."""
    folder = tmp_path_factory.mktemp("pngs")
    test = get_dataset("digits", "test")
    paths = []
    for i in (0, 7, 42):
        paths.append(folder / f"digit{i}-{int(test.targets[i])}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(paths[-1])
    return paths


def _test_batch(run, n: int = 40) -> torch.Tensor:
    """n real digits test images (from the end of the split: not the ones the export check used first)."""
    test = get_dataset("digits", "test")
    return dataclasses.replace(run.pipeline, source_channels=test.info.channels)(test.images[-n:])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["lenet", "fastnet"])
def test_export_matches_torch_on_real_images(exports, digits_run, bn_run, name, fmt) -> None:
    result = exports[(name, fmt)]
    assert result.path.is_file() and result.check is not None
    assert result.check.images == 16 and result.check.source == "digits test images"
    assert result.check.max_abs_diff <= 1e-4, result.check
    run = load_run(digits_run if name == "lenet" else bn_run)
    predictor = load_predictor(result.path, trust_code=fmt == "torchscript")  # TorchScript is code: trusted here
    assert isinstance(predictor, OnnxPredictor if fmt == "onnx" else TorchScriptPredictor)
    x = _test_batch(run)
    reference = run.logits(x)
    # Independently of the built-in check: other images, a batch of 40 and of 1 (the batch dimension is dynamic).
    assert (predictor.logits(x) - reference).abs().max().item() <= 1e-4
    assert (predictor.logits(x[:1]) - reference[:1]).abs().max().item() <= 1e-4
    assert torch.equal(predictor.logits(x).argmax(1), reference.argmax(1))


def test_metadata_round_trips(exports, bn_run) -> None:
    run = load_run(bn_run)
    expected = ExportMetadata.from_run(run)
    for fmt in ("onnx", "torchscript"):
        predictor = load_predictor(exports[("fastnet", fmt)].path, trust_code=True)
        assert predictor.meta == expected
        assert predictor.classes == run.classes and predictor.input_size == run.input_size
        assert predictor.pipeline == run.pipeline and predictor.outputs_are_probs is False
    model = onnx.load(str(exports[("fastnet", "onnx")].path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["cnnlab"])["model"]["name"] == "fastnet"
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # symbolic: any batch size


def test_onnx_predict_agrees_with_the_run(exports, digits_run, digit_pngs) -> None:
    run = load_run(digits_run)
    predictor = OnnxPredictor(exports[("lenet", "onnx")].path)
    assert predictor.providers[-1] == "CPUExecutionProvider"
    torch.testing.assert_close(predictor.predict_proba(digit_pngs), run.predict_proba(digit_pngs), atol=1e-5, rtol=0)
    one = predictor.predict(digit_pngs[0], topk=2)
    assert len(one) == 2 and one[0][0] == run.predict(digit_pngs[0], topk=1)[0][0]
    many = predictor.predict(digit_pngs, topk=3)
    assert [m[0][0] for m in many] == [r[0][0] for r in run.predict(digit_pngs, topk=3)]


def test_cli_predict_onnx_gives_the_runs_top_class(exports, digits_run, digit_pngs, capsys) -> None:
    model = exports[("lenet", "onnx")].path
    tops = {}
    for source in (digits_run, model):
        assert main(["predict", str(source), *map(str, digit_pngs), "--json", "--topk", "2"]) == 0
        results = json.loads(capsys.readouterr().out)
        assert [r["image"] for r in results] == [str(p) for p in digit_pngs]
        assert all(len(r["predictions"]) == 2 for r in results)
        tops[source] = [(r["predictions"][0]["class"], r["predictions"][0]["probability"]) for r in results]
    for (c_run, p_run), (c_onnx, p_onnx) in zip(tops[digits_run], tops[model]):
        assert c_run == c_onnx and abs(p_run - p_onnx) < 1e-5
    labels = [p.stem.split("-")[1] for p in digit_pngs]
    assert sum(c == y for (c, _), y in zip(tops[model], labels)) >= 2  # a trained model, not noise
    assert main(["predict", str(model), str(digit_pngs[0])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{digit_pngs[0]}: {tops[model][0][0]} ")


def test_cli_export_prints_the_check(digits_run, digit_pngs, tmp_path, capsys) -> None:
    out = tmp_path / "lenet.torchscript"
    assert main(["export", str(digits_run), "--out", str(out), "--check-images", *map(str, digit_pngs)]) == 0
    text = capsys.readouterr().out
    assert f"to {out} (TorchScript" in text
    assert "check: 3 given images" in text and "max |torchscript - torch|" in text and text.count(": ok") == 1
    assert f"cnnlab predict {out} IMAGE" in text
    assert isinstance(load_predictor(out, trust_code=True), TorchScriptPredictor)
    renamed = tmp_path / "lenet.pt"  # recognized by its contents, whatever the file is called: and refused untrusted
    renamed.write_bytes(out.read_bytes())
    assert isinstance(load_predictor(renamed, trust_code=True), TorchScriptPredictor)
    for path in (out, renamed):
        with pytest.raises(CnnlabError, match="TorchScript model: loading it runs the code inside it"):
            load_predictor(path)


def test_missing_corrupt_and_foreign_onnx_files_are_clear_errors(exports, digit_pngs, tmp_path, capsys) -> None:
    image = str(digit_pngs[0])
    assert main(["predict", str(tmp_path / "missing.onnx"), image]) == 2
    assert "no ONNX model at" in capsys.readouterr().err
    good = exports[("lenet", "onnx")].path.read_bytes()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good[: len(good) // 2])
    assert main(["predict", str(corrupt), image]) == 2
    assert f"{corrupt} is not a readable ONNX model" in capsys.readouterr().err
    foreign = onnx.load(str(exports[("lenet", "onnx")].path))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    assert main(["predict", str(tmp_path / "foreign.onnx"), image]) == 2
    assert "has no cnnlab metadata" in capsys.readouterr().err


def test_a_failed_check_writes_nothing(digits_run, tmp_path, monkeypatch) -> None:
    out = tmp_path / "off.torchscript"
    real = TorchScriptPredictor.logits
    monkeypatch.setattr(TorchScriptPredictor, "logits", lambda self, x: real(self, x) + 1e-3)
    with pytest.raises(CnnlabError, match="does not match torch.*was not written"):
        export_run(digits_run, format="torchscript", out=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_auto_exporter_falls_back_to_legacy(digits_run, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_module, "_dynamo_onnx", broken)
    result = export_run(digits_run, out=tmp_path / "legacy.onnx")
    assert result.exporter == "legacy" and "dynamo exporter failed (RuntimeError" in result.notes[0]
    assert result.check.max_abs_diff <= 1e-4
    with pytest.raises(CnnlabError, match="ONNX export failed: dynamo exporter: RuntimeError"):
        export_run(digits_run, out=tmp_path / "strict.onnx", exporter="dynamo")
    assert not (tmp_path / "strict.onnx").exists()


def test_export_options_are_validated(digits_run, tmp_path) -> None:
    with pytest.raises(CnnlabError, match="must end in .onnx"):
        export_run(digits_run, format="onnx", out=tmp_path / "model.bin")
    with pytest.raises(CnnlabError, match="--opset applies to ONNX exports only"):
        export_run(digits_run, format="torchscript", opset=17, check=False, out=tmp_path / "m.torchscript")
    with pytest.raises(CnnlabError, match="no run at"):
        export_run(tmp_path / "nope")


def test_export_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--format", "--out", "--opset", "--no-check", "--check-images", "--exporter"):
        assert option in text
    assert main([]) == 0 and "export" in capsys.readouterr().out


@pytest.mark.slow
def test_benchmark_quick_prints_its_tables() -> None:
    # One thread: with other tests running, two OpenMP threads on two shared cores stall each other for no gain.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference_throughput.py"), "--quick", "--models", "lenet",
         "--backends", "eager", "torchscript", "onnxruntime", "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "environment: " in out and "== lenet: input 1x28x28" in out and "training (forward + backward" in out
    header = next(line for line in out.splitlines() if line.startswith("backend "))
    assert "b1 p50 ms" in header and "b256 images/s" in header
    for label in ("eager fp32", "TorchScript", "ONNX Runtime"):
        row = next(line for line in out.splitlines() if line.startswith(label + " "))
        cells = row[len(label):].split()
        assert cells[-1].endswith("x") and float(cells[-1][:-1]) > 0 and float(cells[1]) > 0  # ratio, p50
    assert "fastest at batch 1:" in out and "torch ops per forward" in out
    assert "eager, inference_mode, 1 thread (baseline)" in out and "onnxruntime, 1 thread, no graph optimization" in out
