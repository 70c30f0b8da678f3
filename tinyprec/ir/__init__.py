"""The quantized-graph IR shared by the writers, the emulator and validation (no torch here)."""

from tinyprec.ir.graph import INTEGER_KINDS, DType, Graph, Op, Tensor
from tinyprec.ir.ops import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    ElementwiseOptions,
    FullyConnectedOptions,
    MeanOptions,
    NoOptions,
    OpType,
    Padding,
    PoolOptions,
    ReshapeOptions,
    SoftmaxOptions,
)
from tinyprec.ir.qparams import QParams, quantize_multiplier

__all__ = [
    "INTEGER_KINDS", "Activation", "ConcatenationOptions", "Conv2DOptions", "DType", "DepthwiseConv2DOptions",
    "ElementwiseOptions", "FullyConnectedOptions", "Graph", "MeanOptions", "NoOptions", "Op",
    "OpType", "Padding", "PoolOptions", "QParams", "ReshapeOptions", "SoftmaxOptions", "Tensor",
    "quantize_multiplier",
]
