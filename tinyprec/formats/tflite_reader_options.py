"""Per-op builtin options of a .tflite file -> the IR's typed options (used by the reader).

Each reader gets (reader, the schema options table or None, place, inputs, tensors, outputs) and
validates what it reads: unknown enum codes, non-positive strides, out-of-range axes are
:class:`~tinyprec.errors.ModelFormatError` through ``r.fail``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tinyprec.ir import (
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
    Tensor,
)
from tinyprec.ir.ops import LeakyReluOptions, OpOptions, StridedSliceOptions

_ACTIVATIONS = {0: Activation.NONE, 1: Activation.RELU, 2: Activation.RELU_N1_TO_1, 3: Activation.RELU6}
_PADDINGS = {0: Padding.SAME, 1: Padding.VALID}


def _activation(r: Any, code: int, place: str) -> Activation:
    if code not in _ACTIVATIONS:
        raise r.fail(place, f"fused activation #{code} is not supported (NONE, RELU, RELU_N1_TO_1, RELU6 are)")
    return _ACTIVATIONS[code]


def _padding(r: Any, code: int, place: str) -> Padding:
    if code not in _PADDINGS:
        raise r.fail(place, f"padding #{code} is not SAME or VALID")
    return _PADDINGS[code]


def _positive(r: Any, value: int, what: str, place: str) -> int:
    if not 1 <= value <= 1 << 16:
        raise r.fail(place, f"{what} {value} must be between 1 and 65536")
    return value


def _int32_accumulation(r: Any, o: Any, place: str, inputs: list[str | None], tensors: dict[str, Tensor]) -> None:
    """A bias-less int16 CONV_2D / FULLY_CONNECTED whose quantized_bias_type is INT32 accumulates in int32 on
    TFLM (an int64 bias, or none with another type, in int64); tinyprec's IR has the int64 form only."""
    x = tensors.get(inputs[0]) if inputs and inputs[0] is not None else None
    has_bias = len(inputs) > 2 and inputs[2] is not None
    if x is not None and x.dtype.value == "int16" and not has_bias and int(o.QuantizedBiasType()) == 2:
        raise r.fail(place, "an int16 op without bias declares quantized_bias_type INT32 (int32 accumulation), "
                            "which tinyprec does not emulate; give it an int64 bias")


def _conv(r: Any, o: Any, place: str, inputs: list[str | None], tensors: dict[str, Tensor], *_: Any) -> OpOptions:
    _int32_accumulation(r, o, place, inputs, tensors)
    return Conv2DOptions(stride_h=_positive(r, o.StrideH(), "stride_h", place),
                         stride_w=_positive(r, o.StrideW(), "stride_w", place),
                         padding=_padding(r, o.Padding(), place),
                         dilation_h=_positive(r, o.DilationHFactor(), "dilation_h", place),
                         dilation_w=_positive(r, o.DilationWFactor(), "dilation_w", place),
                         activation=_activation(r, o.FusedActivationFunction(), place))


