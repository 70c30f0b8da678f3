"""Prepare once, evaluate on a batch: one ``prepare_*`` per op type, keyed by :class:`OpType`.

A prepare function reads the op's tensors and options from the graph, computes what TFLM's Prepare
computes (multipliers, shifts, offsets, clamps, padding, tables) and checks what TFLM checks, then returns
a :class:`Prepared` whose ``run`` maps the op's batched input arrays to its batched output array.
Weighted ops live in :mod:`tinyprec.emulator.conv`; this module holds the rest and the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tinyprec.emulator import conv, int16, kernels, kernels16
from tinyprec.emulator.common import (
    Prepared,
    act_range,
    broadcast_check,
    fail,
    int_data,
    per_tensor,
    pool_geometry,
    sample_shape,
)
from tinyprec.emulator.fixedpoint import logistic, mbqm, rdbpot, tanh
from tinyprec.ir import Activation, DType, Graph, MeanOptions, Op, OpType, PoolOptions, quantize_multiplier
from tinyprec.ir.qparams import round_half_away


def prepare_pool(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, PoolOptions)
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    if len(x.shape) != 4:
        raise fail(op, f"input shape {x.shape} must be NHWC")
    geo = pool_geometry(op, x.shape[1], x.shape[2], opts.filter_h, opts.filter_w, opts.stride_h,
                        opts.stride_w, 1, 1, opts.padding)
    expected = (geo.out_h, geo.out_w, x.shape[3])
    if sample_shape(y) != expected:
        raise fail(op, f"output shape {y.shape} does not match the pooled shape {(1, *expected)}")
    out_scale, out_zp = per_tensor(op, y)
    lo, hi = act_range(op, opts.activation, out_scale, out_zp, y.dtype)
    is_max = op.type is OpType.MAX_POOL_2D
    if y.dtype is DType.INT16:

        def run16(args: list[np.ndarray]) -> np.ndarray:
            out = np.empty((args[0].shape[0], *expected), np.int16)
            kernels16.pool_into(args[0], opts.filter_h, opts.filter_w, opts.stride_h, opts.stride_w, geo.pad_h,
                                geo.pad_w, lo, hi, is_max, out)
            return out

        return Prepared(run16)

    def run(args: list[np.ndarray]) -> np.ndarray:
        return kernels.pool(args[0], opts.filter_h, opts.filter_w, opts.stride_h, opts.stride_w, geo.pad_h,
                            geo.pad_w, geo.out_h, geo.out_w, lo, hi, is_max)

    return Prepared(run)


def prepare_add(op: Op, graph: Graph, single: bool) -> Prepared:
    s1, z1 = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    s2, z2 = per_tensor(op, graph.tensors[op.inputs[1]])  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    so, zo = per_tensor(op, y)
    wide = y.dtype is DType.INT16
    left_shift = 15 if wide else 20
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    reals = (float(s1) / twice_max, float(s2) / twice_max, twice_max / ((1 << left_shift) * float(so)))
    encoded = []
    for real in reals:
        if not 0.0 < real < 1.0:
            raise fail(op, f"rescale factor {real:.6g} is outside (0, 1): the output scale {so:.6g} is too small "
                           f"for TFLM's {y.dtype.value} ADD; widen the output range")
        encoded.append(quantize_multiplier(real, single))
    (m1, sh1), (m2, sh2), (mo, sho) = encoded
    lo, hi = act_range(op, op.options.activation, so, zo, y.dtype)  # type: ignore[union-attr]
    broadcast_check(op, graph)
    if wide:

        def run16(args: list[np.ndarray]) -> np.ndarray:
            shape = np.broadcast_shapes(args[0].shape, args[1].shape)
            a = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
            b = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
            out = np.empty(a.size, np.int16)
            kernels16.add_into(a, b, -z1, -z2, left_shift, m1, sh1, m2, sh2, mo, sho, zo, lo, hi, single, out)
            return out.reshape(shape)

        return Prepared(run16)

    def run(args: list[np.ndarray]) -> np.ndarray:
        shape = np.broadcast_shapes(args[0].shape, args[1].shape)
        a = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
        b = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
        return kernels.add(a, b, -z1, -z2, left_shift, m1, sh1, m2, sh2, mo, sho, zo, lo, hi,
                           single).reshape(shape)

    return Prepared(run)


def prepare_mul(op: Op, graph: Graph, single: bool) -> Prepared:
    s1, z1 = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    s2, z2 = per_tensor(op, graph.tensors[op.inputs[1]])  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    so, zo = per_tensor(op, y)
    mult, shift = quantize_multiplier(float(s1) * float(s2) / float(so), single)
    lo, hi = act_range(op, op.options.activation, so, zo, y.dtype)  # type: ignore[union-attr]
    broadcast_check(op, graph)
    if y.dtype is DType.INT16:
        if (z1, z2, zo) != (0, 0, 0):
            raise fail(op, "int16 MUL needs zero points 0")

        def run16(args: list[np.ndarray]) -> np.ndarray:
            shape = np.broadcast_shapes(args[0].shape, args[1].shape)
            a = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
            b = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
            out = np.empty(a.size, np.int16)
            kernels16.mul_into(a, b, 0, 0, mult, shift, 0, lo, hi, single, out)
            return out.reshape(shape)

        return Prepared(run16)

    def run(args: list[np.ndarray]) -> np.ndarray:
        shape = np.broadcast_shapes(args[0].shape, args[1].shape)
        a = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
        b = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
        return kernels.mul(a, b, -z1, -z2, mult, shift, zo, lo, hi, single).reshape(shape)

    return Prepared(run)


def prepare_mean(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, MeanOptions)
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    rank = len(x.shape)
    axes_raw = int_data(op, graph, 1).reshape(-1)
    axes = sorted({int(a) % rank for a in axes_raw if -rank <= int(a) < rank})  # duplicates resolve as in TFLM
    if any(not -rank <= int(a) < rank for a in axes_raw):
        raise fail(op, f"axes {axes_raw.tolist()} out of range for rank {rank}")
    if 0 in axes:
        raise fail(op, "MEAN over the batch axis cannot be emulated on a batch")
    expected = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if opts.keep_dims or i not in axes)
    if tuple(y.shape) != expected:
        raise fail(op, f"output shape {y.shape} does not match the reduced shape {expected}")
    si, zi = per_tensor(op, x)
    so, zo = per_tensor(op, y)
    mult, shift = quantize_multiplier(float(si) / float(so), single)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    if count == 0:
        raise fail(op, "reduces over an empty axis")
    # TFLM folds 1/count into the multiplier at eval time.
    s = min(count.bit_length() - 1, 32, 31 + shift)
    s = max(s, 0)
    mult_n = (mult << s) // count
    shift_n = shift - s

    wide = y.dtype is DType.INT16

    def run(args: list[np.ndarray]) -> np.ndarray:
        sums = args[0].astype(np.int64).sum(axis=tuple(axes), keepdims=opts.keep_dims)
        shifted = (sums - zi * count).reshape(-1)
        if wide:
            out = np.empty(shifted.size, np.int16)
            kernels16.requantize_into(shifted, mult_n, shift_n, zo, -32768, 32767, single, out)
            return out.reshape(sums.shape)
        return kernels.requantize_flat(shifted, mult_n, shift_n, zo, -128, 127, single).reshape(sums.shape)

    return Prepared(run)


def prepare_reshape(op: Op, graph: Graph, single: bool) -> Prepared:
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    if math.prod(x.shape) != math.prod(y.shape):
        raise fail(op, f"cannot reshape {x.shape} to {y.shape}")
    out = sample_shape(y)
    return Prepared(lambda args: args[0].reshape((args[0].shape[0], *out)))


def prepare_concatenation(op: Op, graph: Graph, single: bool) -> Prepared:
    axis = op.options.axis  # type: ignore[union-attr]
    if op.options.activation is not Activation.NONE:  # type: ignore[union-attr]
        raise fail(op, "TFLM's CONCATENATION takes no fused activation")
    y = graph.tensors[op.outputs[0]]
    so, zo = per_tensor(op, y)
    names = [n for n in op.inputs if n is not None]
    for n in names:
        s, z = per_tensor(op, graph.tensors[n])
        if y.dtype is DType.INT16:  # TFLM copies int16 values as they are; it checks only the zero points
            if z != 0:
                raise fail(op, f"int16 input '{n}' needs zero point 0")
        elif np.float32(s) != np.float32(so) or z != zo:
            raise fail(op, f"input '{n}' has scale/zero point ({s:.6g}, {z}) but TFLM's int8 CONCATENATION needs "
                           f"every input to share the output's ({so:.6g}, {zo})")
    if axis == 0:
        raise fail(op, "concatenation along the batch axis cannot be emulated on a batch")
    shapes = [graph.tensors[n].shape for n in names]
    total = sum(s[axis] for s in shapes)
    if any(len(s) != len(y.shape) for s in shapes) or total != y.shape[axis]:
        raise fail(op, f"input shapes {shapes} do not concatenate to {y.shape} on axis {axis}")

    def run(args: list[np.ndarray]) -> np.ndarray:
        n = max(a.shape[0] for a in args)
        return np.concatenate([np.broadcast_to(a, (n, *a.shape[1:])) for a in args], axis=axis)

    return Prepared(run)


def prepare_pad(op: Op, graph: Graph, single: bool) -> Prepared:
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    pads = int_data(op, graph, 1)
    if pads.shape != (len(x.shape), 2) or np.any(pads < 0):
        raise fail(op, f"paddings of shape {pads.shape} must be ({len(x.shape)}, 2) and non-negative")
    if np.any(pads[0] != 0):
        raise fail(op, "padding the batch axis cannot be emulated on a batch")
    expected = tuple(int(d + p[0] + p[1]) for d, p in zip(x.shape, pads))
    if tuple(y.shape) != expected:
        raise fail(op, f"output shape {y.shape} does not match the padded shape {expected}")
    _, zo = per_tensor(op, y)
    value = zo
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        value = int(int_data(op, graph, 2).reshape(-1)[0])
    widths = [(int(a), int(b)) for a, b in pads]
    return Prepared(lambda args: np.pad(args[0], widths, constant_values=value))


def prepare_softmax(op: Op, graph: Graph, single: bool) -> Prepared:
    if graph.tensors[op.inputs[0]].dtype is DType.INT16:  # type: ignore[index]
        return int16.prepare_softmax16(op, graph, single)
    si, _ = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    so, zo = per_tensor(op, graph.tensors[op.outputs[0]])
    if zo != -128 or np.float32(so) != np.float32(1.0 / 256.0):
        raise fail(op, "int8 SOFTMAX output must be quantized with scale 1/256 and zero point -128")
    beta = float(np.float32(op.options.beta))  # type: ignore[union-attr]
    max_real = float((1 << 30) - 1) if single else float((1 << 31) - 1)
    real = min(beta * float(si) * float(1 << 26), max_real)
    if real <= 1.0:
        raise fail(op, f"beta * input scale = {beta * float(si):.6g} is too small for TFLM's int8 SOFTMAX")
    mult, left_shift = quantize_multiplier(real, single)
    diff_min = -math.floor(31.0 * (1 << 26) / (2.0 ** left_shift))
    exp_raw, exp_acc = kernels.softmax_exp_tables(mult, left_shift, single)

    def run(args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        return kernels.softmax(flat, exp_raw, exp_acc, diff_min).reshape(x.shape)

    return Prepared(run)


def _fixed_function_table(op: Op, graph: Graph, single: bool, is_tanh: bool) -> np.ndarray:
    """The 256-entry int8 table of LOGISTIC or TANH, each entry computed as TFLM computes it."""
    si, zi = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    so, zo = per_tensor(op, graph.tensors[op.outputs[0]])
    if not is_tanh and zo != -128:
        raise fail(op, "int8 LOGISTIC output zero point must be -128")
    frac, left_shift = math.frexp(float(si) * float(1 << 27))
    mult = round_half_away(frac * (1 << 31))
    if mult == 1 << 31:
        mult = -(1 << 31)  # static_cast<int32_t> of 2**31 on the MCU
    radius = math.floor(15.0 * (1 << 27) / (2.0 ** left_shift))
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = q - zi
        if v <= -radius:
            table[i] = -128
        elif v >= radius:
            table[i] = 127
        else:
            q4 = mbqm(v, mult, left_shift, single)
            if is_tanh:
                r = rdbpot(tanh(q4, 4), 24)
            else:
                r = rdbpot(logistic(q4, 4), 23) - 128
            table[i] = min(max(r, -128), 127)
    return table


def prepare_logistic(op: Op, graph: Graph, single: bool) -> Prepared:
    if graph.tensors[op.inputs[0]].dtype is DType.INT16:  # type: ignore[index]
        return int16.prepare_fixed16(op, graph, single, is_tanh=False)
    table = _fixed_function_table(op, graph, single, is_tanh=False)
    return Prepared(lambda args: table[args[0].astype(np.int16) + 128])


def prepare_tanh(op: Op, graph: Graph, single: bool) -> Prepared:
    if graph.tensors[op.inputs[0]].dtype is DType.INT16:  # type: ignore[index]
        return int16.prepare_fixed16(op, graph, single, is_tanh=True)
    table = _fixed_function_table(op, graph, single, is_tanh=True)
    return Prepared(lambda args: table[args[0].astype(np.int16) + 128])


def prepare_quantize(op: Op, graph: Graph, single: bool) -> Prepared:
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    if y.dtype not in (DType.INT8, DType.INT16):
        raise fail(op, f"QUANTIZE to {y.dtype.value} is not emulated (int8 and int16 only)")
    if DType.INT16 in (x.dtype, y.dtype):
        if x.dtype is DType.FLOAT32:
            return int16.prepare_float_quantize16(op, graph, single)
        if x.dtype in (DType.INT8, DType.INT16):
            return int16.prepare_requantize_table(op, graph, single)
    so, zo = per_tensor(op, y)
    if x.dtype is DType.FLOAT32:
        scale = np.float32(so)

        def run_float(args: list[np.ndarray]) -> np.ndarray:
            v = (np.nan_to_num(args[0].astype(np.float32)) / scale).astype(np.float64)
            r = np.sign(v) * np.floor(np.abs(v) + 0.5)
            return np.clip(np.clip(r, -2.0**31, 2.0**31 - 1) + zo, -128, 127).astype(np.int8)

        return Prepared(run_float)
    if x.dtype is not DType.INT8:
        raise fail(op, f"QUANTIZE from {x.dtype.value} is not emulated (float32 or int8 only)")
    si, zi = per_tensor(op, x)
    mult, shift = quantize_multiplier(float(si) / float(so), single)

    def run_requant(args: list[np.ndarray]) -> np.ndarray:
        flat = args[0].astype(np.int64).reshape(-1) - zi
        return kernels.requantize_flat(flat, mult, shift, zo, -128, 127, single).reshape(args[0].shape)

    return Prepared(run_requant)


def prepare_dequantize(op: Op, graph: Graph, single: bool) -> Prepared:
    si, zi = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    if graph.tensors[op.outputs[0]].dtype is not DType.FLOAT32:
        raise fail(op, "DEQUANTIZE must produce float32")
    scale = float(si)
    return Prepared(lambda args: (scale * (args[0].astype(np.float64) - zi)).astype(np.float32))


PREPARE: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.CONV_2D: conv.prepare_conv2d,
    OpType.DEPTHWISE_CONV_2D: conv.prepare_depthwise,
    OpType.FULLY_CONNECTED: conv.prepare_fully_connected,
    OpType.ADD: prepare_add,
    OpType.MUL: prepare_mul,
    OpType.AVERAGE_POOL_2D: prepare_pool,
    OpType.MAX_POOL_2D: prepare_pool,
    OpType.MEAN: prepare_mean,
    OpType.RESHAPE: prepare_reshape,
    OpType.CONCATENATION: prepare_concatenation,
    OpType.PAD: prepare_pad,
    OpType.SOFTMAX: prepare_softmax,
    OpType.LOGISTIC: prepare_logistic,
    OpType.TANH: prepare_tanh,
    OpType.QUANTIZE: prepare_quantize,
    OpType.DEQUANTIZE: prepare_dequantize,
}

from tinyprec.emulator.elementwise import PREPARE_MORE  # noqa: E402  (issue 11's ops, in their own module)

PREPARE.update(PREPARE_MORE)

from tinyprec.emulator.shape_ops import PREPARE_SHAPE  # noqa: E402  (issue 11's shape ops)

PREPARE.update(PREPARE_SHAPE)
from tinyprec.emulator.activations import PREPARE_ACT  # noqa: E402  (issue 11's ELU, ops-act)

PREPARE.update(PREPARE_ACT)

from tinyprec.emulator.norm import PREPARE_NORM  # noqa: E402  (issue 11: RSQRT for LayerNorm)

PREPARE.update(PREPARE_NORM)
