"""The op vocabulary of the IR and the typed options of each op.

Ops follow TFLite builtin semantics (NHWC activations, OHWI conv filters, 1HWO depthwise filters),
so the TFLite writer, the reader and the emulator are each a table keyed by :class:`OpType`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OpType(enum.Enum):
    CONV_2D = "CONV_2D"
    DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
    FULLY_CONNECTED = "FULLY_CONNECTED"
    ADD = "ADD"
    MUL = "MUL"
    AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
    MAX_POOL_2D = "MAX_POOL_2D"
    MEAN = "MEAN"
    RESHAPE = "RESHAPE"
    CONCATENATION = "CONCATENATION"
    PAD = "PAD"
    SOFTMAX = "SOFTMAX"
    LOGISTIC = "LOGISTIC"
    TANH = "TANH"
    QUANTIZE = "QUANTIZE"
    DEQUANTIZE = "DEQUANTIZE"
    # issue 11: activations and elementwise ops TFLM runs natively
    HARD_SWISH = "HARD_SWISH"
    LEAKY_RELU = "LEAKY_RELU"
    SUB = "SUB"
    MAXIMUM = "MAXIMUM"
    MINIMUM = "MINIMUM"
    ABS = "ABS"
    TRANSPOSE = "TRANSPOSE"
    STRIDED_SLICE = "STRIDED_SLICE"
    PRELU = "PRELU"
    # issue 11: shape / upsampling ops
    RESIZE_NEAREST_NEIGHBOR = "RESIZE_NEAREST_NEIGHBOR"
    RESIZE_BILINEAR = "RESIZE_BILINEAR"
    TRANSPOSE_CONV = "TRANSPOSE_CONV"
    DEPTH_TO_SPACE = "DEPTH_TO_SPACE"
    BATCH_MATMUL = "BATCH_MATMUL"
    ELU = "ELU"  # issue 11 (ops-act): int8 table of exp(x) - 1 for x < 0
    REDUCE_MAX = "REDUCE_MAX"  # issue 11 (ops-act): max over axes, input and output share qparams
    RSQRT = "RSQRT"  # issue 11 (LayerNorm): 1/sqrt(x), int8, input >= its zero point


class Padding(enum.Enum):
    SAME = "SAME"
    VALID = "VALID"


class Activation(enum.Enum):
    NONE = "NONE"
    RELU = "RELU"
    RELU6 = "RELU6"
    RELU_N1_TO_1 = "RELU_N1_TO_1"


@dataclass(frozen=True)
class Conv2DOptions:
    """CONV_2D: inputs (x, filter OHWI int8, bias int32 or absent)."""

    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.VALID
    dilation_h: int = 1
    dilation_w: int = 1
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    """DEPTHWISE_CONV_2D: inputs (x, filter 1HW(C*multiplier) int8, bias int32 or absent)."""

    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.VALID
    depth_multiplier: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class FullyConnectedOptions:
    """FULLY_CONNECTED: inputs (x, weights [out, in] int8, bias int32 or absent)."""

    activation: Activation = Activation.NONE
    keep_num_dims: bool = False


@dataclass(frozen=True)
class PoolOptions:
    """AVERAGE_POOL_2D / MAX_POOL_2D."""

    filter_h: int
    filter_w: int
    stride_h: int = 1
    stride_w: int = 1
    padding: Padding = Padding.VALID
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ElementwiseOptions:
    """ADD / MUL (broadcasting as TFLite allows)."""

    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class MeanOptions:
    """MEAN: inputs (x, axes int32 constant)."""

    keep_dims: bool = False


@dataclass(frozen=True)
class ReshapeOptions:
    """RESHAPE: the new shape (also given as an int32 constant input)."""

    new_shape: tuple[int, ...]


@dataclass(frozen=True)
class ConcatenationOptions:
    axis: int
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class LeakyReluOptions:
    """LEAKY_RELU: y = x for x >= 0, alpha * x otherwise (alpha as float32 in the file)."""

    alpha: float = 0.2


@dataclass(frozen=True)
class StridedSliceOptions:
    """STRIDED_SLICE: inputs (x, begin, end, strides: int32 constants of x's rank); bit i of a mask is axis i."""

    begin_mask: int = 0
    end_mask: int = 0
    shrink_axis_mask: int = 0


@dataclass(frozen=True)
class ResizeOptions:
    """RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR: inputs (x NHWC, size: int32 constant (out_h, out_w));
    TFLM refuses both flags at once."""

    align_corners: bool = False
    half_pixel_centers: bool = False


@dataclass(frozen=True)
class TransposeConvOptions:
    """TRANSPOSE_CONV, TFLite's input order: (output_shape int32 [4] constant, filter OHWI int8 per-channel
    on axis 0, x, bias int32 or absent). The leading padding is TFLM's (SAME/VALID computed from the
    output size); there is no dilation."""

    padding: Padding = Padding.VALID
    stride_h: int = 1
    stride_w: int = 1
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class DepthToSpaceOptions:
    """DEPTH_TO_SPACE (TF's DCR order): out[h*b + i, w*b + j, c] = in[h, w, (i*b + j) * C + c]."""

    block_size: int = 2


@dataclass(frozen=True)
class BatchMatMulOptions:
    """BATCH_MATMUL: inputs (lhs, rhs) of rank 2-5, batch dims broadcast; out = lhs' @ rhs' over the last two
    axes (' transposes them when adj is set); int8 per-tensor, no fused activation."""

    adj_x: bool = False
    adj_y: bool = False


@dataclass(frozen=True)
class NoOptions:
    """PAD (inputs x, paddings int32 [rank, 2]), LOGISTIC, TANH, QUANTIZE, DEQUANTIZE, HARD_SWISH, MAXIMUM,
    MINIMUM, ABS."""


OpOptions = (
    Conv2DOptions
    | DepthwiseConv2DOptions
    | FullyConnectedOptions
    | PoolOptions
    | ElementwiseOptions
    | MeanOptions
    | ReshapeOptions
    | ConcatenationOptions
    | SoftmaxOptions
    | LeakyReluOptions
    | StridedSliceOptions
    | ResizeOptions
    | TransposeConvOptions
    | DepthToSpaceOptions
    | BatchMatMulOptions
    | NoOptions
)

OPTIONS_TYPE: dict[OpType, type] = {
    OpType.CONV_2D: Conv2DOptions,
    OpType.DEPTHWISE_CONV_2D: DepthwiseConv2DOptions,
    OpType.FULLY_CONNECTED: FullyConnectedOptions,
    OpType.ADD: ElementwiseOptions,
    OpType.MUL: ElementwiseOptions,
    OpType.AVERAGE_POOL_2D: PoolOptions,
    OpType.MAX_POOL_2D: PoolOptions,
    OpType.MEAN: MeanOptions,
    OpType.RESHAPE: ReshapeOptions,
    OpType.CONCATENATION: ConcatenationOptions,
    OpType.PAD: NoOptions,
    OpType.SOFTMAX: SoftmaxOptions,
    OpType.LOGISTIC: NoOptions,
    OpType.TANH: NoOptions,
    OpType.QUANTIZE: NoOptions,
    OpType.DEQUANTIZE: NoOptions,
    OpType.HARD_SWISH: NoOptions,
    OpType.LEAKY_RELU: LeakyReluOptions,
    OpType.SUB: ElementwiseOptions,  # SUB as ADD: (x1, x2), fused activation
    OpType.MAXIMUM: NoOptions,
    OpType.MINIMUM: NoOptions,
    OpType.ABS: NoOptions,
    OpType.TRANSPOSE: NoOptions,  # inputs (x, perm int32 constant)
    OpType.STRIDED_SLICE: StridedSliceOptions,
    OpType.PRELU: NoOptions,  # inputs (x, alpha: int8 constant with its own qparams, broadcast over x)
    OpType.RESIZE_NEAREST_NEIGHBOR: ResizeOptions,
    OpType.RESIZE_BILINEAR: ResizeOptions,
    OpType.TRANSPOSE_CONV: TransposeConvOptions,
    OpType.DEPTH_TO_SPACE: DepthToSpaceOptions,
    OpType.BATCH_MATMUL: BatchMatMulOptions,
    OpType.ELU: NoOptions,  # alpha 1 (TFLite's ELU has no alpha)
    OpType.REDUCE_MAX: MeanOptions,  # inputs (x, axes int32 constant); TFLite's ReducerOptions (keep_dims)
    OpType.RSQRT: NoOptions,
}
