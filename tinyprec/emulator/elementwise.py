"""HARD_SWISH, LEAKY_RELU, ABS, SUB, MAXIMUM, MINIMUM: prepare + kernel, bit-exact with TFLM's int8 kernels.

The three unary ops map each int8 input value to one int8 output value, so Prepare computes the whole
function once as a 256-entry table, each entry exactly as TFLM's reference kernel computes it (the table
builders are shared with :mod:`tinyprec.quant.exact`, the TFLM-exact torch program):

* HARD_SWISH (reference/hard_swish.h): the input on a "hires" scale (x << 7), two int16 fixed-point
  multipliers (Q0.15, from QuantizeMultiplier then rounded to 16 bits), the "reluish" factor in [0, 1]
  with a saturating left shift, and gemmlowp's int16 rounding / truncating doubling high multiplies.
* LEAKY_RELU (reference/leaky_relu.h): two MultiplyByQuantizedMultiplier, the identity one for x >= 0 and
  the alpha one (sign taken out of the multiplier) for x < 0.
* ABS (micro/kernels/elementwise.cc): |x - zp_in| requantized when the scales differ, else moved as is.

SUB is ADD's arithmetic (left shift 20, inputs rescaled to twice the larger input scale) with the second
input subtracted; MAXIMUM/MINIMUM compare the raw values (TFLM does not rescale: inputs and output must
share qparams, which Prepare checks here and the quantizer guarantees). SUB, MAXIMUM, MINIMUM, TRANSPOSE and
STRIDED_SLICE also run on int16 (zero points 0; SUB then shifts left by 15, as TFLM's sub_common.cc).
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np

from tinyprec.emulator.common import Prepared, act_range, broadcast_check, fail, per_tensor
from tinyprec.emulator.fixedpoint import mbqm, mbqm_smaller_than_one, wrap32
from tinyprec.ir import DType, Graph, Op, OpType, quantize_multiplier
from tinyprec.ir.ops import StridedSliceOptions

_I16_MIN, _I16_MAX = -(1 << 15), (1 << 15) - 1


# --- int16 gemmlowp arithmetic of HARD_SWISH (Python ints; run 256 times per table) ----------------------
def _srdhm16(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16: (a*b + nudge) / 2**15, truncated."""
    if a == b == _I16_MIN:
        return _I16_MAX
    ab = a * b
    num = ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14))
    q = abs(num) >> 15
    return q if num >= 0 else -q


def _sdhm16(a: int, b: int) -> int:
    """SaturatingDoublingHighMul (int16, rounding toward zero)."""
    if a == b == _I16_MIN:
        return _I16_MAX
    ab = a * b
    q = abs(ab) >> 15
    return q if ab >= 0 else -q


def _rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def _sat_lshift16(x: int, amount: int) -> int:
    return min(max(x * (1 << amount), _I16_MIN), _I16_MAX)


