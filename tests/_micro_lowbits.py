"""Micro-models for every op x precision TFLM runs beyond int8: int16 activations with int8 weights (16x8),
INT4 weights with int8 activations, QUANTIZE int8 <-> int16, and a small mixed graph.

Built with :class:`tests._micro.MicroBuilder`; each graph passes ``verify_quantized``. ``int8_twin`` gives the
same graph with its INT4 weights stored as int8 (the same 4-bit values), the independent check of the
nibble packing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tests._micro import MicroBuilder
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
    ReshapeOptions,
    SoftmaxOptions,
    Tensor,
)
from tinyprec.ir.ops import StridedSliceOptions

A16 = DType.INT16


def _out_hw(size: int, k: int, stride: int, padding: Padding, dilation: int = 1) -> int:
    if padding is Padding.SAME:
        return (size + stride - 1) // stride
    return (size - ((k - 1) * dilation + 1)) // stride + 1


def conv(rng: np.random.Generator, *, act: DType = DType.INT8, bits: int = 8, hw: int = 9, cin: int = 3,
         cout: int = 4, k: int = 3, stride: int = 2, padding: Padding = Padding.SAME, dilation: int = 1,
         activation: Activation = Activation.NONE, bias: bool = True) -> Graph:
    b = MicroBuilder(rng, "conv2d")
    x = b.input("x", (1, hw, hw, cin), dtype=act)
    w = b.weights("w", (cout, k, k, cin), axis=0, bits=bits)
    bb = b.bias("b", x, w, cout, k * k * cin) if bias else None
    o = _out_hw(hw, k, stride, padding, dilation)
    y = b.out_for_accumulator("y", (1, o, o, cout), x, w, k * k * cin)
    b.op(OpType.CONV_2D, (x, w, bb), (y,), Conv2DOptions(stride, stride, padding, dilation, dilation, activation))
    return b.graph([y])


def depthwise(rng: np.random.Generator, *, act: DType = DType.INT8, bits: int = 8, hw: int = 7, cin: int = 4,
              mult: int = 2, stride: int = 1, padding: Padding = Padding.VALID, dilation: int = 1,
              activation: Activation = Activation.RELU) -> Graph:
    b = MicroBuilder(rng, "depthwise_conv2d")
    x = b.input("x", (1, hw, hw, cin), dtype=act)
    w = b.weights("w", (1, 3, 3, cin * mult), axis=3, bits=bits)
    bb = b.bias("b", x, w, cin * mult, 9)
    o = _out_hw(hw, 3, stride, padding, dilation)
    y = b.out_for_accumulator("y", (1, o, o, cin * mult), x, w, 9)
    b.op(OpType.DEPTHWISE_CONV_2D, (x, w, bb), (y,),
         DepthwiseConv2DOptions(stride, stride, padding, mult, dilation, dilation, activation))
    return b.graph([y])


def fully_connected(rng: np.random.Generator, *, act: DType = DType.INT8, bits: int = 8, depth: int = 16,
                    cout: int = 5, per_channel: bool = False, keep: bool = False) -> Graph:
    b = MicroBuilder(rng, "fully_connected")
    in_shape = (1, 3, depth) if keep else (1, depth)
    x = b.input("x", in_shape, dtype=act)
    w = b.weights("w", (cout, depth), axis=0 if per_channel else None, bits=bits)
    bb = b.bias("b", x, w, cout, depth)
    y = b.out_for_accumulator("y", (*in_shape[:-1], cout), x, w, depth)
    b.op(OpType.FULLY_CONNECTED, (x, w, bb), (y,), FullyConnectedOptions(Activation.NONE, keep))
    return b.graph([y])


def binary(rng: np.random.Generator, op_type: OpType, *, shape2: tuple[int, ...] = (1, 4, 4, 3),
           activation: Activation = Activation.NONE) -> Graph:
    b = MicroBuilder(rng, op_type.value.lower())
    x1 = b.input("x1", (1, 4, 4, 3), dtype=A16)
    x2 = b.input("x2", shape2, dtype=A16)
    s1, s2 = (float(b.tensors[n].qparams.scale[0]) for n in (x1, x2))  # type: ignore[union-attr]
    scale = (s1 + s2) * 1.2 if op_type is OpType.ADD else s1 * s2 * 18918.0 * 1.5
    y = b.act("y", (1, 4, 4, 3), scale, 0, A16)
    b.op(op_type, (x1, x2), (y,), ElementwiseOptions(activation))
    return b.graph([y])


def sub(rng: np.random.Generator, *, shape2: tuple[int, ...] = (1, 4, 4, 3),
        activation: Activation = Activation.NONE) -> Graph:
    """int16 SUB: inputs on different scales, the output on the range of their difference."""
    b = MicroBuilder(rng, "sub")
    x1 = b.input("x1", (1, 4, 4, 3), dtype=A16)
    x2 = b.input("x2", shape2, scale=float(b.tensors[x1].qparams.scale[0]) * 0.7, dtype=A16)  # type: ignore[union-attr]
    s1, s2 = (float(b.tensors[n].qparams.scale[0]) for n in (x1, x2))  # type: ignore[union-attr]
    y = b.act("y", (1, 4, 4, 3), (s1 + s2) * 0.9, 0, A16)
    b.op(OpType.SUB, (x1, x2), (y,), ElementwiseOptions(activation))
    return b.graph([y])


def extremum(rng: np.random.Generator, op_type: OpType, shape2: tuple[int, ...] = (1, 4, 4, 3)) -> Graph:
    """int16 MAXIMUM / MINIMUM: TFLM compares raw values, so inputs and output share qparams."""
    b = MicroBuilder(rng, op_type.value.lower())
    x1 = b.input("x1", (1, 4, 4, 3), scale=3e-4, dtype=A16)
    x2 = b.input("x2", shape2, scale=3e-4, dtype=A16)
    y = b.act("y", (1, 4, 4, 3), 3e-4, 0, A16)
    b.op(op_type, (x1, x2), (y,), NoOptions())
    return b.graph([y])


def transpose(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "transpose")
    x = b.input("x", (1, 3, 4, 5), dtype=A16)
    perm = b.const("perm", np.array([0, 2, 3, 1], np.int32), DType.INT32)
    b.tensors["y"] = Tensor("y", (1, 4, 5, 3), A16, b.tensors[x].qparams)
    b.op(OpType.TRANSPOSE, (x, perm), ("y",), NoOptions())
    return b.graph(["y"])


def strided_slice(rng: np.random.Generator, shrink: bool = False) -> Graph:
    """int16 STRIDED_SLICE: a strided window of (1, 6, 5, 4), or one row with the axis dropped (rank 3)."""
    b = MicroBuilder(rng, "strided_slice")
    x = b.input("x", (1, 6, 5, 4), dtype=A16)
    begin, end, strides = ([0, 2, 0, 1], [1, 3, 5, 4], [1, 1, 1, 1]) if shrink else ([0, 1, 0, 3], [1, 6, 5, 0],
                                                                                       [1, 2, 2, -2])
    consts = [b.const(n, np.array(v, np.int32), DType.INT32) for n, v in
              (("begin", begin), ("end", end), ("strides", strides))]
    shape = (1, 5, 3) if shrink else (1, 3, 3, 2)
    b.tensors["y"] = Tensor("y", shape, A16, b.tensors[x].qparams)
    b.op(OpType.STRIDED_SLICE, (x, *consts), ("y",), StridedSliceOptions(shrink_axis_mask=2 if shrink else 0))
    return b.graph(["y"])


def moves_chain(rng: np.random.Generator) -> Graph:
    """int16 TRANSPOSE -> two STRIDED_SLICEs -> MAXIMUM, MINIMUM -> SUB: the data-movement ops an int16
    recurrent layer or an a16w8 layer's select / permute / max uses, in one graph (also run on Cortex-M)."""
    b = MicroBuilder(rng, "moves_chain")
    x = b.input("x", (1, 6, 5, 4), dtype=A16)
    q = b.tensors[x].qparams
    perm = b.const("perm", np.array([0, 2, 1, 3], np.int32), DType.INT32)
    b.tensors["t"] = Tensor("t", (1, 5, 6, 4), A16, q)
    b.op(OpType.TRANSPOSE, (x, perm), ("t",), NoOptions())
    for name, start in (("s1", 1), ("s2", 0)):
        consts = [b.const(f"{name}_{k}", np.array(v, np.int32), DType.INT32) for k, v in
                  (("begin", [0, 0, start, 0]), ("end", [1, 5, start + 5, 4]), ("strides", [1, 1, 1, 1]))]
        b.tensors[name] = Tensor(name, (1, 5, 5, 4), A16, q)
        b.op(OpType.STRIDED_SLICE, ("t", *consts), (name,), StridedSliceOptions())
    b.tensors["m"] = Tensor("m", (1, 5, 5, 4), A16, q)
    b.op(OpType.MAXIMUM, ("s1", "s2"), ("m",), NoOptions())
    b.tensors["n"] = Tensor("n", (1, 5, 5, 4), A16, q)
    b.op(OpType.MINIMUM, ("s1", "s2"), ("n",), NoOptions())
    y = b.act("y", (1, 5, 5, 4), float(q.scale[0]) * 1.1, 0, A16)  # type: ignore[union-attr]
    b.op(OpType.SUB, ("m", "n"), (y,), ElementwiseOptions(Activation.NONE))
    return b.graph([y])


