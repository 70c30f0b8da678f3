"""RSQRT (issue 11, LayerNorm): prepare + kernel, bit-exact with TFLM's int8 kernel.

TFLM's int8 RSQRT (micro/kernels/elementwise.cc) maps each int8 input ``q`` to one int8 output, so Prepare
here computes the whole function once as a 256-entry table, each entry as TFLM computes it:

* ``v = q - zp_in``; ``v == 0`` gives the int8 maximum (127); ``v < 0`` makes TFLM's Invoke fail
  ("Rsqrt is only defined for positive values"), so the kernel here refuses such inputs the same way.
* ``1/sqrt(v)`` as a q31 multiplier and a shift from TF Lite's GetInvSqrtQuantizedMultiplierExp
  (common.h): ``v`` normalised into [2**27, 2**29) by pairs of bits, five Newton-Raphson steps in gemmlowp's
  Q3.28 fixed point from the guess 1 (saturating shifts for the rescales, a wrapping subtraction), times
  sqrt(2)/2 in Q0.31.
* ``data = MultiplyByQuantizedMultiplier(1, inv, shift + 20)``, then
  ``out = MultiplyByQuantizedMultiplier(data, M, s - 20) + zp_out`` clamped to int8, with ``(M, s)`` the
  QuantizeMultiplier of ``1 / (sqrtf(s_in) * s_out)`` (the product in float32, the division in double).

The table builder is shared with :mod:`tinyprec.quant.exact_norm` (the TFLM-exact program).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyprec.emulator.common import Prepared, fail, per_tensor
from tinyprec.emulator.fixedpoint import INT32_MAX, mbqm, rdbpot, sat_shift_left, srdhm, wrap32
from tinyprec.ir import Graph, Op, OpType, quantize_multiplier

_HALF_THREE_Q3 = (1 << 28) + (1 << 27)  # 1.5 in Q3.28
_ONE_Q3 = 1 << 28
_HALF_SQRT2_Q0 = 1518500250  # sqrt(2)/2 in Q0.31


def inv_sqrt_multiplier(value: int) -> tuple[int, int]:
    """TF Lite's GetInvSqrtQuantizedMultiplierExp(value, kReverseShift): (q31 multiplier, left shift)."""
    if value <= 1:
        return INT32_MAX, 0
    shift = 11
    while value >= (1 << 29):
        value //= 4
        shift += 1
    max_left_shift_bits = (32 - value.bit_length()) - 1
    pairs = max_left_shift_bits // 2 - 1
    shift -= pairs
    value <<= 2 * pairs
    fixed_input = value >> 1  # Q3.28
    half_input = rdbpot(fixed_input, 1)
    x = _ONE_Q3
    for _ in range(5):
        x3 = sat_shift_left(srdhm(srdhm(x, x), x), 6)  # Q9 -> Q3
        x = sat_shift_left(wrap32(srdhm(_HALF_THREE_Q3, x) - srdhm(half_input, x3)), 3)  # Q6 -> Q3
    mult = srdhm(x, _HALF_SQRT2_Q0)
    if shift < 0:
        mult, shift = wrap32(mult << -shift), 0
    return mult, -shift


def rsqrt_table(si: float, zi: int, so: float, zo: int, single: bool = False) -> np.ndarray:
    """The int8 RSQRT output for each int8 input -128..127 (inputs below ``zi``, which TFLM refuses at
    Invoke, hold 127 here: the callers refuse or never produce them)."""
    f32 = np.float32
    m, s = quantize_multiplier(1.0 / float(f32(np.sqrt(f32(si)) * f32(so))), single)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = q - zi
        if v <= 0:
            table[i] = 127
            continue
        inv, inv_shift = inv_sqrt_multiplier(v)
        data = mbqm(1, inv, inv_shift + 20, single)
        out = mbqm(data, m, s - 20, single) + zo
        table[i] = min(max(out, -128), 127)
    return table


def prepare_rsqrt(op: Op, graph: Graph, single: bool) -> Prepared:
    if len(op.inputs) < 1 or op.inputs[0] is None:
        raise fail(op, "needs 1 input")
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if tuple(x.shape) != tuple(y.shape):
        raise fail(op, f"output shape {y.shape} differs from the input shape {x.shape}")
    (si, zi), (so, zo) = per_tensor(op, x), per_tensor(op, y)
    table = rsqrt_table(si, zi, so, zo, single)

    def run(args: list[np.ndarray]) -> np.ndarray:
        xq = args[0]
        if xq.size and int(xq.min()) < zi:
            raise fail(op, f"input value {int(xq.min())} is below the zero point {zi} (a negative number): "
                           "TFLM's RSQRT fails at Invoke")
        return table[xq.astype(np.int16) + 128]

    return Prepared(run)


PREPARE_NORM: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.RSQRT: prepare_rsqrt,
}