def _to_int16_multiplier(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier: a Q0.31 multiplier rounded to Q0.15."""
    if m >= (1 << 31) - 1 - (1 << 15):
        return _I16_MAX
    return (m + (1 << 15)) >> 16


def hard_swish_table(si: float, zi: int, so: float, zo: int) -> np.ndarray:
    """The int8 HARD_SWISH output for each int8 input -128..127, as TFLM computes it.

    Raises ValueError when TFLM's Prepare would refuse the scales (output multiplier exponent > 0).
    """
    f32 = np.float32
    hires = f32(1.0 / 128.0) * f32(si)
    out_m, out_exp = quantize_multiplier(float(f32(hires / f32(so))))
    relu_m, relu_exp = quantize_multiplier(float(f32(hires / f32(3.0 / 32768.0))))
    if out_exp > 0:
        raise ValueError(f"output scale {so:.6g} is too small for input scale {si:.6g} (multiplier exponent "
                         f"{out_exp} > 0)")
    out16, relu16 = _to_int16_multiplier(out_m), _to_int16_multiplier(relu_m)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        hi = (q - zi) * (1 << 7)
        pre_out = _srdhm16(hi, out16)
        r = hi
        if relu_exp > 0:
            r = _sat_lshift16(r, relu_exp - 1)
        r = _srdhm16(r, relu16)
        if relu_exp > 0:
            r = _sat_lshift16(r, 1)
        if relu_exp < 0:
            r = _rdbpot(r, -relu_exp)
        r = (r + (1 << 15)) >> 1
        v = _rdbpot(_sdhm16(r, pre_out), -out_exp) + zo
        table[i] = min(max(v, -128), 127)
    return table


def leaky_relu_table(si: float, zi: int, so: float, zo: int, alpha: float, single: bool = False) -> np.ndarray:
    """The int8 LEAKY_RELU output for each int8 input (TFLM's reference, any sign of alpha)."""
    f32 = np.float32
    alpha_real = float(f32(f32(f32(si) * f32(alpha)) / f32(so)))
    m_a, s_a = quantize_multiplier(abs(alpha_real), single)
    m_id, s_id = quantize_multiplier(float(f32(f32(si) / f32(so))), single)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = q - zi
        if v >= 0:
            out = zo + mbqm(v, m_id, s_id, single)
        else:
            scaled = mbqm(v, m_a, s_a, single)
            out = zo + (-scaled if alpha_real < 0 else scaled)
        table[i] = min(max(out, -128), 127)
    return table


def abs_table(si: float, zi: int, so: float, zo: int, single: bool = False) -> np.ndarray:
    """The int8 ABS output for each int8 input (TFLM's elementwise ABS with its rescale)."""
    rescale = np.float32(si) != np.float32(so)
    m, s = quantize_multiplier(float(np.float32(np.float32(si) / np.float32(so))), single) if rescale else (0, 0)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = abs(q - zi)
        out = (mbqm(v, m, s, single) if rescale else v) + zo
        table[i] = min(max(out, -128), 127)
    return table


# --- prepare ---------------------------------------------------------------------------------------------
def _need(op: Op, n: int) -> None:
    """A foreign file may leave inputs out (index -1): refuse before a kernel reads them."""
    if len(op.inputs) < n or any(name is None for name in op.inputs[:n]):
        raise fail(op, f"needs {n} inputs, got {sum(name is not None for name in op.inputs)}")


def _io(op: Op, graph: Graph) -> tuple[float, int, float, int]:
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    if tuple(x.shape) != tuple(y.shape):
        raise fail(op, f"output shape {y.shape} differs from the input shape {x.shape}")
    return (*per_tensor(op, x), *per_tensor(op, y))


def _lookup(table: np.ndarray) -> Prepared:
    return Prepared(lambda args: table[args[0].astype(np.int16) + 128])


def prepare_hard_swish(op: Op, graph: Graph, single: bool) -> Prepared:
    try:
        return _lookup(hard_swish_table(*_io(op, graph)))
    except ValueError as err:
        raise fail(op, f"{err}; TFLM's int8 HARD_SWISH refuses it") from None


def prepare_leaky_relu(op: Op, graph: Graph, single: bool) -> Prepared:
    alpha = float(op.options.alpha)  # type: ignore[union-attr]
    if not np.isfinite(alpha):
        raise fail(op, f"alpha {alpha} is not finite")
    return _lookup(leaky_relu_table(*_io(op, graph), alpha, single))


def prepare_abs(op: Op, graph: Graph, single: bool) -> Prepared:
    return _lookup(abs_table(*_io(op, graph), single))


@nb.njit(cache=True, nogil=True)
def _sub(x1: np.ndarray, x2: np.ndarray, off1: int, off2: int, left_shift: int, m1: int, s1: int, m2: int, s2: int,
         mo: int, so: int, out_zp: int, lo: int, hi: int, single: bool,
         out: np.ndarray) -> None:  # pragma: no cover - numba
    for i in range(x1.size):
        a = mbqm_smaller_than_one(wrap32((np.int64(x1[i]) + off1) << left_shift), m1, s1, single)  # type: ignore[arg-type]
        b = mbqm_smaller_than_one(wrap32((np.int64(x2[i]) + off2) << left_shift), m2, s2, single)  # type: ignore[arg-type]
        v = mbqm_smaller_than_one(wrap32(a - b), mo, so, single) + out_zp
        out[i] = min(max(v, lo), hi)


def prepare_sub(op: Op, graph: Graph, single: bool) -> Prepared:
    _need(op, 2)
    s1, z1 = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    s2, z2 = per_tensor(op, graph.tensors[op.inputs[1]])  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    so, zo = per_tensor(op, y)
    wide = y.dtype is DType.INT16
    if wide and (z1, z2, zo) != (0, 0, 0):
        raise fail(op, "int16 SUB needs zero points 0")
    left_shift = 15 if wide else 20  # sub_common.cc: 15 for int16, so 65535 << 15 still fits in int32
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    encoded = []
    for real in (float(s1) / twice_max, float(s2) / twice_max, twice_max / ((1 << left_shift) * float(so))):
        if not 0.0 < real < 1.0:
            raise fail(op, f"rescale factor {real:.6g} is outside (0, 1): the output scale {so:.6g} is too small "
                           f"for TFLM's {y.dtype.value} SUB; widen the output range")
        encoded.append(quantize_multiplier(real, single))
    (m1, sh1), (m2, sh2), (mo, sho) = encoded
    lo, hi = act_range(op, op.options.activation, so, zo, y.dtype)  # type: ignore[union-attr]
    broadcast_check(op, graph)
    out_type = y.dtype.numpy

    def run(args: list[np.ndarray]) -> np.ndarray:
        shape = np.broadcast_shapes(args[0].shape, args[1].shape)
        a = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
        b = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
        out = np.empty(a.size, out_type)
        _sub(a, b, -z1, -z2, left_shift, m1, sh1, m2, sh2, mo, sho, zo, lo, hi, single, out)
        return out.reshape(shape)

    return Prepared(run)


def _prepare_extremum(is_max: bool) -> Callable[[Op, Graph, bool], Prepared]:
    def prepare(op: Op, graph: Graph, single: bool) -> Prepared:
        _need(op, 2)
        y = graph.tensors[op.outputs[0]]
        so, zo = per_tensor(op, y)
        for name in op.inputs[:2]:
            s, z = per_tensor(op, graph.tensors[name])  # type: ignore[index]
            if np.float32(s) != np.float32(so) or z != zo:
                raise fail(op, f"input '{name}' has scale/zero point ({s:.6g}, {z}) but TFLM's "
                               f"{op.type.value} compares raw values: it needs the output's ({so:.6g}, {zo})")
        broadcast_check(op, graph)
        fn = np.maximum if is_max else np.minimum
        out_type = y.dtype.numpy
        return Prepared(lambda args: fn(args[0], args[1]).astype(out_type))

    return prepare


def prepare_transpose(op: Op, graph: Graph, single: bool) -> Prepared:
    _need(op, 2)
    from tinyprec.emulator.common import int_data

    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    perm = [int(p) for p in int_data(op, graph, 1).reshape(-1)]
    if sorted(perm) != list(range(len(x.shape))):
        raise fail(op, f"perm {perm} is not a permutation of the {len(x.shape)} axes")
    if perm[0] != 0:
        raise fail(op, "a TRANSPOSE that moves the batch axis cannot be emulated on a batch")
    if tuple(y.shape) != tuple(x.shape[p] for p in perm):
        raise fail(op, f"output shape {y.shape} is not the permuted input shape")
    s_in, s_out = per_tensor(op, x), per_tensor(op, y)
    if np.float32(s_in[0]) != np.float32(s_out[0]) or s_in[1] != s_out[1]:
        raise fail(op, "TRANSPOSE moves raw values: the output needs the input's scale and zero point")
    return Prepared(lambda args: np.ascontiguousarray(np.transpose(args[0], perm)))


def prepare_strided_slice(op: Op, graph: Graph, single: bool) -> Prepared:
    _need(op, 4)
    from tinyprec.emulator.common import int_data
    from tinyprec.ir.slicing import slice_ranges, sliced_shape

    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    rank = len(x.shape)
    begin, end, strides = (int_data(op, graph, k).reshape(-1) for k in (1, 2, 3))
    if not len(begin) == len(end) == len(strides) == rank:
        raise fail(op, f"begin/end/strides must each have {rank} values (the input's rank)")
    o = op.options
    assert isinstance(o, StridedSliceOptions)
    try:
        ranges = slice_ranges(x.shape, [int(v) for v in begin], [int(v) for v in end], [int(v) for v in strides],
                              o.begin_mask, o.end_mask, o.shrink_axis_mask)
    except ValueError as err:
        raise fail(op, str(err)) from None
    if ranges[0][:3] != (0, x.shape[0], 1) or ranges[0][3]:
        raise fail(op, "slicing the batch axis cannot be emulated on a batch")
    if tuple(y.shape) != sliced_shape(ranges):
        raise fail(op, f"output shape {y.shape} is not the sliced shape {sliced_shape(ranges)}")
    s_in, s_out = per_tensor(op, x), per_tensor(op, y)
    if np.float32(s_in[0]) != np.float32(s_out[0]) or s_in[1] != s_out[1]:
        raise fail(op, "STRIDED_SLICE copies raw values: the output needs the input's scale and zero point")
    index = tuple([slice(None)] + [a if shrink else slice(a, b if b >= 0 else None, s)
                                   for a, b, s, shrink in ranges[1:]])
    return Prepared(lambda args: np.ascontiguousarray(args[0][index]))


@nb.njit(cache=True, nogil=True)
def _prelu(x: np.ndarray, a: np.ndarray, zi: int, za: int, m1: int, s1: int, m2: int, s2: int, zo: int,
           single: bool) -> np.ndarray:  # pragma: no cover - numba
    out = np.empty(x.size, np.int8)
    for i in range(x.size):
        v = np.int64(x[i]) - zi
        if v >= 0:
            r = mbqm(v, m1, s1, single)  # type: ignore[arg-type]
        else:
            r = mbqm(v * (np.int64(a[i]) - za), m2, s2, single)  # type: ignore[arg-type]
        out[i] = min(max(r + zo, -128), 127)
    return out


def prepare_prelu(op: Op, graph: Graph, single: bool) -> Prepared:
    """PRELU (reference/prelu.h): x >= zp_in rescaled by s_in/s_out, else (x - zp)(alpha - zp_a) by
    s_in*s_alpha/s_out; both multipliers from double products of the float32 scales."""
    _need(op, 2)
    si, zi = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    sa, za = per_tensor(op, graph.tensors[op.inputs[1]])  # type: ignore[index]
    so, zo = per_tensor(op, graph.tensors[op.outputs[0]])
    m1, s1 = quantize_multiplier(float(si) / float(so), single)
    m2, s2 = quantize_multiplier(float(si) * float(sa) / float(so), single)
    broadcast_check(op, graph)

    def run(args: list[np.ndarray]) -> np.ndarray:
        shape = np.broadcast_shapes(args[0].shape, args[1].shape)
        x = np.ascontiguousarray(np.broadcast_to(args[0], shape)).reshape(-1)
        a = np.ascontiguousarray(np.broadcast_to(args[1], shape)).reshape(-1)
        return _prelu(x, a, zi, za, m1, s1, m2, s2, zo, single).reshape(shape)

    return Prepared(run)


PREPARE_MORE: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.HARD_SWISH: prepare_hard_swish,
    OpType.LEAKY_RELU: prepare_leaky_relu,
    OpType.ABS: prepare_abs,
    OpType.SUB: prepare_sub,
    OpType.MAXIMUM: _prepare_extremum(True),
    OpType.MINIMUM: _prepare_extremum(False),
    OpType.TRANSPOSE: prepare_transpose,
    OpType.STRIDED_SLICE: prepare_strided_slice,
    OpType.PRELU: prepare_prelu,
}
