"""The TFLite builtin-op table of the writer: code, options and version for each IR op type.

Versions follow TensorFlow's ``tensorflow/lite/tools/versioning/op_version.cc`` for the tensor types
we write (int8 CONV_2D 3, DEPTHWISE_CONV_2D 3, FULLY_CONNECTED 4 / 5 with keep_num_dims / 6 with two
inputs, MUL 3 when in1_scale * in2_scale / out_scale >= 1, PAD 4 above rank 4, ...; int16x8 CONV_2D 8
and FULLY_CONNECTED 11 with ``quantized_bias_type``, int16 pools/LOGISTIC/TANH/SOFTMAX/MEAN/PAD/
CONCATENATION 3, ADD 3 (general scales), MUL 4, QUANTIZE to int16 2, DEQUANTIZE from int16 3;
INT4 weights: CONV_2D 7, DEPTHWISE_CONV_2D 7, FULLY_CONNECTED 10); codes and enum values come from
the schema (``schema.fbs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyprec.ir.graph import DType, Graph, Op
from tinyprec.ir.ops import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    ElementwiseOptions,
    FullyConnectedOptions,
    LeakyReluOptions,
    MeanOptions,
    OpType,
    Padding,
    PoolOptions,
    ReshapeOptions,
    SoftmaxOptions,
    StridedSliceOptions,
)
from tinyprec.ir.ops import BatchMatMulOptions, DepthToSpaceOptions, ResizeOptions, TransposeConvOptions

# TFLite schema enum values (schema.fbs); kept here so importing this module stays light.
TENSOR_TYPE: dict[DType, int] = {
    DType.FLOAT32: 0, DType.INT32: 2, DType.UINT8: 3, DType.INT64: 4, DType.INT16: 7, DType.INT8: 9,
    DType.INT4: 17,
}
PADDING_CODE: dict[Padding, int] = {Padding.SAME: 0, Padding.VALID: 1}
ACTIVATION_CODE: dict[Activation, int] = {
    Activation.NONE: 0, Activation.RELU: 1, Activation.RELU_N1_TO_1: 2, Activation.RELU6: 3,
}


def _dtype(graph: Graph, name: str | None) -> DType | None:
    return None if name is None else graph.tensors[name].dtype


# --- op versions: the rules of TensorFlow's op_version.cc for the types we write ---------------

def _v_by_type(int8: int, int16: int) -> Callable[[Op, Graph], int]:
    """Version ``int8`` for int8 input, ``int16`` for int16 input, else 1."""

    def version(op: Op, g: Graph) -> int:
        t = _dtype(g, op.inputs[0])
        return int8 if t is DType.INT8 else int16 if t is DType.INT16 else 1

    return version


_v_int8_2 = _v_by_type(2, 3)
_v_int8_3 = _v_by_type(3, 1)


def _v_conv(op: Op, g: Graph) -> int:
    x, w = _dtype(g, op.inputs[0]), _dtype(g, op.inputs[1])
    if x is DType.INT16 and w is DType.INT8:
        return 8  # quantized_bias_type is set (int64)
    if x is DType.INT8:
        return 7 if w is DType.INT4 else 3
    return 1


def _v_depthwise(op: Op, g: Graph) -> int:
    x, w = _dtype(g, op.inputs[0]), _dtype(g, op.inputs[1])
    if x is DType.INT8:
        return 7 if w is DType.INT4 else 3
    opts = op.options
    assert isinstance(opts, DepthwiseConv2DOptions)
    return 2 if (opts.dilation_h, opts.dilation_w) != (1, 1) else 1


def _v_fully_connected(op: Op, g: Graph) -> int:
    opts = op.options
    assert isinstance(opts, FullyConnectedOptions)
    x, w = _dtype(g, op.inputs[0]), _dtype(g, op.inputs[1])
    if x is DType.INT16 and w is DType.INT8:
        return 11  # quantized_bias_type is set (int64)
    if len(op.inputs) == 2:
        return 6
    if opts.keep_num_dims:
        return 5
    if x is DType.INT8:
        return 10 if w is DType.INT4 else 4
    return 1


def _v_add(op: Op, g: Graph) -> int:
    # int16 with general (non power-of-two) scales: pot_scale_int16 = false is written.
    return {DType.INT8: 2, DType.INT16: 3}.get(_dtype(g, op.inputs[0]), 1)  # type: ignore[arg-type]


def _v_mul(op: Op, g: Graph) -> int:
    a, b, y = (g.tensors[n] for n in (op.inputs[0], op.inputs[1], op.outputs[0]))  # type: ignore[index]
    if a.dtype is DType.INT16:
        return 4
    if a.qparams is not None and b.qparams is not None and y.qparams is not None:
        s1, s2, so = (float(t.qparams.scale[0]) for t in (a, b, y))  # type: ignore[union-attr]
        if s1 and s2 and so and s1 * s2 / so >= 1.0:
            return 3
    return 2 if a.dtype is DType.INT8 else 1


def _v_pad(op: Op, g: Graph) -> int:
    if len(g.tensors[op.inputs[0]].shape) > 4:  # type: ignore[index]
        return 4
    return _v_int8_2(op, g)


def _v_dequantize(op: Op, g: Graph) -> int:
    x = g.tensors[op.inputs[0]]  # type: ignore[index]
    if x.dtype is DType.INT4:
        return 6
    if x.dtype is DType.INT8:
        return 5 if x.qparams is not None and x.qparams.scale.size > 1 else 2
    return 3 if x.dtype is DType.INT16 else 1


def _v_quantize(op: Op, g: Graph) -> int:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]  # type: ignore[index]
    if DType.INT4 in (x.dtype, y.dtype):
        return 4
    if y.qparams is not None and y.qparams.scale.size > 1:
        return 3
    return 2 if y.dtype is DType.INT16 else 1


def _v_one(op: Op, g: Graph) -> int:
    return 1


def finish_options(options: Any, op: Op, g: Graph) -> Any:
    """Set the option fields that depend on tensor types (the per-op writers see only the options).

    int16 inputs: ``quantized_bias_type`` = INT64 on CONV_2D / FULLY_CONNECTED (TF Lite picks its
    int16 bias path from it; unset, a bias-less int16x8 TFLM kernel accumulates in int32), and
    ``pot_scale_int16`` = false on ADD and SUB (the schema's default true selects TF Lite's power-of-two kernel).
    """
    if options is None or _dtype(g, op.inputs[0]) is not DType.INT16:
        return options
    if hasattr(options, "quantizedBiasType"):
        options.quantizedBiasType = TENSOR_TYPE[DType.INT64]
    if hasattr(options, "potScaleInt16"):
        options.potScaleInt16 = False
    return options


# --- builtin options -------------------------------------------------------------------------

def _o_conv(s: Any, o: Conv2DOptions, op: Op) -> Any:
    return s.Conv2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        fusedActivationFunction=ACTIVATION_CODE[o.activation],
        dilationWFactor=o.dilation_w, dilationHFactor=o.dilation_h
    )


def _o_depthwise(s: Any, o: DepthwiseConv2DOptions, op: Op) -> Any:
    return s.DepthwiseConv2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        depthMultiplier=o.depth_multiplier, fusedActivationFunction=ACTIVATION_CODE[o.activation],
        dilationWFactor=o.dilation_w, dilationHFactor=o.dilation_h,
    )


def _o_fc(s: Any, o: FullyConnectedOptions, op: Op) -> Any:
    return s.FullyConnectedOptionsT(
        fusedActivationFunction=ACTIVATION_CODE[o.activation], keepNumDims=o.keep_num_dims
    )


def _o_add(s: Any, o: ElementwiseOptions, op: Op) -> Any:
    return s.AddOptionsT(fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_mul(s: Any, o: ElementwiseOptions, op: Op) -> Any:
    return s.MulOptionsT(fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_pool(s: Any, o: PoolOptions, op: Op) -> Any:
    return s.Pool2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        filterWidth=o.filter_w, filterHeight=o.filter_h,
        fusedActivationFunction=ACTIVATION_CODE[o.activation],
    )


def _o_mean(s: Any, o: MeanOptions, op: Op) -> Any:
    return s.ReducerOptionsT(keepDims=o.keep_dims)


def _o_reshape(s: Any, o: ReshapeOptions, op: Op) -> Any:
    # The shape travels as the second input when the IR has it; the options are the fallback.
    if len(op.inputs) >= 2 and op.inputs[1] is not None:
        return None
    return s.ReshapeOptionsT(newShape=[int(d) for d in o.new_shape])


def _o_concat(s: Any, o: ConcatenationOptions, op: Op) -> Any:
    return s.ConcatenationOptionsT(axis=o.axis, fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_softmax(s: Any, o: SoftmaxOptions, op: Op) -> Any:
    return s.SoftmaxOptionsT(beta=float(o.beta))


def _o_sub(s: Any, o: ElementwiseOptions, op: Op) -> Any:
    return s.SubOptionsT(fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_leaky_relu(s: Any, o: LeakyReluOptions, op: Op) -> Any:
    opts = s.LeakyReluOptionsT()
    opts.alpha = float(o.alpha)
    return opts


def _o_strided_slice(s: Any, o: StridedSliceOptions, op: Op) -> Any:
    opts = s.StridedSliceOptionsT()
    opts.beginMask, opts.endMask, opts.shrinkAxisMask = o.begin_mask, o.end_mask, o.shrink_axis_mask
    return opts


def _o_resize(kind: str) -> Callable[[Any, ResizeOptions, Op], Any]:
    def options(s: Any, o: ResizeOptions, op: Op) -> Any:
        opts = getattr(s, kind + "T")()
        opts.alignCorners, opts.halfPixelCenters = bool(o.align_corners), bool(o.half_pixel_centers)
        return opts

    return options


def _v_resize(op: Op, g: Graph) -> int:
    """op_version.cc: 3 with align_corners (nearest only) or half_pixel_centers, else 2 for int8."""
    o = op.options
    flags = o.half_pixel_centers or (op.type is OpType.RESIZE_NEAREST_NEIGHBOR and o.align_corners)  # type: ignore[union-attr]
    return 3 if flags else 2 if _dtype(g, op.inputs[0]) is DType.INT8 else 1


def _o_transpose_conv(s: Any, o: TransposeConvOptions, op: Op) -> Any:
    return s.TransposeConvOptionsT(padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
                                   fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _v_transpose_conv(op: Op, g: Graph) -> int:
    """op_version.cc: 4 with a fused activation, 3 with a bias, 2 for int8."""
    if op.options.activation is not Activation.NONE:  # type: ignore[union-attr]
        return 4
    if len(op.inputs) > 3 and op.inputs[3] is not None:
        return 3
    return 2 if _dtype(g, op.inputs[1]) is DType.INT8 else 1


def _o_depth_to_space(s: Any, o: DepthToSpaceOptions, op: Op) -> Any:
    return s.DepthToSpaceOptionsT(blockSize=o.block_size)


def _o_batch_matmul(s: Any, o: BatchMatMulOptions, op: Op) -> Any:
    return s.BatchMatMulOptionsT(adjX=bool(o.adj_x), adjY=bool(o.adj_y), asymmetricQuantizeInputs=False)


def _o_none(s: Any, o: object, op: Op) -> Any:
    return None


@dataclass(frozen=True)
class _OpSpec:
    """How one IR op type is written: builtin code, options (type name in BuiltinOptions), version."""

    code: int
    options_kind: str
    options: Callable[[Any, Any, Op], Any]
    version: Callable[[Op, Graph], int]


# BuiltinOperator codes from schema.fbs.
OP_TABLE: dict[OpType, _OpSpec] = {
    OpType.CONV_2D: _OpSpec(3, "Conv2DOptions", _o_conv, _v_conv),
    OpType.DEPTHWISE_CONV_2D: _OpSpec(4, "DepthwiseConv2DOptions", _o_depthwise, _v_depthwise),
    OpType.FULLY_CONNECTED: _OpSpec(9, "FullyConnectedOptions", _o_fc, _v_fully_connected),
    OpType.ADD: _OpSpec(0, "AddOptions", _o_add, _v_add),
    OpType.MUL: _OpSpec(18, "MulOptions", _o_mul, _v_mul),
    OpType.AVERAGE_POOL_2D: _OpSpec(1, "Pool2DOptions", _o_pool, _v_int8_2),
    OpType.MAX_POOL_2D: _OpSpec(17, "Pool2DOptions", _o_pool, _v_int8_2),
    OpType.MEAN: _OpSpec(40, "ReducerOptions", _o_mean, _v_int8_2),
    OpType.RESHAPE: _OpSpec(22, "ReshapeOptions", _o_reshape, _v_one),
    OpType.CONCATENATION: _OpSpec(2, "ConcatenationOptions", _o_concat, _v_int8_2),
    OpType.PAD: _OpSpec(34, "NONE", _o_none, _v_pad),
    OpType.SOFTMAX: _OpSpec(25, "SoftmaxOptions", _o_softmax, _v_int8_2),
    OpType.LOGISTIC: _OpSpec(14, "NONE", _o_none, _v_int8_2),
    OpType.TANH: _OpSpec(28, "NONE", _o_none, _v_int8_2),
    OpType.QUANTIZE: _OpSpec(114, "NONE", _o_none, _v_quantize),
    OpType.DEQUANTIZE: _OpSpec(6, "NONE", _o_none, _v_dequantize),
    # issue 11 (int8 versions as op_version.cc: HARD_SWISH 1, LEAKY_RELU 2, SUB 2, MAXIMUM/MINIMUM 2, ABS 2, ...)
    OpType.HARD_SWISH: _OpSpec(117, "NONE", _o_none, _v_one),
    OpType.LEAKY_RELU: _OpSpec(98, "LeakyReluOptions", _o_leaky_relu, _v_int8_2),
    OpType.SUB: _OpSpec(41, "SubOptions", _o_sub, _v_by_type(2, 5)),  # int16: pot_scale_int16 = false
    OpType.MAXIMUM: _OpSpec(55, "NONE", _o_none, _v_by_type(2, 4)),
    OpType.MINIMUM: _OpSpec(57, "NONE", _o_none, _v_by_type(2, 4)),
    OpType.ABS: _OpSpec(101, "NONE", _o_none, _v_int8_2),
    OpType.TRANSPOSE: _OpSpec(39, "NONE", _o_none, _v_by_type(2, 5)),
    OpType.STRIDED_SLICE: _OpSpec(45, "StridedSliceOptions", _o_strided_slice, _v_by_type(2, 1)),  # int16: 1
    OpType.PRELU: _OpSpec(54, "NONE", _o_none, _v_one),  # TF Lite registers PRELU version 1 only
    OpType.RESIZE_NEAREST_NEIGHBOR: _OpSpec(97, "ResizeNearestNeighborOptions",
                                            _o_resize("ResizeNearestNeighborOptions"), _v_resize),
    OpType.RESIZE_BILINEAR: _OpSpec(23, "ResizeBilinearOptions", _o_resize("ResizeBilinearOptions"), _v_resize),
    OpType.TRANSPOSE_CONV: _OpSpec(67, "TransposeConvOptions", _o_transpose_conv, _v_transpose_conv),
    OpType.DEPTH_TO_SPACE: _OpSpec(5, "DepthToSpaceOptions", _o_depth_to_space, _v_int8_2),
    OpType.BATCH_MATMUL: _OpSpec(126, "BatchMatMulOptions", _o_batch_matmul, _v_int8_2),
    OpType.ELU: _OpSpec(111, "NONE", _o_none, _v_one),  # TF Lite's reference resolver registers version 1 only
    OpType.REDUCE_MAX: _OpSpec(82, "ReducerOptions", _o_mean, _v_int8_2),
    OpType.RSQRT: _OpSpec(76, "NONE", _o_none, _v_int8_2),  # op_version.cc: int8 RSQRT is version 2
}
