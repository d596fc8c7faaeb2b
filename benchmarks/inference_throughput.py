"""Inference latency (batch 1, p50/p99) and throughput (batch 256) per backend, and training images/s.

Backends: eager fp32, channels_last, torch.compile, TorchScript (trace + freeze + optimize_for_inference) and
ONNX Runtime, each compared with eager measured in the same run. Models are built from the registry by name with
random weights (speed does not depend on them). Backends are measured round-robin, a slice of calls each per
round, so a change in machine load hits all of them alike. Then, for batch 1, where eager time goes: per-op
framework overhead, and what helps (inference_mode, one thread, BatchNorm folding, ORT's threads).

    python benchmarks/inference_throughput.py [--models lenet fastnet] [--quick] [--backends ...] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F
from _common import median, print_environment
from torch import nn

from cnnlab.models import count_parameters, get_model
from cnnlab.text import format_table

BACKENDS = ("eager", "channels_last", "compile", "torchscript", "onnxruntime")
LABELS = {"eager": "eager fp32", "channels_last": "channels_last", "compile": "torch.compile",
          "torchscript": "TorchScript", "onnxruntime": "ONNX Runtime"}
BIG = 256


@dataclass
class Backend:
    """One way of running the model: a callable per batch size and what setting it up cost."""

    name: str
    b1: Callable[[], object]
    big: Callable[[], object]
    setup_s: float | None = None  # compile / trace / export time, None when there is nothing to set up


@dataclass
class Settings:
    warmup: int
    calls: int  # batch-1 calls per backend (split over rounds)
    rounds: int
    repeats: int  # batch-256 calls per backend
    train_steps: int
    threads: int


# ---------------------------------------------------------------- backends


def eager(model: nn.Module, x1: torch.Tensor, xb: torch.Tensor) -> Backend:
    def run(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return model(x)
        return call
    return Backend("eager", run(x1), run(xb))


def channels_last(model: nn.Module, x1: torch.Tensor, xb: torch.Tensor) -> Backend:
    m = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():  # the input arrives NCHW, as from a decoder: converting it is part of the cost
                return m(x.contiguous(memory_format=torch.channels_last))
        return call
    return Backend("channels_last", run(x1), run(xb))


def compiled(model: nn.Module, x1: torch.Tensor, xb: torch.Tensor) -> Backend | str:
    """torch.compile (inductor, static shapes: one graph per batch size); setup is both first calls."""
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python/platform"
        m = torch.compile(copy.deepcopy(model), dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            m(x1)
            m(xb)
        setup = time.perf_counter() - t0
    except Exception as exc:  # no compiler, unsupported platform, inductor failure: skip, say why
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"torch.compile failed: {type(exc).__name__}: {first}"

    def run(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return m(x)
        return call
    return Backend("compile", run(x1), run(xb), setup)


def torchscript(model: nn.Module, x1: torch.Tensor, xb: torch.Tensor) -> Backend | str:
    """trace -> freeze (weights inlined, BN folded) -> optimize_for_inference (oneDNN-prepacked convolutions)."""
    from cnnlab.models.onnx import quiet_jit

    try:
        t0 = time.perf_counter()
        with torch.no_grad(), quiet_jit():
            m = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, xb[:2])))
        setup = time.perf_counter() - t0
    except Exception as exc:  # TorchScript is deprecated in recent torch and may be missing from a build
        return f"TorchScript failed: {type(exc).__name__}: {exc}"

    def run(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return m(x)
        return call
    return Backend("torchscript", run(x1), run(xb), setup)


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The model exported by cnnlab's exporter (dynamic batch), serialized."""
    from cnnlab.models.onnx import onnx_model

    proto, _, _ = onnx_model(model, example[:2])
    return proto.SerializeToString()


def ort_session(onnx: bytes, threads: int, optimize: bool = True):
    """An ORT CPU session: `threads` intra-op threads, full graph optimization unless `optimize` is off."""
    import onnxruntime as ort

    from cnnlab.models.onnx import session_options

    so = session_options(threads)
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])


def onnxruntime(onnx: Callable[[], bytes], x1: torch.Tensor, xb: torch.Tensor, threads: int) -> Backend | str:
    """Setup time is export + session creation."""
    try:
        t0 = time.perf_counter()
        sess = ort_session(onnx(), threads)
        setup = time.perf_counter() - t0
    except Exception as exc:
        return f"ONNX Runtime failed: {type(exc).__name__}: {exc}"
    return Backend("onnxruntime", ort_call(sess, x1), ort_call(sess, xb), setup)


def ort_call(sess, x: torch.Tensor) -> Callable[[], object]:
    name = sess.get_inputs()[0].name

    def call() -> object:
        return sess.run(None, {name: x.numpy()})  # zero-copy view of the torch tensor
    return call


# ---------------------------------------------------------------- measuring


