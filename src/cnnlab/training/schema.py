"""What a run's files must hold, as schemas: a checkpoint from elsewhere with odd values is refused in one line
naming the file and the field, never trusted until something downstream breaks with a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnnlab.errors import CnnlabError

Positive = Annotated[int, Field(gt=0, le=1_000_000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


Unit = Annotated[float, Field(ge=0, le=1)]


class DomainSchema(BaseModel):
    """What the training images looked like (data/domain.py's Domain.to_dict())."""

    model_config = ConfigDict(extra="forbid")
    background: Literal["dark", "light"] | None = None
    aspect: Annotated[float, Field(gt=0, le=1000)] | None = None
    brightness: tuple[Unit, Unit] | None = None  # per-image mean pixel value: (mean, spread) over training images
    contrast: tuple[Unit, Unit] | None = None


class PipelineSchema(BaseModel):
    """How images become the model's input (data/pipeline.py's Pipeline.to_dict())."""

    model_config = ConfigDict(extra="forbid")
    channels: Literal[1, 3]
    size: tuple[Positive, Positive]
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=3)
    source_channels: Literal[1, 3]
    domain: DomainSchema | None = None  # absent in runs from before it was recorded


class ModelSpecSchema(BaseModel):
    """How the model was built (models' ModelSpec.to_dict())."""

    name: Name
    num_classes: Positive
    input_size: tuple[Literal[1, 3], Positive, Positive]
    kwargs: dict[str, Any] = {}


Seconds = Annotated[float, Field(ge=0, le=1e7)]


class BudgetSchema(BaseModel):
    """The --budget plan (training/budget.py's BudgetPlan.to_dict())."""

    model_config = ConfigDict(extra="forbid")
    budget_s: Seconds
    epochs: Positive
    total_steps: Annotated[int, Field(gt=0)]
    steps_per_epoch: Positive
    step_s: Seconds
    val_s: Seconds
    test_s: Seconds
    spent_s: Seconds
    revised_from: Annotated[int, Field(ge=0)] = 0


class ChangeSchema(BaseModel):
    """A change a callback made to the run after an epoch (training/plan.py's Plan.changes)."""

    model_config = ConfigDict(extra="forbid")
    epoch: Annotated[int, Field(ge=0)]
    by: Name
    settings: dict[str, Any]


class CheckpointSchema(BaseModel):
    """The metadata of a run's checkpoint (its tensors are checked by load_state_dict)."""

    model: ModelSpecSchema
    classes: list[Name] = Field(min_length=2, max_length=100_000)
    input_size: tuple[Literal[1, 3], Positive, Positive]
    pipeline: PipelineSchema
    single_logit: bool = False
    class_weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None
    config: dict[str, Any]
    epoch: Annotated[int, Field(ge=0)]
    step: Annotated[int, Field(ge=0)]
    status: str
    dataset: str | None = None
    budget: BudgetSchema | None = None
    stopped: Annotated[str, Field(max_length=1000)] | None = None  # why training stopped before its last epoch
    changes: list[ChangeSchema] | None = None  # absent in runs from before callbacks


def check_run_checkpoint(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """`ckpt` if its metadata fits the schema, else one clear error naming the file and the first bad field."""
    try:
        CheckpointSchema.model_validate(ckpt)
    except ValidationError as exc:
        raise CnnlabError(f"{path} is not a usable cnnlab checkpoint: {first_problem(exc)}") from None
    return ckpt


def first_problem(exc: ValidationError) -> str:
    """'field.sub: what is wrong' for the first error pydantic found (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "the file"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
