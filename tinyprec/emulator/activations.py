"""ELU: prepare + kernel, bit-exact with TFLM's int8 ELU (issue 11, ops-act).

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

from tinyprec.emulator.common import Prepared, fail, per_tensor
from tinyprec.emulator.int16 import _expf
from tinyprec.ir import Graph, Op, OpType


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


PREPARE_ACT: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.ELU: prepare_elu,
}
