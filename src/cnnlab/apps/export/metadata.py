"""What prediction needs besides the weights, stored inside an exported model: classes, input size, pipeline."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError

KEY = "cnnlab"  # ONNX metadata_props key; TorchScript extra file is f"{KEY}.json"
FORMAT = "cnnlab.apps.export"
VERSION = 1


@dataclass(frozen=True)
class ExportMetadata:
    """Everything `cnnlab predict` needs to use an exported model without its run folder."""

    classes: tuple[str, ...]
    input_size: tuple[int, int, int]
    pipeline: dict[str, Any]  # Pipeline.to_dict(): the exact conversion used in training
    outputs_are_probs: bool  # the model ends in a softmax (its outputs are already probabilities)
    single_logit: bool  # one output: sigmoid probability of the second class
    model: dict[str, Any]  # ModelSpec.to_dict(): name, num_classes, input_size, kwargs
    dataset: str | None = None
    source: str | None = None  # the run folder it was exported from
    torch_version: str | None = None

    @classmethod
    def from_run(cls, run) -> "ExportMetadata":
        """The metadata of a `cnnlab.training.Run`."""
        import torch

        ckpt = run.checkpoint
        return cls(
            classes=tuple(run.classes),
            input_size=tuple(run.input_size),
            pipeline=run.pipeline.to_dict(),
            outputs_are_probs=run.outputs_are_probs,
            single_logit=run.single_logit,
            model=run.spec.to_dict(),
            dataset=ckpt.get("dataset"),
            source=str(run.path),
            torch_version=torch.__version__,
        )

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "ExportMetadata":
        """Parse what `to_json` wrote; `where` names the file in error messages."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise CnnlabError(f"{where}: its cnnlab metadata is not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CnnlabError(f"{where}: its metadata is not cnnlab export metadata")
        if d.get("version", 0) > VERSION:
            raise CnnlabError(f"{where} was exported by a newer cnnlab (format {d['version']}); upgrade cnnlab")
        try:
            return cls(
                classes=tuple(d["classes"]),
                input_size=tuple(int(v) for v in d["input_size"]),
                pipeline=dict(d["pipeline"]),
                outputs_are_probs=bool(d["outputs_are_probs"]),
                single_logit=bool(d["single_logit"]),
                model=dict(d["model"]),
                dataset=d.get("dataset"),
                source=d.get("source"),
                torch_version=d.get("torch_version"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CnnlabError(f"{where}: incomplete cnnlab metadata ({type(exc).__name__}: {exc})") from None

    def build_pipeline(self) -> Pipeline:
        return Pipeline.from_dict(self.pipeline)
