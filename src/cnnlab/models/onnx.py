"""A network as an ONNX graph (torch's exporters, checked by the caller), and the optional runtimes that needs:
onnx, onnxscript, onnxruntime (the `onnx` extra), with ONNX Runtime's session settings. `cnnlab export` writes
such graphs with a run's metadata; `training/backends.py` runs frozen networks through them where that is faster."""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
from typing import Iterator

import torch
from torch import nn

from cnnlab.errors import CnnlabError

EXPORTERS = ("auto", "dynamo", "legacy")

# torch.jit.* and the legacy ONNX exporter warn on every call in this torch; we say so once, in our own words.
_DEPRECATION = re.compile(r"`torch\.jit\.\w+` is deprecated|legacy TorchScript-based ONNX export|"
                          r"The feature will be removed")


def require_onnx(module: str = "onnxruntime"):
    """Import an optional ONNX dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CnnlabError(f"{module} is not installed: pip install 'cnnlab[onnx]'") from None


@contextlib.contextmanager
def quiet_jit() -> Iterator[list[str]]:
    """Hide the per-call deprecation warnings of torch.jit and the legacy exporter; yields the hidden messages."""
    hidden: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield hidden
    for w in caught:
        if _DEPRECATION.search(str(w.message)):
            hidden.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def onnx_model(model: nn.Module, example: torch.Tensor, opset: int | None = None, exporter: str = "auto"):
    """(onnx.ModelProto, exporter used, notes): input "input" and output "logits" with a dynamic batch dimension.

    "dynamo" is torch.export-based, the maintained exporter; "legacy" the TorchScript-based one, which this torch
    deprecates; "auto" tries dynamo and falls back to legacy when dynamo cannot export the model.
    """
    if exporter not in EXPORTERS:
        raise CnnlabError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    require_onnx("onnx")
    notes: list[str] = []
    errors: list[str] = []
    for name in (("dynamo", "legacy") if exporter == "auto" else (exporter,)):
        try:
            proto = _dynamo_onnx(model, example, opset) if name == "dynamo" else _legacy_onnx(model, example, opset)
            return proto, name, notes
        except Exception as exc:  # exporters raise many types; the fallback or the message below handles them
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            errors.append(f"{name} exporter: {type(exc).__name__}: {first}")
            if exporter == "auto" and name == "dynamo":
                notes.append(f"the dynamo exporter failed ({type(exc).__name__}: {first}); used the legacy one")
    hint = "--exporter legacy, another --opset" if exporter == "dynamo" else "another --opset"
    raise CnnlabError("ONNX export failed: " + "; ".join(errors) + f". Try {hint}, or --format torchscript")


def _dynamo_onnx(model: nn.Module, example: torch.Tensor, opset: int | None):
    require_onnx("onnxscript")  # the dynamo exporter builds its graphs with it
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), opset_version=opset, verbose=False,
                                optimize=True)
    proto = program.model_proto
    # Below opset 18 dynamo exports at 18 and converts down; when that fails it keeps 18 with only a log line.
    if opset is not None and opset_of(proto) != opset:
        raise RuntimeError(f"could not convert the graph to opset {opset} (it is at opset {opset_of(proto)})")
    return proto


def opset_of(proto) -> int | None:
    """The default-domain opset of an ONNX model."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _legacy_onnx(model: nn.Module, example: torch.Tensor, opset: int | None):
    import onnx

    return onnx.load_model_from_string(_legacy_bytes(model, example, opset))


def _legacy_bytes(model: nn.Module, example: torch.Tensor, opset: int | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    with quiet_jit():
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)
    return buf.getvalue()


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The network as a serialized ONNX graph, for ONNX Runtime alone (no `onnx` package needed): the legacy
    exporter first (seconds, where dynamo takes tens of them for EfficientNet-Lite0), dynamo where it fails."""
    try:
        return _legacy_bytes(model, example)
    except Exception as legacy:  # exporters raise many types
        try:
            proto, _, _ = onnx_model(model, example, exporter="dynamo")
            return proto.SerializeToString()
        except CnnlabError as dynamo:
            first = (str(legacy).strip().splitlines() or [type(legacy).__name__])[0][:300]
            raise CnnlabError(f"ONNX export failed: legacy exporter: {type(legacy).__name__}: {first}; {dynamo}") \
                from None


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, always with the CPU as the fallback."""
    ort = require_onnx()

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(threads: int | None = None, spin: bool = True):
    """ORT session options: every graph optimization, quiet logs, and `threads` intra-op threads (None: ORT's);
    `spin` False: idle threads sleep rather than spin, leaving the cores to threads that decode images."""
    ort = require_onnx()

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT otherwise warns about unused initializers and the like
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so
