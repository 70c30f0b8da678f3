"""Per-op bit-exactness: one-op micro-models through the emulator and through TFLM, exact equality.

The micro-models come from tests/_micro.py (helper C's builders) plus variants here that reach the
corners: odd shapes, strides, SAME/VALID, dilation, depth multipliers, broadcasting, per-channel scales
near the extremes (multipliers above one and tiny ones), saturation, and sums too big for float32.
Each batch holds random int8 samples plus all -128 and all 127 samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests._micro import MICRO_MODELS, MicroBuilder, random_inputs, run_tflm
from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    ElementwiseOptions,
    FullyConnectedOptions,
    Graph,
    MeanOptions,
    NoOptions,
    OpType,
    Padding,
    PoolOptions,
    QParams,
    SoftmaxOptions,
    Tensor,
)


def _conv(rng: np.random.Generator, hw: tuple[int, int], cin: int, cout: int, k: tuple[int, int], stride: int,
          padding: Padding, dilation: int = 1, act: Activation = Activation.NONE, extreme: bool = False,
          heavy: bool = False) -> Graph:
    b = MicroBuilder(rng, "conv")
    x = b.input("x", (1, *hw, cin))
    w = b.weights("w", (cout, *k, cin), axis=0)
    if heavy:  # every weight at +-127: partial sums beyond 2**24 force the float64 path
        b.tensors[w].data = np.where(rng.random((cout, *k, cin)) < 0.9, 127, -127).astype(np.int8)
    if extreme:  # per-channel scales from 1e-6 to 10: multipliers far below and above one
        scales = np.geomspace(1e-6, 10.0, cout).astype(np.float32)
        b.tensors[w].qparams = QParams(scales, np.zeros(cout, np.int64), 0)
    bias = b.bias("b", x, w, cout, k[0] * k[1] * cin)
    eff = [(s - 1) * dilation + 1 for s in k]
    if padding is Padding.SAME:
        oh, ow = ((hw[0] + stride - 1) // stride, (hw[1] + stride - 1) // stride)
    else:
        oh, ow = ((hw[0] - eff[0]) // stride + 1, (hw[1] - eff[1]) // stride + 1)
    y = b.out_for_accumulator("y", (1, oh, ow, cout), x, w, k[0] * k[1] * cin)
    if extreme:
        b.tensors[y].qparams = QParams.per_tensor(0.05, 3)
    if heavy:
        b.tensors[y].qparams = QParams.per_tensor(float(b.tensors[y].qparams.scale[0]) * 12, 3)  # type: ignore[union-attr]
    b.op(OpType.CONV_2D, (x, w, bias), (y,), Conv2DOptions(stride, stride, padding, dilation, dilation, act))
    return b.graph([y])


def _depthwise(rng: np.random.Generator, hw: tuple[int, int], cin: int, mult: int, stride: int, padding: Padding,
               dilation: int = 1) -> Graph:
    b = MicroBuilder(rng, "depthwise")
    x = b.input("x", (1, *hw, cin))
    w = b.weights("w", (1, 3, 3, cin * mult), axis=3)
    bias = b.bias("b", x, w, cin * mult, 9)
    eff = 2 * dilation + 1
    if padding is Padding.SAME:
        oh, ow = ((hw[0] + stride - 1) // stride, (hw[1] + stride - 1) // stride)
    else:
        oh, ow = ((hw[0] - eff) // stride + 1, (hw[1] - eff) // stride + 1)
    y = b.out_for_accumulator("y", (1, oh, ow, cin * mult), x, w, 9)
    b.op(OpType.DEPTHWISE_CONV_2D, (x, w, bias), (y,),
         DepthwiseConv2DOptions(stride, stride, padding, mult, dilation, dilation, Activation.RELU6))
    return b.graph([y])


def _fc(rng: np.random.Generator, in_shape: tuple[int, ...], cout: int, per_channel: bool, keep: bool) -> Graph:
    b = MicroBuilder(rng, "fc")
    x = b.input("x", in_shape)
    depth = in_shape[-1]
    w = b.weights("w", (cout, depth), axis=0 if per_channel else None)
    bias = b.bias("b", x, w, cout, depth)
    out_shape = (*in_shape[:-1], cout) if keep else (int(np.prod(in_shape[:-1])), cout)
    y = b.out_for_accumulator("y", out_shape, x, w, depth)
    b.op(OpType.FULLY_CONNECTED, (x, w, bias), (y,), FullyConnectedOptions(Activation.RELU, keep))
    return b.graph([y])


def _binary(rng: np.random.Generator, op: OpType, s2: tuple[int, ...], act: Activation, ratio: float) -> Graph:
    b = MicroBuilder(rng, op.value.lower())
    x1 = b.input("x1", (1, 5, 3, 4), scale=0.02)
    x2 = b.input("x2", s2, scale=0.02 * ratio)
    scale = 0.02 * (1 + ratio) if op is OpType.ADD else 0.02 * 0.02 * ratio * 40
    y = b.act("y", (1, 5, 3, 4), scale, 7)
    b.op(op, (x1, x2), (y,), ElementwiseOptions(act))
    return b.graph([y])


def _pool(rng: np.random.Generator, op: OpType, hw: tuple[int, int], f: int, stride: int, padding: Padding,
          act: Activation = Activation.NONE) -> Graph:
    b = MicroBuilder(rng, op.value.lower())
    x = b.input("x", (1, *hw, 3))
    if padding is Padding.SAME:
        oh, ow = ((hw[0] + stride - 1) // stride, (hw[1] + stride - 1) // stride)
    else:
        oh, ow = ((hw[0] - f) // stride + 1, (hw[1] - f) // stride + 1)
    b.tensors["y"] = Tensor("y", (1, oh, ow, 3), DType.INT8, b.tensors[x].qparams)
    b.op(op, (x,), ("y",), PoolOptions(f, f, stride, stride, padding, act))
    return b.graph(["y"])


def _mean(rng: np.random.Generator, axes: list[int], keep: bool, out_ratio: float) -> Graph:
    b = MicroBuilder(rng, "mean")
    x = b.input("x", (1, 5, 7, 6))
    a = b.const("axes", np.array(axes, np.int32), DType.INT32)
    norm = sorted(i % 4 for i in axes)
    shape = tuple(1 if i in norm else d for i, d in enumerate((1, 5, 7, 6)) if keep or i not in norm)
    y = b.act("y", shape, float(b.tensors[x].qparams.scale[0]) * out_ratio, -9)  # type: ignore[union-attr]
    b.op(OpType.MEAN, (x, a), (y,), MeanOptions(keep))
    return b.graph([y])


def _fixed(rng: np.random.Generator, op: OpType, shape: tuple[int, ...], scale: float, zp: int) -> Graph:
    b = MicroBuilder(rng, op.value.lower())
    x = b.input("x", shape, scale=scale, zp=zp)
    out = (1 / 128, 0) if op is OpType.TANH else (1 / 256, -128)
    y = b.act("y", shape, *out)
    b.op(op, (x,), (y,), SoftmaxOptions(1.0) if op is OpType.SOFTMAX else NoOptions())
    return b.graph([y])


def _requantize(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "quantize")
    x = b.input("x", (1, 6, 5), scale=0.031, zp=12)
    y = b.act("y", (1, 6, 5), 0.017, -40)
    b.op(OpType.QUANTIZE, (x,), (y,), NoOptions())
    return b.graph([y])


def _concat(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "concatenation")
    x1 = b.input("x1", (1, 2, 3, 4), scale=0.05, zp=2)
    x2 = b.input("x2", (1, 5, 3, 4), scale=0.05, zp=2)
    y = b.act("y", (1, 7, 3, 4), 0.05, 2)
    b.op(OpType.CONCATENATION, (x1, x2), (y,), ConcatenationOptions(axis=1))
    return b.graph([y])


VARIANTS: dict[str, Callable[[np.random.Generator], Graph]] = {
    "conv_pointwise_odd": lambda r: _conv(r, (7, 5), 6, 5, (1, 1), 1, Padding.VALID),
    "conv_same_stride2_even": lambda r: _conv(r, (8, 6), 3, 4, (3, 3), 2, Padding.SAME, act=Activation.RELU6),
    "conv_same_stride3_5x4": lambda r: _conv(r, (11, 9), 2, 3, (5, 4), 3, Padding.SAME),
    "conv_dilated": lambda r: _conv(r, (9, 8), 3, 4, (3, 3), 1, Padding.SAME, dilation=2, act=Activation.RELU),
    "conv_valid_dilated": lambda r: _conv(r, (9, 8), 3, 2, (2, 3), 1, Padding.VALID, dilation=3),
    "conv_extreme_scales_saturating": lambda r: _conv(r, (6, 6), 4, 16, (3, 3), 1, Padding.SAME, extreme=True),
    "conv_float64_sums": lambda r: _conv(r, (4, 4), 300, 3, (3, 3), 1, Padding.SAME, heavy=True),
    "conv_relu_n1_to_1": lambda r: _conv(r, (5, 5), 3, 3, (3, 3), 1, Padding.VALID, act=Activation.RELU_N1_TO_1),
    "depthwise_mult1_stride2_same": lambda r: _depthwise(r, (9, 7), 5, 1, 2, Padding.SAME),
    "depthwise_mult3_valid": lambda r: _depthwise(r, (6, 7), 2, 3, 1, Padding.VALID),
    "depthwise_dilated": lambda r: _depthwise(r, (8, 8), 4, 1, 1, Padding.SAME, dilation=2),
    "fc_per_tensor_wide": lambda r: _fc(r, (1, 300), 7, False, False),
    "fc_per_channel": lambda r: _fc(r, (1, 33), 9, True, False),
    "fc_keep_num_dims": lambda r: _fc(r, (1, 3, 16), 5, False, True),
    "add_broadcast": lambda r: _binary(r, OpType.ADD, (1, 1, 1, 4), Activation.NONE, 3.7),
    "add_relu6_close_scales": lambda r: _binary(r, OpType.ADD, (1, 5, 3, 4), Activation.RELU6, 1.01),
    "mul_broadcast_relu": lambda r: _binary(r, OpType.MUL, (1, 5, 1, 4), Activation.RELU, 0.3),
    "avgpool_same_odd": lambda r: _pool(r, OpType.AVERAGE_POOL_2D, (7, 5), 3, 2, Padding.SAME),
    "avgpool_valid_relu6": lambda r: _pool(r, OpType.AVERAGE_POOL_2D, (6, 6), 2, 2, Padding.VALID, Activation.RELU6),
    "maxpool_same_3x3": lambda r: _pool(r, OpType.MAX_POOL_2D, (7, 7), 3, 2, Padding.SAME, Activation.RELU),
    "mean_hw_squeeze": lambda r: _mean(r, [1, 2], False, 0.7),
    "mean_w_negative_axis": lambda r: _mean(r, [-2], True, 1.3),
    "mean_three_axes": lambda r: _mean(r, [1, 2, 3], True, 0.25),
    "softmax_small_scale_long": lambda r: _fixed(r, OpType.SOFTMAX, (1, 37), 0.004, 5),
    "softmax_large_scale_4d": lambda r: _fixed(r, OpType.SOFTMAX, (1, 2, 3, 8), 0.25, -20),
    "logistic_wide_input": lambda r: _fixed(r, OpType.LOGISTIC, (1, 4, 8), 0.11, 30),
    "logistic_narrow_input": lambda r: _fixed(r, OpType.LOGISTIC, (1, 4, 8), 0.003, -100),
    "tanh_wide_input": lambda r: _fixed(r, OpType.TANH, (1, 4, 8), 0.09, -7),
    "tanh_narrow_input": lambda r: _fixed(r, OpType.TANH, (1, 4, 8), 0.002, 60),
    "quantize_int8_requantize": _requantize,
    "concatenation_axis1": _concat,
}
CASES = {**{f"c_{k}": v for k, v in MICRO_MODELS.items()}, **VARIANTS}


def _batch(graph: Graph, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    xs = random_inputs(graph, rng, n)
    for x in xs:  # saturation: an all -128 and an all 127 sample
        x[0] = -128
        x[1] = 127
    return xs


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_tflm_exactly(case: str) -> None:
    graph = CASES[case](np.random.default_rng(abs(hash(case)) % 2**32))
    tflite = write_tflite(graph)
    xs = _batch(graph, np.random.default_rng(7), 12)
    expected = run_tflm(tflite, xs)
    got_ir = Emulator(graph).run_all(xs)[0]
    got_file = Emulator(read_tflite(tflite, where=case)).run_all(xs)[0]
    assert got_ir.dtype == expected.dtype
    np.testing.assert_array_equal(got_ir, expected)
    np.testing.assert_array_equal(got_file, expected)


@pytest.mark.parametrize("name", ["c_conv2d", "fc_per_tensor_wide", "softmax_small_scale_long", "c_logistic"])
def test_float_io_quantize_dequantize_match_tflm(name: str) -> None:
    """float32 in -> QUANTIZE -> op -> DEQUANTIZE -> float32 out, as the writer's float_io models do it."""
    graph = CASES[name](np.random.default_rng(3))
    tflite = write_tflite(graph, float_io=True)
    file_graph = read_tflite(tflite)
    assert file_graph.ops[0].type is OpType.QUANTIZE and file_graph.ops[-1].type is OpType.DEQUANTIZE
    q = graph.tensors[graph.inputs[0]].qparams
    assert q is not None
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(10, *shape)) * 140 * float(q.scale[0])).astype(np.float32)
    x[0, ...] = 0.5 * float(q.scale[0])  # exactly half a step: rounds away from zero
    expected = run_tflm(tflite, [x])
    got = Emulator(file_graph).run(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
