"""Exporting a run's model to ONNX or TorchScript, with its metadata, and checking it against torch on real images."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cnnlab.apps.export.metadata import KEY, ExportMetadata
from cnnlab.data import take
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_path
from cnnlab.models.onnx import onnx_model, opset_of, quiet_jit
from cnnlab.models.outputs import LogitsOnly

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
# |exported - torch| <= ATOL + RTOL * |torch| per logit; RTOL allows for float32 rounding of large logits.
ATOL, RTOL = 1e-4, 1e-5
CHECK_IMAGES = 16

class ExportCheckError(CnnlabError):
    """The exported model does not reproduce torch's outputs."""


def example_input(input_size: Sequence[int], batch: int = 2) -> torch.Tensor:
    """A fixed random batch to trace with; batch 2 so that no exporter specializes the batch dimension to 1."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_size, generator=g)


# ---------------------------------------------------------------- the two formats


def write_onnx(proto, meta: ExportMetadata, path: Path) -> None:
    """Save the model with the cnnlab metadata in its metadata_props."""
    import onnx

    for i in reversed(range(len(proto.metadata_props))):  # a re-export replaces, never duplicates
        if proto.metadata_props[i].key == KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY, meta.to_json()
    proto.doc_string = f"cnnlab export of {meta.model.get('name')} ({len(meta.classes)} classes) from {meta.source}"
    if proto.ByteSize() >= 2**31 - 1:
        raise CnnlabError("the model is over 2 GB, the limit of a single ONNX file; export --format torchscript")
    onnx.save_model(proto, str(path))


def write_torchscript(model: nn.Module, example: torch.Tensor, meta: ExportMetadata, path: Path) -> list[str]:
    """Trace, freeze (inlines weights, folds BatchNorm into convolutions) and save with the metadata; returns
    the deprecation messages torch printed."""
    with torch.no_grad(), quiet_jit() as hidden:
        frozen = torch.jit.freeze(torch.jit.trace(model, example))
        torch.jit.save(frozen, str(path), _extra_files={f"{KEY}.json": meta.to_json()})
    return hidden


# ---------------------------------------------------------------- checking


@dataclass
class CheckResult:
    """How closely the exported model reproduced torch's logits."""

    images: int
    source: str  # where the images came from
    max_abs_diff: float
    worst: float  # max over logits of |diff| / (ATOL + RTOL * |torch|): at most 1 to pass

    @property
    def ok(self) -> bool:
        return self.worst <= 1.0

    def line(self, backend: str) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (f"check: {self.images} {self.source}, as one batch and one by one: max |{backend} - torch| = "
                f"{self.max_abs_diff:.1e} (tolerance {ATOL:.0e} + {RTOL:.0e} x |logit|): {verdict}")


def real_images(run, n: int = CHECK_IMAGES, paths: Sequence[str] | None = None) -> tuple[torch.Tensor, str]:
    """(normalized batch, description): the given image files, else n test images of the run's dataset."""
    if paths:
        return torch.cat([run.pipeline.load(p) for p in paths]), f"given image{'s' if len(paths) > 1 else ''}"
    from cnnlab.data import get_dataset

    cfg = run.config
    name = cfg["dataset"]
    try:
        data = get_dataset(name, "test", cfg.get("data_dir"), image_size=tuple(run.input_size[1:]))
    except CnnlabError as exc:
        raise CnnlabError(f"cannot read {name} test images to check the export ({exc}); give images with "
                          f"--check-images FILE..., or skip the check with --no-check") from None
    idx = torch.linspace(0, len(data) - 1, min(n, len(data))).round().long().unique()  # spread over the split
    pipe = dataclasses.replace(run.pipeline, source_channels=data.info.channels)
    return pipe(take(data, idx)[0]), f"{name} test images"


def compare(reference: torch.Tensor, exported: torch.Tensor) -> tuple[float, float]:
    """(max |difference|, max of |difference| / tolerance) over all logits."""
    if exported.shape != reference.shape:
        raise ExportCheckError(f"the exported model returns shape {tuple(exported.shape)}, torch "
                               f"{tuple(reference.shape)}")
    diff = (exported.float() - reference.float()).abs()
    return diff.max().item(), (diff / (ATOL + RTOL * reference.float().abs())).max().item()


