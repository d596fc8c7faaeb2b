"""Speed recipes and benchmarks: fast-mnist is correct on the real MNIST, and every benchmark script still runs.

No timing is asserted here: speed is measured by the scripts in benchmarks/ (see benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.training.config import resolve

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# A tiny setting per benchmark script, so the smoke test stays short; None: another script runs it.
SMOKE_ARGS: dict[str, list[str] | None] = {
    "loader_throughput.py": ["--repeats", "1", "--limit", "2000"],
    # fastnet, every backend; lenet's quick run is tests/test_export.py's. One thread, as there: two OpenMP threads
    # on two cores shared with the rest of the suite stall each other.
    "inference_throughput.py": ["--quick", "--models", "fastnet", "--threads", "1"],
    "distributed_throughput.py": ["--sections", "cpu", "--repeats", "1", "--epochs", "2", "--dataset", "digits",
                                  "--subset", "256"],
    "time_to_accuracy.py": ["--quick"],  # runs reference_mnist.py too (1 epoch on 1,000 images)
    "reference_mnist.py": None,
    "memory.py": ["--quick"],
    "serve_load.py": ["--quick"],
    "flops_floor.py": ["--quick", "--threads", "1"],
    "fault_matrix.py": ["--quick"],
    "api_fuzz.py": ["--quick"],
    "class_weights.py": ["--pairs", "4,9", "--seeds", "1", "--majority", "40", "--minority", "8", "--test", "10",
                         "--epochs", "1"],
    "folder_cache.py": ["--images", "200", "--rounds", "1"],
    "pretrained_offline.py": ["--seeds", "1", "--per-class", "6", "--epochs", "1", "--only", "feature"],
    "auto_defaults.py": ["--quick", "--folders", "digits", "--threads", "1"],
    "channels_last.py": ["--steps", "2", "--rounds", "1", "--batches", "16"],
    "overview_speed.py": ["--quick"],
    "photo_throughput.py": ["--images", "60", "--side", "96", "--quick"],
    "folder_scale.py": ["--sizes", "1200,2400", "--no-mnist"],
}
# What a script must print besides its environment line.
SMOKE_EXPECT = {
    "fault_matrix.py": ["1 of 1 killed runs ended bit-identical"],
    "api_fuzz.py": ["0 operations with failures"],
    "overview_speed.py": ["efficientnet_lite0  3x96x96", "vs predict"],
    "photo_throughput.py": ["ONNX Runtime float32", "first run / the fastest backend's pure embedding time"],
    "folder_scale.py": ["exponent 1,200 -> 2,400: scan"],
    # our seeds run again after the reference, and the ratio uses both rounds
    "time_to_accuracy.py": ["fast-mnist, after the reference:", "median of both rounds", "before it", "after it"],
}


@pytest.fixture
def one_thread():
    """Train on one thread (a shared CI machine makes multi-threaded small steps crawl), then restore."""
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


@pytest.mark.slow
def test_fast_mnist_reaches_98_5_percent_on_real_mnist(data_dir: Path, tmp_path: Path, one_thread: int) -> None:
    out = tmp_path / "run"
    run = cnnlab.train(recipe="fast-mnist", seed=0, data_dir=str(data_dir), threads=one_thread, out=str(out),
                       quiet=True)
    assert run.results["test_acc"] >= 0.985, run.results["test_acc"]  # measured: 99.1-99.3% over seeds 0-4
    assert sum(c["support"] for c in run.results["per_class"]) == 10000  # the whole real test split
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    # All 60,000 training images, no validation split: the test split is only read once, at the end.
    assert resolved["train_images"] == 60000 and resolved["val_images"] == 0
    for name in ("results.json", "metrics.jsonl", "curves.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (out / name).is_file(), name  # the run folder is complete, however fast the run


def test_fastnet_costs_what_its_description_says() -> None:
    net = cnnlab.get_model("fastnet")
    assert cnnlab.summary(net, (1, 28, 28)).macs == 684_928  # "0.68M mult-adds" in the registry and the recipe
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    deep = cnnlab.get_model("fastnet", widths=(8, 8, 8, 8), kernels=(3, 3, 3, 3), strides=(1, 2, 1, 1),
                            pools=(True, False, False, False), padding=["same", "same", "same", "valid"],
                            head="flatten")
    assert deep.fc.in_features == 8 * 5 * 5  # 28 -pool-> 14 -stride 2-> 7 -> 7 -valid-> 5, computed, not typed
    assert deep(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="one entry per block"):
        cnnlab.get_model("fastnet", widths=(8, 8), kernels=(3,), strides=(1, 1), pools=(True, True))


@pytest.mark.parametrize("name", ["fast-mnist", "best-mnist", "fast-fashion"])
def test_speed_recipes_resolve_and_build(name: str) -> None:
    cfg = resolve({"recipe": name})
    assert cfg.val_size == 0 and cfg.amp == "auto" and cfg.channels_last  # bf16 only where the hardware has it
    net = cnnlab.get_model(cfg.model, **cfg.model_kwargs)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_reference_network_is_the_examples_network() -> None:
    spec = importlib.util.spec_from_file_location("reference_mnist", BENCHMARKS / "reference_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    assert sum(p.numel() for p in net.parameters()) == 1_199_882  # the PyTorch examples' MNIST net
    out = net.eval()(torch.randn(3, 1, 28, 28))
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)  # log-softmax outputs


def _scripts() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_script_has_a_smoke_setting() -> None:
    missing = [s for s in _scripts() if s not in SMOKE_ARGS]
    assert not missing, f"add a tiny setting for {missing} to SMOKE_ARGS in tests/test_speed.py"


@pytest.mark.slow
@pytest.mark.parametrize("script", [s for s, a in SMOKE_ARGS.items() if a is not None])
def test_benchmark_script_runs(script: str, data_dir: Path) -> None:
    path = BENCHMARKS / script
    assert path.is_file(), f"{path} is gone: remove it from SMOKE_ARGS"
    env = {**os.environ, "CNNLAB_DATA": str(data_dir)}
    r = subprocess.run([sys.executable, str(path), *SMOKE_ARGS[script]], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "environment:" in r.stdout  # every benchmark prints the machine it measured
    for text in SMOKE_EXPECT.get(script, []):
        assert text in r.stdout, f"{script} no longer prints {text!r}:\n{r.stdout[-3000:]}"
