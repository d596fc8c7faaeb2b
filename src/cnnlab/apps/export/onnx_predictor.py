"""Predicting with exported models (ONNX Runtime, TorchScript) through the same surface as a `Run`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from cnnlab.apps.export.metadata import KEY, ExportMetadata
from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.models.onnx import default_providers, quiet_jit, require_onnx, session_options
from cnnlab.training.predictor import Predictor

TORCHSCRIPT_SUFFIX = ".torchscript"


class _ExportedPredictor(Predictor):
    """An exported model with its embedded metadata; subclasses supply `logits`, `Predictor` the rest."""

    def __init__(self, path: str | Path, meta: ExportMetadata):
        self.path = Path(path)
        self.meta = meta
        self.pipeline: Pipeline = meta.build_pipeline()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.meta.classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.meta.input_size

    @property
    def outputs_are_probs(self) -> bool:
        return self.meta.outputs_are_probs

    @property
    def dataset(self) -> str | None:
        return self.meta.dataset

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model={self.meta.model.get('name')!r})"


class OnnxPredictor(_ExportedPredictor):
    """An ONNX model written by `cnnlab export`, run by onnxruntime (CUDA if available, else CPU)."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None):
        ort = require_onnx()
        path = Path(path)
        if not path.is_file():
            raise CnnlabError(f"no ONNX model at {path}: export one with `cnnlab export RUN --format onnx`")
        try:
            session = ort.InferenceSession(str(path), session_options(threads),
                                           providers=list(providers or default_providers()))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CnnlabError(f"{path} is not a readable ONNX model ({first[:300]})") from None
        props = session.get_modelmeta().custom_metadata_map
        if KEY not in props:
            raise CnnlabError(f"{path} has no cnnlab metadata (class names, input size, normalization): "
                              f"export it with `cnnlab export RUN --format onnx`")
        super().__init__(path, ExportMetadata.from_json(props[KEY], str(path)))
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for a normalized (N, C, H, W) batch."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(out)


class TorchScriptPredictor(_ExportedPredictor):
    """A TorchScript model written by `cnnlab export --format torchscript`."""

    def __init__(self, path: str | Path, map_location: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise CnnlabError(f"no TorchScript model at {path}: export one with "
                              f"`cnnlab export RUN --format torchscript`")
        extra = {f"{KEY}.json": ""}
        try:
            with quiet_jit():
                module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
        except Exception as exc:
            raise CnnlabError(f"{path} is not a readable TorchScript model ({type(exc).__name__}: "
                              f"{str(exc).strip()[:300]})") from None
        if not extra[f"{KEY}.json"]:
            raise CnnlabError(f"{path} has no cnnlab metadata: export it with `cnnlab export RUN --format torchscript`")
        super().__init__(path, ExportMetadata.from_json(extra[f"{KEY}.json"], str(path)))
        self.module = module.eval()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs for a normalized (N, C, H, W) batch."""
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        return self.module(x.to(device, torch.float32)).float().cpu()


def load_predictor(path: str | Path, trust_code: bool = False):
    """A run (folder or checkpoint), an exported .onnx model, or (only with `trust_code`) an exported TorchScript
    model, all with the same `.predict(images, topk)` / `.predict_proba(images)` / `.classes`.

    TorchScript is code: a crafted file runs its own operations when it predicts. It is loaded only when the user
    says they trust its source, never because a file looks like one; ONNX is the format for models from elsewhere.
    """
    from cnnlab.training.checkpoint import is_torchscript_archive
    from cnnlab.training.run import load_run

    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return OnnxPredictor(p)
    if p.suffix == TORCHSCRIPT_SUFFIX or (p.is_file() and is_torchscript_archive(p)):
        if not trust_code:
            raise CnnlabError(f"{p} is a TorchScript model: loading it runs the code inside it. Only if you trust "
                              f"where it came from, add --trust-code (Python: trust_code=True); models from elsewhere "
                              f"are safe as ONNX (cnnlab export RUN --format onnx)")
        print(f"warning: loading the TorchScript model {p} runs its code (--trust-code)", file=sys.stderr)
        return TorchScriptPredictor(p)
    return load_run(p)