def pool(rng: np.random.Generator, op_type: OpType, opts: PoolOptions, out_hw: int) -> Graph:
    b = MicroBuilder(rng, op_type.value.lower())
    x = b.input("x", (1, 8, 8, 4), dtype=A16)
    b.tensors["y"] = Tensor("y", (1, out_hw, out_hw, 4), A16, b.tensors[x].qparams)
    b.op(op_type, (x,), ("y",), opts)
    return b.graph(["y"])


def mean(rng: np.random.Generator, axes: tuple[int, ...] = (1, 2), keep: bool = True) -> Graph:
    b = MicroBuilder(rng, "mean")
    x = b.input("x", (1, 5, 5, 8), dtype=A16)
    a = b.const("axes", np.array(axes, np.int32), DType.INT32)
    shape = tuple(1 if i in axes else d for i, d in enumerate((1, 5, 5, 8)) if keep or i not in axes)
    y = b.act("y", shape, float(b.tensors[x].qparams.scale[0]) * 0.5, 0, A16)  # type: ignore[union-attr]
    b.op(OpType.MEAN, (x, a), (y,), MeanOptions(keep_dims=keep))
    return b.graph([y])


def reshape(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "reshape")
    x = b.input("x", (1, 2, 2, 4), dtype=A16)
    shape = b.const("shape", np.array([1, 16], np.int32), DType.INT32)
    b.tensors["y"] = Tensor("y", (1, 16), A16, b.tensors[x].qparams)
    b.op(OpType.RESHAPE, (x, shape), ("y",), ReshapeOptions((1, 16)))
    return b.graph(["y"])