def latencies(calls: dict[str, Callable[[], object]], s: Settings,
              settings: dict[str, Callable[[], ContextManager]] | None = None) -> dict[str, list[float]]:
    """Seconds per call, round-robin over the variants; `settings` wraps a variant's slices (threads, flags)."""
    out: dict[str, list[float]] = {k: [] for k in calls}
    setting = lambda name: (settings or {}).get(name, contextlib.nullcontext)()
    for name, fn in calls.items():
        with setting(name):
            for _ in range(s.warmup):
                fn()
    per_round = max(1, s.calls // s.rounds)
    for _ in range(s.rounds):
        for name, fn in calls.items():
            samples = out[name]
            with setting(name):
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - t0)
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def onednn_off() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a note about Intel GPUs' TF32 on every flag change
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def train_rate(name: str, batch: int, steps: int, memory_format: torch.memory_format) -> float:
    """Images/s of forward + backward + AdamW step on an in-memory batch (median step time)."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=10).train().to(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, *model.spec.input_size).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch / median(times)


# ---------------------------------------------------------------- reporting


def table(headers: list[str], rows: list[list[str]]) -> str:
    """First column left-aligned, figures right-aligned."""
    return format_table(headers, rows, align="l" + "r" * (len(headers) - 1))


def op_count(model: nn.Module, x: torch.Tensor) -> int:
    """Top-level torch ops one forward calls (each pays the framework's per-op dispatch overhead)."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.n += 1  # the mode is off while func runs, so ops it calls internally are not counted
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), Count():
        model(x)
    return Count.n


def flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops()