def check_export(predictor, run, images: torch.Tensor, source: str) -> CheckResult:
    """Run `images` through torch and through the exported model, as a batch and one image at a time."""
    reference = run.logits(images)
    single = torch.cat([predictor.logits(images[i : i + 1]) for i in range(len(images))])
    (d1, w1), (d2, w2) = compare(reference, predictor.logits(images)), compare(reference, single)
    return CheckResult(len(images), source, max(d1, d2), max(w1, w2))


# ---------------------------------------------------------------- the command


@dataclass
class ExportResult:
    """What `export_run` wrote and how it checked."""

    path: Path
    format: str
    exporter: str  # "dynamo", "legacy" (ONNX) or "trace+freeze" (TorchScript)
    opset: int | None
    seconds: float
    bytes: int
    meta: ExportMetadata
    check: CheckResult | None = None
    notes: list[str] = field(default_factory=list)


def resolve_format(fmt: str | None, out: str | Path | None) -> str:
    """The format asked for, else the one --out's suffix names, else ONNX."""
    if fmt is None:
        fmt = "torchscript" if out is not None and Path(out).suffix in (".torchscript", ".pt", ".ts") else "onnx"
    if fmt not in FORMATS:
        raise CnnlabError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and out is not None and Path(out).suffix.lower() != ".onnx":
        raise CnnlabError(f"an ONNX export must end in .onnx (that is how `cnnlab predict` recognizes it): {out}")
    return fmt


def export_run(run, format: str | None = None, out: str | Path | None = None, opset: int | None = None,
               check: bool = True, check_images: Sequence[str] | None = None, exporter: str = "auto") -> ExportResult:
    """Export a run's best model (dynamic batch, metadata embedded), checked against torch unless check=False.

    The file appears atomically and only once the check passed: a failed export or check leaves any previous
    file in place.
    """
    from cnnlab.apps.export.onnx_predictor import OnnxPredictor, TorchScriptPredictor
    from cnnlab.training.run import Run, load_run

    run = run if isinstance(run, Run) else load_run(run)
    fmt = resolve_format(format, out)
    if opset is not None and fmt != "onnx":
        raise CnnlabError("--opset applies to ONNX exports only")
    path = Path(out) if out is not None else run.path / f"model{SUFFIXES[fmt]}"
    meta = ExportMetadata.from_run(run)
    model = LogitsOnly(run.model).eval()
    example = example_input(run.input_size).to(next(model.parameters()).device)
    images, source = real_images(run, paths=check_images) if check else (None, "")
    t0 = time.perf_counter()
    result = ExportResult(path, fmt, "trace+freeze", None, 0.0, 0, meta)
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            proto, result.exporter, result.notes = onnx_model(model, example, opset, exporter)
            result.opset = opset_of(proto)
            write_onnx(proto, meta, tmp)
        elif write_torchscript(model, example, meta, tmp):
            result.notes.append(f"TorchScript is deprecated in torch {torch.__version__} (torch.jit warns "
                                "on every call); --format onnx is the maintained path")
        result.seconds = time.perf_counter() - t0
        result.bytes = tmp.stat().st_size
        if check:
            try:
                exported = (OnnxPredictor(tmp, providers=["CPUExecutionProvider"]) if fmt == "onnx"
                            else TorchScriptPredictor(tmp))
            except CnnlabError as exc:  # name the file the user asked for, not the temporary one
                raise ExportCheckError(f"the exported model cannot be loaded back: {str(exc).replace(str(tmp), 'it')}; "
                                       f"{path} was not written") from None
            result.check = check_export(exported, run, images, source)
            if not result.check.ok:
                backend = "onnxruntime" if fmt == "onnx" else "torchscript"
                raise ExportCheckError(
                    f"the exported model does not match torch: {result.check.line(backend)[7:]}; {path} was not "
                    f"written" + ("" if fmt != "onnx" or result.exporter == "legacy" else
                                  "; try --exporter legacy") + ", or write it anyway with --no-check")
    return result