def concatenation(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "concatenation")
    x1 = b.input("x1", (1, 4, 4, 3), scale=1e-4, dtype=A16)
    x2 = b.input("x2", (1, 4, 4, 5), scale=1e-4, dtype=A16)
    y = b.act("y", (1, 4, 4, 8), 1e-4, 0, A16)
    b.op(OpType.CONCATENATION, (x1, x2), (y,), ConcatenationOptions(axis=3))
    return b.graph([y])


def pad(rng: np.random.Generator) -> Graph:
    b = MicroBuilder(rng, "pad")
    x = b.input("x", (1, 4, 4, 3), dtype=A16)
    pads = b.const("paddings", np.array([[0, 0], [1, 1], [2, 0], [0, 0]], np.int32), DType.INT32)
    b.tensors["y"] = Tensor("y", (1, 6, 6, 3), A16, b.tensors[x].qparams)
    b.op(OpType.PAD, (x, pads), ("y",), NoOptions())
    return b.graph(["y"])


def fixed(rng: np.random.Generator, op_type: OpType, in_scale: float, beta: float = 1.0) -> Graph:
    """SOFTMAX / LOGISTIC / TANH on int16: zero points 0, output scale 1/32768."""
    b = MicroBuilder(rng, op_type.value.lower())
    shape = (1, 2, 12) if op_type is OpType.SOFTMAX else (1, 4, 4, 2)
    x = b.input("x", shape, scale=in_scale, dtype=A16)
    y = b.act("y", shape, 1.0 / 32768.0, 0, A16)
    b.op(op_type, (x,), (y,), SoftmaxOptions(beta) if op_type is OpType.SOFTMAX else NoOptions())
    return b.graph([y])


