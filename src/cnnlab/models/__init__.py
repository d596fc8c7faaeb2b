"""The model zoo: a registry of architectures with their metadata."""

from cnnlab.models import backbones, classic, efficientnet_lite, modern  # noqa: F401  (importing registers the models)
from cnnlab.models._registry import (
    InputSize,
    ModelInfo,
    ModelSpec,
    UnknownModelError,
    count_parameters,
    get_model,
    get_model_info,
    list_models,
    parse_input_size,
    register_model,
    resolve_input_size,
    unregister_model,
)

__all__ = [
    "InputSize",
    "ModelInfo",
    "ModelSpec",
    "UnknownModelError",
    "count_parameters",
    "get_model",
    "get_model_info",
    "list_models",
    "parse_input_size",
    "register_model",
    "resolve_input_size",
    "unregister_model",
]
