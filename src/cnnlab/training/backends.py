"""A frozen network run over many images at this machine's speed: the fastest backend that gives the same answer.

    fwd = Forward(net, device, images=12_000)   # net in eval mode, returning one tensor
    y = fwd(x)                                  # float32 outputs on the CPU; the backend is chosen at the first call
    fwd.backend                                 # "torch", "torch channels-last" or "onnxruntime"

The candidates: torch as the network is, torch in channels-last memory format, and ONNX Runtime on the network
exported once per architecture and weights (cached on disk, as embeddings are) and checked against torch's outputs
before it is used. Which is fastest is measured once per network, input size, thread count and machine, on a few
images, and kept; a job that torch would finish before an export paid off stays in torch (unless its export and a
verdict for it are already cached). With mixed precision asked for (bf16), torch's autocast alone.
"""

from __future__ import annotations

import hashlib
import json
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cnnlab.data.paths import user_cache_dir
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_path, atomic_write_json
from cnnlab.models.weights import weights_digest

PAYS_S = 20.0  # a job torch would take longer than this on is worth an export (a few seconds: benchmarks/README.md)
ORT_SPEEDUP = 3.0  # ONNX Runtime over torch's best on a CPU, for what missing it costs (benchmarks/README.md)
PROBE_IMAGES = 8  # images each candidate is timed on
CHUNK_PIXELS = 4 * 224 * 224  # ONNX Runtime runs at most this many input pixels (per channel) at once, whatever
# the batch: its memory arena keeps the most any call needed, and 4 images of 224 px run as fast as 32 in a tenth of
# the memory (benchmarks/README.md, issue 29)
RTOL = 1e-4  # ONNX Runtime's outputs must be within this share of the outputs' largest magnitude of torch's
VERDICTS_FORMAT = 1
TORCH, CHANNELS_LAST, ORT = "torch", "torch channels-last", "onnxruntime"

Run = Callable[[torch.Tensor], torch.Tensor]


def backends_dir() -> Path:
    """Where exported networks and the measured verdicts are kept: `<cnnlab cache>/backends`."""
    return user_cache_dir() / "backends"


class Forward:
    """Run `module` (frozen, eval mode, one tensor out) over batches with the fastest backend that gives the same
    answer for a job of `images` images; `amp` "bf16" runs torch under bf16 autocast instead (a chosen precision,
    not the same answer)."""

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu", *, images: int = 0, amp: str = "off",
                 say: Callable[[str], None] | None = None):
        self.module, self.device, self.images, self.amp = module, torch.device(device), int(images), amp
        self.say = say or (lambda text: None)
        self.backend: str | None = None
        self.measured: dict[str, float] = {}  # seconds per image of each candidate timed here
        self._run: Run | None = None
        self._lock = threading.Lock()  # a server's threads may call it first at once: one of them chooses

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._run is None:
            with self._lock:
                if self._run is None:
                    self._run = self._choose(x)
        # torch takes the caller's batch (never more than training at that batch size needs)
        step = max(1, CHUNK_PIXELS // (x.shape[-2] * x.shape[-1])) if self.backend == ORT else len(x)
        if len(x) <= step:
            return self._run(x)
        return torch.cat([self._run(part) for part in x.split(step)])

    # ---------------------------------------------------------------- choosing

    def _choose(self, x: torch.Tensor) -> Run:
        plain = torch_run(self.module, self.device, channels_last=False, amp=self.amp)
        if self.amp != "off" or self.device.type != "cpu" or x.dim() != 4:
            return self._use(TORCH, plain)
        key = network_key(self.module, tuple(x.shape[1:]))
        verdict = load_verdicts().get(key)
        probe = x[:PROBE_IMAGES]
        reference = plain(probe)  # torch's answer (and its warm-up)
        if verdict is None:
            self.measured[TORCH] = per_image(plain, probe)
            if self.measured[TORCH] * self.images < PAYS_S:
                return self._use(TORCH, plain)
            verdict = self._measure(probe, reference)
            save_verdict(key, verdict)
        return self._follow(verdict, probe, reference)

    def _measure(self, probe: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
        """Seconds per image of each candidate on `probe` (after one untimed call), and the fastest."""
        cl = torch_run(self.module, self.device, channels_last=True)
        self.measured[CHANNELS_LAST] = per_image(cl, probe)
        ort = self._onnx(probe, reference)
        if ort is not None:
            self.measured[ORT] = per_image(ort, probe)
        times = dict(self.measured)
        return {"seconds_per_image": times, "fastest": min(times, key=times.get)}

    def _follow(self, verdict: dict[str, Any], probe: torch.Tensor, reference: torch.Tensor) -> Run:
        """The verdict's backend where it can run here and now (an export only when it pays), else torch."""
        fastest = verdict["fastest"]
        if fastest == ORT:
            cached = onnx_path(self.module, tuple(probe.shape[1:])).is_file()
            saving = verdict["seconds_per_image"][TORCH] - verdict["seconds_per_image"][ORT]
            if cached or saving * self.images >= PAYS_S:
                ort = self._onnx(probe, reference)
                if ort is not None:
                    return self._use(ORT, ort)
            fastest = min((k for k in verdict["seconds_per_image"] if k != ORT), key=verdict["seconds_per_image"].get)
        if fastest == CHANNELS_LAST:
            return self._use(CHANNELS_LAST, torch_run(self.module, self.device, channels_last=True))
        return self._use(TORCH, torch_run(self.module, self.device, channels_last=False))

    def _onnx(self, probe: torch.Tensor, reference: torch.Tensor) -> Run | None:
        """ONNX Runtime on the exported network, checked on `probe` against torch's `reference`; None (said once)
        where onnxruntime is missing, the export fails or the answers differ."""
        try:
            run = onnx_run(self.module, probe)
        except ImportError:
            best = min(self.measured.values())
            saved = best * self.images * (1 - 1 / ORT_SPEEDUP)
            self.say(f"onnxruntime is not installed: these {self.images:,} images run in torch, ~{best * self.images:.0f} "
                     f"s; ONNX Runtime runs such networks ~{ORT_SPEEDUP:g}x faster on a CPU (about {saved:.0f} s less): "
                     f"pip install onnxruntime")
            return None
        except CnnlabError as exc:
            self.say(f"ONNX Runtime not used: {exc}")
            return None
        got = run(probe)
        scale = float(reference.abs().max()) or 1.0
        worst = float((got - reference).abs().max()) if got.shape == reference.shape else float("inf")
        if worst > RTOL * scale:
            self.say(f"ONNX Runtime not used: its outputs differ from torch's by {worst:.2g} (allowed "
                     f"{RTOL * scale:.2g})")
            return None
        return run

    def _use(self, name: str, run: Run) -> Run:
        self.backend = name
        return run


# ---------------------------------------------------------------- the backends


def torch_run(module: nn.Module, device: torch.device, channels_last: bool, amp: str = "off") -> Run:
    """torch's forward pass (no autograd), outputs float32 on the CPU; channels-last: the network and its input in
    that memory format (a copy of the network: the module itself is left as it is)."""
    if channels_last:
        import copy

        module = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # not inference mode: embeddings are then trained on, which autograd must accept
            if amp == "off":
                out = module(x)
            else:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
                    out = module(x)
        return out.float().cpu()

    return run


def onnx_run(module: nn.Module, example: torch.Tensor) -> Run:
    """ONNX Runtime on `module` exported for inputs shaped like `example` (any batch size), with torch's CPU
    threads; the export is cached by architecture and weights. Raises ImportError without onnxruntime."""
    import onnxruntime  # noqa: F401 - ImportError here means: not installed

    from cnnlab.models.onnx import session_options

    path = onnx_path(module, tuple(example.shape[1:]))
    options = session_options(torch.get_num_threads(), spin=False)
    session = _session(path, options) if path.is_file() else None
    if session is None:
        _export(module, example, path)
        session = _session(path, options)
        if session is None:
            raise CnnlabError(f"the exported network {path} does not load in ONNX Runtime")
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {name: arr})[0])

    return run