def quantize(rng: np.random.Generator, src: DType, dst: DType) -> Graph:
    b = MicroBuilder(rng, "quantize")
    x = b.input("x", (1, 6, 5), scale=0.031 / (256 if src is A16 else 1), zp=12, dtype=src)
    y = b.act("y", (1, 6, 5), 0.029 / (256 if dst is A16 else 1), -40, dst)
    b.op(OpType.QUANTIZE, (x,), (y,), NoOptions())
    return b.graph([y])


def mixed(rng: np.random.Generator) -> Graph:
    """int8 in -> INT4 CONV_2D -> QUANTIZE 8->16 -> 16x8 DEPTHWISE -> 16x8 MEAN -> QUANTIZE 16->8 -> INT4
    pointwise CONV_2D -> RESHAPE -> int8 SOFTMAX: the shape of a per-layer mixed-precision model."""
    b = MicroBuilder(rng, "mixed")
    x = b.input("x", (1, 8, 8, 3), scale=0.02, zp=-3)
    w1 = b.weights("w1", (6, 3, 3, 3), axis=0, bits=4)
    c1 = b.out_for_accumulator("c1", (1, 8, 8, 6), x, w1, 27)
    b.op(OpType.CONV_2D, (x, w1, b.bias("b1", x, w1, 6, 27)), (c1,), Conv2DOptions(1, 1, Padding.SAME))
    s1 = float(b.tensors[c1].qparams.scale[0])  # type: ignore[union-attr]
    q1 = b.act("q1", (1, 8, 8, 6), s1 / 200.0, 0, A16)
    b.op(OpType.QUANTIZE, (c1,), (q1,), NoOptions())
    w2 = b.weights("w2", (1, 3, 3, 6), axis=3)
    d2 = b.out_for_accumulator("d2", (1, 4, 4, 6), q1, w2, 9)
    b.op(OpType.DEPTHWISE_CONV_2D, (q1, w2, b.bias("b2", q1, w2, 6, 9)), (d2,),
         DepthwiseConv2DOptions(2, 2, Padding.SAME, 1))
    axes = b.const("axes", np.array([1, 2], np.int32), DType.INT32)
    m = b.act("m", (1, 1, 1, 6), float(b.tensors[d2].qparams.scale[0]), 0, A16)  # type: ignore[union-attr]
    b.op(OpType.MEAN, (d2, axes), (m,), MeanOptions(keep_dims=True))
    q2 = b.act("q2", (1, 1, 1, 6), float(b.tensors[m].qparams.scale[0]) * 200.0, -5)  # type: ignore[union-attr]
    b.op(OpType.QUANTIZE, (m,), (q2,), NoOptions())
    w3 = b.weights("w3", (5, 1, 1, 6), axis=0, bits=4)
    c3 = b.out_for_accumulator("c3", (1, 1, 1, 5), q2, w3, 6)
    b.op(OpType.CONV_2D, (q2, w3, b.bias("b3", q2, w3, 5, 6)), (c3,), Conv2DOptions(1, 1, Padding.VALID))
    shape = b.const("shape", np.array([1, 5], np.int32), DType.INT32)
    logits = b.act("logits", (1, 5), float(b.tensors[c3].qparams.scale[0]), 0)  # type: ignore[union-attr]
    b.tensors[logits].qparams = b.tensors[c3].qparams
    b.op(OpType.RESHAPE, (c3, shape), (logits,), ReshapeOptions((1, 5)))
    p = b.act("p", (1, 5), 1.0 / 256.0, -128)
    b.op(OpType.SOFTMAX, (logits,), (p,), SoftmaxOptions(1.0 / (48 * float(b.tensors[c3].qparams.scale[0]))))  # type: ignore[union-attr]
    return b.graph([p])


def int8_twin(graph: Graph) -> Graph:
    """The same graph with every INT4 weight stored as int8 (the same values, so the same arithmetic)."""
    tensors = {n: dataclasses.replace(t, dtype=DType.INT8) if t.dtype is DType.INT4 else t
               for n, t in graph.tensors.items()}
    return dataclasses.replace(graph, tensors=tensors)