def _depthwise(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    return DepthwiseConv2DOptions(stride_h=_positive(r, o.StrideH(), "stride_h", place),
                                  stride_w=_positive(r, o.StrideW(), "stride_w", place),
                                  padding=_padding(r, o.Padding(), place),
                                  depth_multiplier=int(o.DepthMultiplier()),
                                  dilation_h=_positive(r, o.DilationHFactor(), "dilation_h", place),
                                  dilation_w=_positive(r, o.DilationWFactor(), "dilation_w", place),
                                  activation=_activation(r, o.FusedActivationFunction(), place))


def _fully_connected(r: Any, o: Any, place: str, inputs: list[str | None], tensors: dict[str, Tensor],
                     *_: Any) -> OpOptions:
    _int32_accumulation(r, o, place, inputs, tensors)
    if int(o.WeightsFormat()) != 0:
        raise r.fail(place, "shuffled FULLY_CONNECTED weights are not supported; use the default format")
    return FullyConnectedOptions(activation=_activation(r, o.FusedActivationFunction(), place),
                                 keep_num_dims=bool(o.KeepNumDims()))


def _pool(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    return PoolOptions(filter_h=_positive(r, o.FilterHeight(), "filter_h", place),
                       filter_w=_positive(r, o.FilterWidth(), "filter_w", place),
                       stride_h=_positive(r, o.StrideH(), "stride_h", place),
                       stride_w=_positive(r, o.StrideW(), "stride_w", place),
                       padding=_padding(r, o.Padding(), place),
                       activation=_activation(r, o.FusedActivationFunction(), place))


def _elementwise(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    act = o.FusedActivationFunction() if o is not None else 0
    return ElementwiseOptions(activation=_activation(r, act, place))


def _mean(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    return MeanOptions(keep_dims=bool(o.KeepDims()) if o is not None else False)


def _reshape(r: Any, o: Any, place: str, inputs: list[str | None], tensors: dict[str, Tensor],
             outputs: list[str]) -> OpOptions:
    return ReshapeOptions(new_shape=tensors[outputs[0]].shape)


def _concat(r: Any, o: Any, place: str, inputs: list[str | None], tensors: dict[str, Tensor],
            outputs: list[str]) -> OpOptions:
    rank = len(tensors[outputs[0]].shape)
    axis = int(o.Axis())
    if not -rank <= axis < rank:
        raise r.fail(place, f"concatenation axis {axis} is out of range for rank {rank}")
    return ConcatenationOptions(axis=axis % rank, activation=_activation(r, o.FusedActivationFunction(), place))


def _softmax(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    beta = float(o.Beta()) if o is not None else 1.0
    if not math.isfinite(beta) or beta <= 0:
        raise r.fail(place, f"softmax beta {beta} must be positive and finite")
    return SoftmaxOptions(beta=beta)


def _leaky_relu(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    alpha = float(o.Alpha()) if o is not None else 0.0
    if not math.isfinite(alpha):
        raise r.fail(place, f"leaky relu alpha {alpha} is not finite")
    return LeakyReluOptions(alpha=alpha)


def _strided_slice(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    if o is None:
        return StridedSliceOptions()
    if o.EllipsisMask() or o.NewAxisMask() or o.Offset():
        raise r.fail(place, "strided slice with an ellipsis mask, new axis mask or offset is not supported")
    return StridedSliceOptions(int(o.BeginMask()), int(o.EndMask()), int(o.ShrinkAxisMask()))


def _resize(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    from tinyprec.ir.ops import ResizeOptions

    if o is None:
        return ResizeOptions()
    return ResizeOptions(bool(o.AlignCorners()), bool(o.HalfPixelCenters()))


def _transpose_conv(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    from tinyprec.ir.ops import TransposeConvOptions

    if o.QuantizedBiasType() not in (0, 2):  # unset or INT32
        raise r.fail(place, "a transpose conv bias other than int32 is not supported")
    return TransposeConvOptions(_padding(r, o.Padding(), place), _positive(r, o.StrideH(), "stride_h", place),
                                _positive(r, o.StrideW(), "stride_w", place),
                                _activation(r, o.FusedActivationFunction(), place))


def _depth_to_space(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    from tinyprec.ir.ops import DepthToSpaceOptions

    return DepthToSpaceOptions(_positive(r, o.BlockSize(), "block_size", place))


def _batch_matmul(r: Any, o: Any, place: str, *_: Any) -> OpOptions:
    from tinyprec.ir.ops import BatchMatMulOptions

    if o is None:
        return BatchMatMulOptions()
    if o.AsymmetricQuantizeInputs():
        raise r.fail(place, "hybrid BATCH_MATMUL (asymmetric_quantize_inputs) is not supported")
    return BatchMatMulOptions(bool(o.AdjX()), bool(o.AdjY()))


def _none(*_: Any) -> OpOptions:
    return NoOptions()


# OpType -> (schema options class name or None, reader, whether the options table may be absent).
OPTION_READERS: dict[OpType, tuple[str | None, Callable[..., OpOptions], bool]] = {
    OpType.CONV_2D: ("Conv2DOptions", _conv, False),
    OpType.DEPTHWISE_CONV_2D: ("DepthwiseConv2DOptions", _depthwise, False),
    OpType.FULLY_CONNECTED: ("FullyConnectedOptions", _fully_connected, False),
    OpType.AVERAGE_POOL_2D: ("Pool2DOptions", _pool, False),
    OpType.MAX_POOL_2D: ("Pool2DOptions", _pool, False),
    OpType.ADD: ("AddOptions", _elementwise, True),
    OpType.MUL: ("MulOptions", _elementwise, True),
    OpType.MEAN: ("ReducerOptions", _mean, True),
    OpType.RESHAPE: (None, _reshape, True),
    OpType.CONCATENATION: ("ConcatenationOptions", _concat, False),
    OpType.SOFTMAX: ("SoftmaxOptions", _softmax, True),
    OpType.PAD: (None, _none, True),
    OpType.LOGISTIC: (None, _none, True),
    OpType.TANH: (None, _none, True),
    OpType.QUANTIZE: (None, _none, True),
    OpType.DEQUANTIZE: (None, _none, True),
    OpType.HARD_SWISH: (None, _none, True),
    OpType.LEAKY_RELU: ("LeakyReluOptions", _leaky_relu, True),
    OpType.SUB: ("SubOptions", _elementwise, True),
    OpType.MAXIMUM: (None, _none, True),
    OpType.MINIMUM: (None, _none, True),
    OpType.ABS: (None, _none, True),
    OpType.TRANSPOSE: (None, _none, True),
    OpType.STRIDED_SLICE: ("StridedSliceOptions", _strided_slice, True),
    OpType.PRELU: (None, _none, True),
    OpType.RESIZE_NEAREST_NEIGHBOR: ("ResizeNearestNeighborOptions", _resize, True),
    OpType.RESIZE_BILINEAR: ("ResizeBilinearOptions", _resize, True),
    OpType.TRANSPOSE_CONV: ("TransposeConvOptions", _transpose_conv, False),
    OpType.DEPTH_TO_SPACE: ("DepthToSpaceOptions", _depth_to_space, False),
    OpType.BATCH_MATMUL: ("BatchMatMulOptions", _batch_matmul, True),
    OpType.ELU: (None, _none, True),
    OpType.REDUCE_MAX: ("ReducerOptions", _mean, True),
    OpType.RSQRT: (None, _none, True),
}
