"""The math of convolution and pooling as small functions, each checked against torch.nn.functional."""

from cnnlab.conv.explain import CorrStep, explain_corr2d
from cnnlab.conv.learn import LearnedKernel, learn_kernel
from cnnlab.conv.ops import conv2d, corr2d, im2col, pad2d, pool2d
from cnnlab.conv.receptive import ReceptiveField, explain_receptive_fields, model_layers, receptive_fields
from cnnlab.conv.sizes import (
    FORMULA,
    Layer,
    explain_output_size,
    explain_output_sizes,
    output_size,
    output_sizes,
    parse_layer,
)

__all__ = [
    "FORMULA",
    "CorrStep",
    "Layer",
    "LearnedKernel",
    "ReceptiveField",
    "conv2d",
    "corr2d",
    "explain_corr2d",
    "explain_output_size",
    "explain_output_sizes",
    "explain_receptive_fields",
    "im2col",
    "learn_kernel",
    "model_layers",
    "output_size",
    "output_sizes",
    "pad2d",
    "parse_layer",
    "pool2d",
    "receptive_fields",
]
