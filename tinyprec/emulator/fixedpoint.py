"""The fixed-point arithmetic of TFLM's reference kernels, as numba-compiled scalar functions.

Everything is computed on int64 values that hold int32 quantities; where C++ would wrap an int32
(``x * (1 << shift)``, gemmlowp's plain Add/Sub), :func:`wrap32` wraps explicitly, so the results are
the ones a 32-bit MCU computes. Semantics follow TFLM's common.h (MultiplyByQuantizedMultiplier with
double or single rounding) and gemmlowp's fixedpoint.h (exp, logistic, tanh, 1/(1+x)); the code is ours.

These are scalar ``njit`` functions: the batch kernels in :mod:`tinyprec.emulator.kernels` inline them
in their loops, and per-op lookup tables (LOGISTIC, TANH, SOFTMAX exponentials) call them from Python.
"""

from __future__ import annotations

import numba as nb
import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

_jit = nb.njit(cache=True, nogil=True)


@_jit
def wrap32(x: int) -> int:
    """Two's-complement wrap of an integer to int32 (what an int32 overflow does on an MCU)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@_jit
def _trunc_div_pow2(x: int, exponent: int) -> int:
    """C integer division by 2**exponent (truncates toward zero)."""
    if x >= 0:
        return x >> exponent
    return -((-x) >> exponent)


@_jit
def srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div_pow2(ab + nudge, 31)


@_jit
def rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: divide by 2**exponent, rounding half away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@_jit
def mbqm_double(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier, double rounding (TFLM's default build)."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(wrap32(x << left), multiplier), right)


@_jit
def mbqm_single(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier with TFLITE_SINGLE_ROUNDING: one rounding, half up."""
    total = 31 - shift
    return wrap32((x * multiplier + (1 << (total - 1))) >> total)


@_jit
def mbqm(x: int, multiplier: int, shift: int, single: bool) -> int:
    if single:
        return mbqm_single(x, multiplier, shift)
    return mbqm_double(x, multiplier, shift)


@_jit
def mbqm_smaller_than_one(x: int, multiplier: int, shift: int, single: bool) -> int:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0)."""
    if single:
        return mbqm_single(x, multiplier, shift)
    return rdbpot(srdhm(x, multiplier), -shift)


@_jit
def mbqm_greater_than_one(x: int, multiplier: int, shift: int, single: bool) -> int:
    """MultiplyByQuantizedMultiplierGreaterThanOne (shift >= 0)."""
    if single:
        return mbqm_single(x, multiplier, shift)
    return srdhm(wrap32(x << shift), multiplier)


@_jit
def sat_shift_left(x: int, exponent: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent (saturating left shift)."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


@_jit
def rescale(x: int, src_integer_bits: int, dst_integer_bits: int) -> int:
    """gemmlowp Rescale between fixed-point formats of int32."""
    exponent = src_integer_bits - dst_integer_bits
    if exponent > 0:
        return sat_shift_left(x, exponent)
    if exponent < 0:
        return rdbpot(x, -exponent)
    return x


@_jit
def rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    sign = 1 if s >= 0 else -1
    return wrap32(_trunc_div_pow2(s + sign, 1))


@_jit
def exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


@_jit
def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 given with ``integer_bits`` integer bits; result Q0.31."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_quarter = (a & mask) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_quarter, integer_bits, 0))
    remainder = wrap32(a_mod_quarter_minus_quarter - a)
    # Barrel shifter: multiply by exp(-2**k) for each bit k of the remainder.
    multipliers = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
    for i in range(7):
        exponent = i - 2
        if integer_bits > exponent:
            if remainder & (1 << (fractional_bits + exponent)):
                result = srdhm(result, multipliers[i])
    if integer_bits > 5:
        if a < -(1 << (36 - integer_bits)):
            result = 0
    if a == 0:
        result = INT32_MAX
    return result


@_jit
def _newton_reciprocal(a: int) -> int:
    """The Q2.29 Newton-Raphson estimate of 1/(1+a) shared by the logistic and tanh helpers."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus = wrap32((1 << 29) - half_denominator_times_x)
        x = wrap32(x + sat_shift_left(srdhm(x, one_minus), 2))
    return x


@_jit
def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    return sat_shift_left(_newton_reciprocal(a), 1)


@_jit
def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    return sat_shift_left(wrap32(_newton_reciprocal(a) - (1 << 29)), 2)


@_jit
def logistic(a: int, integer_bits: int) -> int:
    """gemmlowp logistic of a fixed-point value with ``integer_bits``; result Q0.31."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else wrap32(-a)
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap32(-abs_a), integer_bits))
    if a > 0:
        return positive
    return wrap32(INT32_MAX - positive)


@_jit
def tanh(a: int, integer_bits: int) -> int:
    """gemmlowp tanh of a fixed-point value with ``integer_bits``; result Q0.31."""
    if a == 0:
        return 0
    n = a if a < 0 else wrap32(-a)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return wrap32(-t) if a < 0 else t


@_jit
def count_leading_zeros32(x: int) -> int:
    x &= 0xFFFFFFFF
    if x == 0:
        return 32
    n = 0
    while x < (1 << 31):
        x <<= 1
        n += 1
    return n


@_jit
def get_reciprocal(x: int, x_integer_digits: int) -> tuple[int, int]:
    """TFLM GetReciprocal: (Q0.31 scale, num_bits_over_unit) with 1/x = scale * 2**-num_bits_over_unit."""
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_minus_one = wrap32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit


def table(fn: object, values: np.ndarray) -> np.ndarray:
    """Apply a scalar fixed-point function to each value (for small lookup tables)."""
    return np.array([fn(int(v)) for v in values], dtype=np.int64)  # type: ignore[operator]
