"""Frozen networks over many images on the fastest backend that gives the same answer: ONNX Runtime agrees with torch,
the choice is measured and kept, an export is cached by weights and checked before use, bf16 is torch's alone, and
without onnxruntime torch runs and one line says what it costs. Never a timing assertion: clocks are not read here,
the verdicts are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.models.backbones import headless
from cnnlab.models.outputs import LogitsOnly
from cnnlab.training import backends
from cnnlab.training.backends import CHANNELS_LAST, ORT, TORCH, Forward, onnx_path, onnx_run


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return LogitsOnly(cnnlab.get_model("fastnet", num_classes=5, input_size=(3, 32, 32))).eval()


def batch(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,size", [("fastnet", (3, 32, 32)), ("lenet", (1, 28, 28)),
                                       pytest.param("resnet18", (3, 64, 64), marks=pytest.mark.slow)])
def test_onnx_runtime_answers_as_torch_does(name: str, size: tuple) -> None:
    net = LogitsOnly(cnnlab.get_model(name, num_classes=4, input_size=size)).eval()
    x = torch.randn(6, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)
    got = onnx_run(net, x)(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    assert torch.equal(backends.torch_run(net, torch.device("cpu"), channels_last=True)(x).argmax(1), expected.argmax(1))


def test_a_big_job_is_measured_the_fastest_kept_and_followed_next_time(monkeypatch: pytest.MonkeyPatch,
                                                                         _own_cache: Path) -> None:
    monkeypatch.setattr(backends, "PAYS_S", 0.0)  # every job pays for an export here
    net, x = small_net(), batch()
    first = Forward(net, images=10_000)
    out = first(x)
    assert set(first.measured) == {TORCH, CHANNELS_LAST, ORT}
    fastest = min(first.measured, key=first.measured.get)
    assert first.backend == fastest
    with torch.no_grad():
        assert torch.allclose(out, net(x), rtol=1e-4, atol=1e-4 * float(net(x).abs().max()))
    saved = json.loads((_own_cache / "backends" / "verdicts.json").read_text())["verdicts"]
    (verdict,) = saved.values()
    assert verdict["fastest"] == fastest and set(verdict["seconds_per_image"]) == set(first.measured)
    again = Forward(small_net(seed=3), images=10_000)  # other weights, same network: the verdict holds, no timing
    again(x)
    assert again.measured == {} and again.backend == fastest


def test_a_verdict_for_onnx_runtime_is_followed_only_where_its_export_pays_or_is_cached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net, x = small_net(), batch()
    key = backends.network_key(net, tuple(x.shape[1:]))
    backends.save_verdict(key, {"seconds_per_image": {TORCH: 1e-3, CHANNELS_LAST: 5e-4, ORT: 1e-4}, "fastest": ORT})
    small = Forward(net, images=8)  # 8 ms of torch: an export would not pay, and none is cached
    small(x)
    assert small.backend == CHANNELS_LAST and not onnx_path(net, (3, 32, 32)).exists()
    big = Forward(net, images=1_000_000)
    big(x)
    assert big.backend == ORT and onnx_path(net, (3, 32, 32)).is_file()
    cached = Forward(net, images=1)  # its export is there now: even one image runs on it
    cached(x)
    assert cached.backend == ORT


def test_the_export_cache_is_keyed_by_weights_and_a_damaged_file_is_exported_again() -> None:
    a, b, x = small_net(0), small_net(1), batch()
    assert onnx_path(a, (3, 32, 32)) == onnx_path(small_net(0), (3, 32, 32))
    assert onnx_path(a, (3, 32, 32)) != onnx_path(b, (3, 32, 32))  # other weights, another file
    assert onnx_path(a, (3, 32, 32)) != onnx_path(a, (3, 64, 64))
    onnx_run(a, x)
    path = onnx_path(a, (3, 32, 32))
    path.write_bytes(path.read_bytes()[:100])  # damaged
    with torch.no_grad():
        assert torch.allclose(onnx_run(a, x)(x), a(x), atol=1e-4)  # exported again, not trusted
    assert path.stat().st_size > 1000


def test_onnx_runtime_threads_sleep_when_idle_and_run_a_few_images_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spinning threads take the cores from the threads that decode the next batch; the arena keeps the memory of
    # the largest call: both measured in benchmarks/README.md (issue 29). torch takes the caller's batch whole.
    made = []
    session = backends._session

    def recording(path, options):
        made.append(options)
        return session(path, options)

    monkeypatch.setattr(backends, "_session", recording)
    monkeypatch.setattr(backends, "CHUNK_PIXELS", 4 * 32 * 32 + 100)  # 4 images of 32x32 at a time
    net, x = small_net(), batch(13)
    run = onnx_run(net, x)
    options = made[-1]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == torch.get_num_threads()
    for backend, expected in ((ORT, [4, 4, 4, 1]), (TORCH, [13])):
        forward, sizes = Forward(net, images=10**6), []
        forward.backend, forward._run = backend, lambda part, sizes=sizes: sizes.append(len(part)) or run(part)
        with torch.no_grad():
            assert torch.allclose(forward(x), net(x), atol=1e-4)
        assert sizes == expected


def test_answers_that_differ_from_torch_are_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "PAYS_S", 0.0)
    real = backends.onnx_run
    monkeypatch.setattr(backends, "onnx_run", lambda module, example: (lambda x, run=real(module, example): run(x) + 0.5))
    said: list[str] = []
    fwd = Forward(small_net(), images=10_000, say=said.append)
    fwd(batch())
    assert fwd.backend in (TORCH, CHANNELS_LAST) and ORT not in fwd.measured
    assert any("ONNX Runtime not used: its outputs differ from torch's by 0.5" in s for s in said)


def test_without_onnxruntime_torch_runs_and_one_line_says_what_it_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "PAYS_S", 0.0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    said: list[str] = []
    net, x = small_net(), batch()
    fwd = Forward(net, images=50_000, say=said.append)
    out = fwd(x)
    assert fwd.backend in (TORCH, CHANNELS_LAST) and set(fwd.measured) == {TORCH, CHANNELS_LAST}
    (line,) = said
    assert line.startswith("onnxruntime is not installed: these 50,000 images run in torch") and \
        "pip install onnxruntime" in line
    with torch.no_grad():
        assert torch.allclose(out, net(x), atol=1e-5)


def test_bf16_is_torch_autocast_alone_and_only_where_asked() -> None:
    net, x = small_net(), batch()
    fwd = Forward(net, images=10**9, amp="bf16")
    out = fwd(x)
    with torch.no_grad():
        exact = net(x)
    assert fwd.backend == TORCH and fwd.measured == {} and out.dtype == torch.float32
    assert not torch.equal(out, exact) and torch.allclose(out, exact, atol=0.1 * float(exact.abs().max()))


def test_a_small_job_stays_in_torch_without_exporting_anything(_own_cache: Path) -> None:
    fwd = Forward(small_net(), images=10)
    fwd(batch())
    assert fwd.backend == TORCH and not (_own_cache / "backends").exists()


@pytest.mark.slow
def test_embeddings_of_a_backbone_agree_across_backends() -> None:
    net = cnnlab.get_model("resnet18", num_classes=3, input_size=(3, 64, 64)).eval()
    backbone, x = headless(net), torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = backbone(x)
    assert expected.shape == (4, 512) and torch.allclose(onnx_run(backbone, x)(x), expected, atol=1e-4)
    assert type(net.fc).__name__ == "Linear"  # the model itself keeps its head