def dispatch_floor(s: Settings) -> tuple[float, float]:
    """(seconds per trivial torch op, seconds per trivial nn.Module call): the framework's fixed costs."""
    a, ident = torch.ones(1), nn.Identity()
    inner = 100

    def ops() -> None:
        with torch.inference_mode():
            for _ in range(inner):
                torch.add(a, a)

    def modules() -> None:
        for _ in range(inner):
            ident(a)

    lat = latencies({"op": ops, "module": modules}, Settings(s.warmup, max(10, s.calls // 10), s.rounds, 0, 0, 1))
    return median(lat["op"]) / inner, median(lat["module"]) / inner


def fold_bn(model: nn.Module) -> nn.Module | None:
    """The model with every BatchNorm folded into the conv before it (None when it has no BatchNorm)."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return None
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval())


# ---------------------------------------------------------------- one model


def bench_model(name: str, backends: list[str], s: Settings, explore: bool) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=10).eval()
    size = model.spec.input_size
    x1, xb = torch.randn(1, *size), torch.randn(BIG, *size)
    fl = flops(model, x1)
    print(f"\n== {name}: input {'x'.join(map(str, size))}, {count_parameters(model):,} parameters, "
          f"{fl / 1e6:.2f} MFLOP per image")

    rates = {fmt: train_rate(name, BIG, s.train_steps, fmt) for fmt in (torch.contiguous_format, torch.channels_last)}
    print(f"training (forward + backward + AdamW, batch {BIG}, median of {s.train_steps} steps): "
          f"eager fp32 {rates[torch.contiguous_format]:,.0f} images/s, channels_last "
          f"{rates[torch.channels_last]:,.0f} images/s")

    exported: list[bytes] = []

    def onnx() -> bytes:  # exported once, shared by every ONNX Runtime session of this model
        if not exported:
            exported.append(onnx_bytes(model, xb))
        return exported[0]

    built: dict[str, Backend] = {}
    for b in backends:
        made = {"eager": lambda: eager(model, x1, xb), "channels_last": lambda: channels_last(model, x1, xb),
                "compile": lambda: compiled(model, x1, xb), "torchscript": lambda: torchscript(model, x1, xb),
                "onnxruntime": lambda: onnxruntime(onnx, x1, xb, s.threads)}[b]()
        if isinstance(made, str):
            print(f"skipped {LABELS[b]}: {made}")
        else:
            built[b] = made
    lat = latencies({k: v.b1 for k, v in built.items()}, s)
    big = latencies({k: v.big for k, v in built.items()}, Settings(1, s.repeats, s.repeats, s.repeats, 0, s.threads))
    base1, base_big = median(lat["eager"]), median(big["eager"])
    rows = []
    for k, b in built.items():
        p50, p99, tb = median(lat[k]), percentile(lat[k], 99), median(big[k])
        rows.append([LABELS[k], "-" if b.setup_s is None else f"{b.setup_s:.1f}", f"{p50 * 1e3:.3f}",
                     f"{p99 * 1e3:.3f}", f"{base1 / p50:.2f}x", f"{BIG / tb:,.0f}", f"{base_big / tb:.2f}x"])
    print(f"inference, {s.threads} thread(s); batch 1: {len(lat['eager'])} calls per backend after "
          f"{s.warmup} warm-up; batch {BIG}: median of {s.repeats}")
    print(table(["backend", "setup s", "b1 p50 ms", "b1 p99 ms", "b1 vs eager", f"b{BIG} images/s",
                 f"b{BIG} vs eager"], rows))
    best = min(built, key=lambda k: median(lat[k]))
    speedup = base1 / median(lat[best])
    verdict = "met" if speedup >= 2 else "not met"
    print(f"fastest at batch 1: {LABELS[best]}, {speedup:.2f}x eager (goal >= 2x: {verdict})")
    if explore:
        explore_batch1(model, x1, onnx, s, fl, base_big)


def explore_batch1(model: nn.Module, x1: torch.Tensor, onnx: Callable[[], bytes], s: Settings, fl: int,
                   eager_big_s: float) -> None:
    """Where eager batch-1 time goes, and what each remedy buys."""
    ops = op_count(model, x1)
    calls: dict[str, Callable[[], object]] = {}

    def plain() -> object:
        return model(x1)

    def no_grad() -> object:
        with torch.no_grad():
            return model(x1)

    def inference() -> object:
        with torch.inference_mode():
            return model(x1)

    # The other thread count worth knowing: one thread if the run uses several, else every core.
    other = 1 if s.threads > 1 else (os.cpu_count() or 1)
    threads = lambda n: f"{n} thread{'s' if n > 1 else ''}"
    calls = {"eager, autograd on": plain, "eager, no_grad": no_grad,
             f"eager, inference_mode, {threads(s.threads)} (baseline)": inference}
    if other != s.threads:
        calls[f"eager, inference_mode, {threads(other)}"] = inference
    calls["eager, oneDNN off (native conv kernels)"] = inference
    folded = fold_bn(model)
    if folded is not None:
        def fused() -> object:
            with torch.inference_mode():
                return folded(x1)
        calls["eager, BatchNorm folded into conv"] = fused
    try:
        for n in dict.fromkeys((s.threads, other)):
            calls[f"onnxruntime, {threads(n)}"] = ort_call(ort_session(onnx(), n), x1)
        calls[f"onnxruntime, {threads(s.threads)}, no graph optimization"] = ort_call(
            ort_session(onnx(), s.threads, optimize=False), x1)
    except Exception as exc:
        print(f"(ONNX Runtime variants skipped: {type(exc).__name__}: {exc})")
    lat = latencies(calls, s, {f"eager, inference_mode, {threads(other)}": lambda: torch_threads(other),
                               "eager, oneDNN off (native conv kernels)": onednn_off})
    floor = dispatch_floor(s)
    base = median(lat[f"eager, inference_mode, {threads(s.threads)} (baseline)"])
    modules = sum(1 for m in model.modules() if not list(m.children()))
    fixed = ops * floor[0] + modules * floor[1]
    print(f"\nbatch 1, where the time goes: {modules} layers, {ops} torch ops per forward; eager p50 "
          f"{base * 1e6:.0f} us = {base / ops * 1e6:.1f} us per op; {fl / base / 1e9:.2f} GFLOP/s at batch 1 vs "
          f"{fl * BIG / eager_big_s / 1e9:.2f} GFLOP/s at batch {BIG}")
    print(f"framework floor: a trivial op costs {floor[0] * 1e6:.1f} us and a trivial module call "
          f"{floor[1] * 1e6:.1f} us, so dispatch and Python account for ~{fixed * 1e6:.0f} us "
          f"({fixed / base:.0%}); the rest is kernel time, including per-call kernel setup (see oneDNN off)")
    rows = [[k, f"{median(v) * 1e3:.3f}", f"{percentile(v, 99) * 1e3:.3f}", f"{base / median(v):.2f}x"]
            for k, v in lat.items()]
    print(table(["batch-1 variant", "p50 ms", "p99 ms", "vs baseline"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet", "fastnet"], help="registry names")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                    help="backends to measure (eager is always included: it is the baseline)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch and ORT intra-op threads (default: torch's, %(default)s)")
    ap.add_argument("--calls", type=int, default=2000, help="timed batch-1 calls per backend")
    ap.add_argument("--repeats", type=int, default=20, help=f"timed batch-{BIG} calls per backend")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few calls, results are only indicative")
    ap.add_argument("--no-explore", dest="explore", action="store_false", help="skip the batch-1 overhead study")
    args = ap.parse_args()
    # A fresh inductor cache (removed at exit), so compile time is the cold cost a first deployment pays.
    cache = None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else tempfile.TemporaryDirectory(prefix="cnnlab-inductor-")
    if cache is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name
    torch.set_num_threads(args.threads)
    s = (Settings(warmup=3, calls=30, rounds=3, repeats=3, train_steps=2, threads=args.threads) if args.quick else
         Settings(warmup=50, calls=args.calls, rounds=10, repeats=args.repeats, train_steps=10, threads=args.threads))
    backends = ["eager"] + [b for b in args.backends if b != "eager"]
    print_environment()
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    t0 = time.perf_counter()
    for name in args.models:
        bench_model(name, backends, s, args.explore)
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