def _session(path: Path, options: Any) -> Any:
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # a damaged cache file is exported again, never trusted
        path.unlink(missing_ok=True)
        return None


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The network as an ONNX file at `path`, written atomically."""
    from cnnlab.models.onnx import onnx_bytes

    was_training = module.training
    module.eval()
    try:
        graph = onnx_bytes(module, example[:2].detach().cpu().float().contiguous())
    finally:
        module.train(was_training)
    with atomic_path(path) as tmp:
        tmp.write_bytes(graph)


# ---------------------------------------------------------------- keys and verdicts


def machine() -> str:
    """This machine as far as speed goes: its processor, torch's threads, the versions that run the network."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = None
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return json.dumps([cpu, torch.get_num_threads(), torch.__version__, ort])


def network_key(module: nn.Module, input_size: tuple[int, ...]) -> str:
    """What a speed depends on: the layers (types and shapes, not their values), the input size, the machine."""
    h = hashlib.sha1(machine().encode())
    h.update(json.dumps(list(input_size)).encode())
    for name, m in module.named_modules():
        h.update(f"{name}|{type(m).__name__}|{m.extra_repr()}\n".encode())
    return h.hexdigest()[:20]


def onnx_path(module: nn.Module, input_size: tuple[int, ...]) -> Path:
    """Where the export of this network (architecture and weights) for this input size is cached."""
    h = hashlib.sha1(f"cnnlab-onnx|{torch.__version__}|{list(input_size)}|{network_key(module, input_size)}".encode())
    h.update(weights_digest(module.state_dict()).encode())
    return backends_dir() / f"{h.hexdigest()[:24]}.onnx"


def load_verdicts() -> dict[str, dict[str, Any]]:
    """The verdicts measured so far on this machine ({} when absent or not exactly what `save_verdict` writes)."""
    try:
        data = json.loads((backends_dir() / "verdicts.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != VERDICTS_FORMAT or not isinstance(data.get("verdicts"),
                                                                                            dict):
        return {}
    return {k: v for k, v in data["verdicts"].items() if _valid(v)}


def _valid(v: Any) -> bool:
    times = v.get("seconds_per_image") if isinstance(v, dict) else None
    return (isinstance(times, dict) and TORCH in times and v.get("fastest") in times
            and all(k in (TORCH, CHANNELS_LAST, ORT) and isinstance(t, (int, float)) and t > 0
                    for k, t in times.items()))


def save_verdict(key: str, verdict: dict[str, Any]) -> None:
    """Kept for the next run (atomically); a read-only cache costs only the measurement again."""
    verdicts = load_verdicts()
    verdicts[key] = verdict
    try:
        atomic_write_json({"format": VERDICTS_FORMAT, "verdicts": verdicts}, backends_dir() / "verdicts.json")
    except OSError:
        pass


def per_image(run: Run, probe: torch.Tensor) -> float:
    """Seconds per image of `run` on `probe`, after one untimed call (the first allocates and picks kernels)."""
    run(probe)
    t0 = time.perf_counter()
    run(probe)
    return (time.perf_counter() - t0) / max(len(probe), 1)
