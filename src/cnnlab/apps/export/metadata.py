"""What prediction needs besides the weights, stored inside an exported model: classes, input size, pipeline."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from cnnlab.data.pipeline import Pipeline
from cnnlab.errors import CnnlabError
from cnnlab.training.schema import ModelSpecSchema, PipelineSchema, first_problem

KEY = "cnnlab"  # ONNX metadata_props key; TorchScript extra file is f"{KEY}.json"
FORMAT = "cnnlab.export"  # the format's name inside exported files: never changes with the code
VERSION = 1


class ExportSchema(BaseModel):
    """What an exported model's metadata must hold: it comes with a file from elsewhere."""

    classes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=2, max_length=100_000)
    input_size: tuple[Literal[1, 3], Annotated[int, Field(gt=0, le=100_000)], Annotated[int, Field(gt=0, le=100_000)]]
    pipeline: PipelineSchema
    outputs_are_probs: bool
    single_logit: bool
    model: ModelSpecSchema
    dataset: str | None = None
    source: str | None = None
    torch_version: str | None = None


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
        if not isinstance(d.get("version", 0), int) or d.get("version", 0) > VERSION:
            raise CnnlabError(f"{where} was exported by a newer cnnlab (format {d.get('version')}); upgrade cnnlab")
        try:
            m = ExportSchema.model_validate(d)
        except ValidationError as exc:
            raise CnnlabError(f"{where}: unusable cnnlab metadata: {first_problem(exc)}") from None
        return cls(classes=tuple(m.classes), input_size=tuple(m.input_size), pipeline=dict(d["pipeline"]),
                   outputs_are_probs=m.outputs_are_probs, single_logit=m.single_logit, model=dict(d["model"]),
                   dataset=m.dataset, source=m.source, torch_version=m.torch_version)

    def build_pipeline(self) -> Pipeline:
        return Pipeline.from_dict(self.pipeline)