LOWBITS_MODELS: dict[str, Callable[[np.random.Generator], Graph]] = {
    # 16x8: int16 activations, int8 weights, int64 bias
    "a16_conv2d_same_stride2": lambda r: conv(r, act=A16),
    "a16_conv2d_valid_relu_nobias": lambda r: conv(r, act=A16, stride=1, padding=Padding.VALID,
                                                   activation=Activation.RELU, bias=False),
    "a16_conv2d_pointwise": lambda r: conv(r, act=A16, hw=5, cin=7, cout=6, k=1, stride=1),
    "a16_conv2d_dilated_wide": lambda r: conv(r, act=A16, hw=9, cin=40, cout=3, stride=1, dilation=2),
    "a16_depthwise_mult2_valid": lambda r: depthwise(r, act=A16),
    "a16_depthwise_same_stride2": lambda r: depthwise(r, act=A16, hw=9, cin=5, mult=1, stride=2,
                                                      padding=Padding.SAME, activation=Activation.RELU6),
    "a16_fc_per_tensor": lambda r: fully_connected(r, act=A16),
    "a16_fc_per_channel_wide": lambda r: fully_connected(r, act=A16, depth=300, cout=7, per_channel=True),
    "a16_fc_keep_num_dims": lambda r: fully_connected(r, act=A16, keep=True),
    "a16_add": lambda r: binary(r, OpType.ADD, activation=Activation.RELU),
    "a16_add_broadcast": lambda r: binary(r, OpType.ADD, shape2=(1, 1, 1, 3)),
    "a16_mul": lambda r: binary(r, OpType.MUL),
    "a16_mul_broadcast_relu": lambda r: binary(r, OpType.MUL, shape2=(1, 4, 1, 3), activation=Activation.RELU),
    "a16_sub": sub,
    "a16_sub_broadcast_relu": lambda r: sub(r, shape2=(1, 1, 4, 3), activation=Activation.RELU),
    "a16_maximum": lambda r: extremum(r, OpType.MAXIMUM),
    "a16_minimum_broadcast": lambda r: extremum(r, OpType.MINIMUM, shape2=(1, 4, 1, 3)),
    "a16_transpose": transpose,
    "a16_strided_slice": strided_slice,
    "a16_strided_slice_shrink": lambda r: strided_slice(r, shrink=True),
    "a16_moves_chain": moves_chain,
    "a16_average_pool2d": lambda r: pool(r, OpType.AVERAGE_POOL_2D, PoolOptions(3, 3, 2, 2, Padding.SAME), 4),
    "a16_max_pool2d": lambda r: pool(r, OpType.MAX_POOL_2D, PoolOptions(2, 2, 2, 2, Padding.VALID), 4),
    "a16_mean": mean,
    "a16_mean_squeeze": lambda r: mean(r, axes=(1, 2), keep=False),
    "a16_reshape": reshape,
    "a16_concatenation": concatenation,
    "a16_pad": pad,
    "a16_softmax": lambda r: fixed(r, OpType.SOFTMAX, 3e-4),
    "a16_softmax_beta": lambda r: fixed(r, OpType.SOFTMAX, 1e-4, beta=0.5),
    "a16_logistic": lambda r: fixed(r, OpType.LOGISTIC, 2.5e-4),
    "a16_logistic_pot": lambda r: fixed(r, OpType.LOGISTIC, 2.0**-12),
    "a16_tanh": lambda r: fixed(r, OpType.TANH, 3e-4),
    "a16_tanh_pot": lambda r: fixed(r, OpType.TANH, 2.0**-11),
    # INT4 weights, int8 activations
    "w4_conv2d": lambda r: conv(r, bits=4, activation=Activation.RELU),
    "w4_conv2d_odd_count": lambda r: conv(r, bits=4, cin=3, cout=5, k=3, stride=1),
    "w4_depthwise": lambda r: depthwise(r, bits=4),
    "w4_depthwise_odd_same": lambda r: depthwise(r, bits=4, hw=8, cin=3, mult=1, stride=2, padding=Padding.SAME),
    "w4_fc": lambda r: fully_connected(r, bits=4),
    "w4_fc_odd_count": lambda r: fully_connected(r, bits=4, depth=13, cout=3),
    # precision crossings and a mixed graph
    "quantize_int8_to_int16": lambda r: quantize(r, DType.INT8, A16),
    "quantize_int16_to_int8": lambda r: quantize(r, A16, DType.INT8),
    "quantize_int16_to_int16": lambda r: quantize(r, A16, A16),
    "mixed_w4_a16": mixed,
}
