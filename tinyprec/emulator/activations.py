"""ELU and REDUCE_MAX: prepare + kernel, bit-exact with TFLM's int8 kernels (issue 11, ops-act).

REDUCE_MAX (micro/kernels/reduce_common.cc) compares raw int8 values; TFLM's Prepare/Eval require the input
and output to share scale and zero point, which prepare checks here.

TFLM's int8 ELU (micro/kernels/elu.cc) is a 256-entry table built in Prepare, in float32: each int8 value
``q`` is dequantized as ``s_in * (q - zp_in)`` (float32), mapped through ``expf(v) - 1`` when negative
(the identity otherwise), multiplied by the float32 reciprocal ``1 / s_out``, rounded half away from zero,
offset by ``zp_out`` and clamped to int8. ``expf`` is the C library's, as in TFLM (on the host this is
glibc's; an MCU build uses its toolchain's libm, which may differ in the last ulp and so, on an exact
rounding tie, by one step: documented in the op table's caveat). The table builder is shared with
:mod:`tinyprec.quant.exact_act`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tinyprec.emulator.common import Prepared, fail, int_data, per_tensor
from tinyprec.emulator.int16 import _expf
from tinyprec.ir import Graph, MeanOptions, Op, OpType


def elu_table(si: float, zi: int, so: float, zo: int) -> np.ndarray:
    """The int8 ELU output for each int8 input -128..127, as TFLM's Prepare computes it."""
    f32 = np.float32
    inverse = f32(1.0) / f32(so)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = f32(si) * f32(q - zi)
        t = f32(_expf(v) - f32(1.0)) if v < 0 else v
        r = f32(t * inverse)
        rounded = math.copysign(math.floor(abs(float(r)) + 0.5), float(r))  # std::round, exact in double
        table[i] = min(max(int(rounded) + zo, -128), 127)
    return table


def prepare_elu(op: Op, graph: Graph, single: bool) -> Prepared:
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    if tuple(x.shape) != tuple(y.shape):
        raise fail(op, f"output shape {y.shape} differs from the input shape {x.shape}")
    table = elu_table(*per_tensor(op, x), *per_tensor(op, y))
    return Prepared(lambda args: table[args[0].astype(np.int16) + 128])


def prepare_reduce_max(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, MeanOptions)
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    rank = len(x.shape)
    axes_raw = int_data(op, graph, 1).reshape(-1)
    if any(not -rank <= int(a) < rank for a in axes_raw):
        raise fail(op, f"axes {axes_raw.tolist()} out of range for rank {rank}")
    axes = tuple(sorted({int(a) % rank for a in axes_raw}))
    if 0 in axes:
        raise fail(op, "REDUCE_MAX over the batch axis cannot be emulated on a batch")
    if any(x.shape[a] == 0 for a in axes):
        raise fail(op, "reduces over an empty axis")
    expected = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if opts.keep_dims or i not in axes)
    if tuple(y.shape) != expected:
        raise fail(op, f"output shape {y.shape} does not match the reduced shape {expected}")
    (si, zi), (so, zo) = per_tensor(op, x), per_tensor(op, y)
    if float(si) != float(so) or zi != zo:
        raise fail(op, "TFLM's int8 REDUCE_MAX needs the input and output to share scale and zero point")
    return Prepared(lambda args: args[0].max(axis=axes, keepdims=opts.keep_dims))


PREPARE_ACT: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.ELU: prepare_elu,
    OpType.REDUCE_MAX: prepare_reduce_max,
}
