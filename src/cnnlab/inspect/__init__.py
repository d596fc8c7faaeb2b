"""Look inside a network: layer summaries, captured activations, attributions."""

from cnnlab.inspect.features import FeatureExtractor, Features, select_layers
from cnnlab.inspect.gradcam import GradCAM, find_target_layer
from cnnlab.inspect.layers import get_layer, layer_kind
from cnnlab.inspect.saliency import saliency
from cnnlab.inspect.summary import LayerRow, ShapeMismatchError, Summary, summary

__all__ = [
    "FeatureExtractor",
    "Features",
    "GradCAM",
    "LayerRow",
    "ShapeMismatchError",
    "Summary",
    "find_target_layer",
    "get_layer",
    "layer_kind",
    "saliency",
    "select_layers",
    "summary",
]
