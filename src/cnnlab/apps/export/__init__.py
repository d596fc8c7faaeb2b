"""Shipping a trained model: ONNX / TorchScript export with embedded metadata, and predictors for the exports."""

from cnnlab.apps.export.exporter import (
    FORMATS,
    CheckResult,
    ExportCheckError,
    ExportResult,
    export_run,
)
from cnnlab.apps.export.metadata import ExportMetadata
from cnnlab.apps.export.onnx_predictor import OnnxPredictor, TorchScriptPredictor, load_predictor
from cnnlab.models.onnx import EXPORTERS

__all__ = [
    "EXPORTERS",
    "FORMATS",
    "CheckResult",
    "ExportCheckError",
    "ExportMetadata",
    "ExportResult",
    "OnnxPredictor",
    "TorchScriptPredictor",
    "export_run",
    "load_predictor",
]
