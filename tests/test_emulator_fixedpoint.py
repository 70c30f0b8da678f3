"""The fixed-point primitives against plain-Python transcriptions of TFLM's integer definitions.

The per-op tests already compare whole kernels with TFLM; these pin the primitives on the corners
(ties, negative values, every shift, the float64 fast path against the int64 path).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinyprec.emulator import fixedpoint as fp
from tinyprec.emulator import kernels


def _ref_double(x: int, m: int, shift: int) -> int:
    """TFLM MultiplyByQuantizedMultiplier (double rounding) with Python integers."""
    left, right = max(shift, 0), max(-shift, 0)
    a = ((x * (1 << left) + 2**31) % 2**32) - 2**31  # int32 wrap of x * (1 << left)
    ab = a * m
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) // 2**31 * (1 if ab + nudge >= 0 else -1)  # C division truncates
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if q < 0 else 0)
    return (q >> right) + (1 if (q & mask) > threshold else 0)


def _ref_single(x: int, m: int, shift: int) -> int:
    total = 31 - shift
    return (x * m + (1 << (total - 1))) >> total


def test_multiply_by_quantized_multiplier_matches_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        shift = int(rng.integers(-31, 8))
        m = int(rng.integers(1 << 30, 1 << 31))
        x = int(rng.integers(-(1 << 24), 1 << 24)) if rng.random() < 0.8 else int(rng.integers(-2**31, 2**31))
        assert fp.mbqm_double(x, m, shift) == _ref_double(x, m, shift), (x, m, shift)
        if shift <= 30 and abs(x) < 2**31:
            expected = ((_ref_single(x, m, shift) + 2**31) % 2**32) - 2**31
            assert fp.mbqm_single(x, m, shift) == expected, (x, m, shift)


@pytest.mark.parametrize("x", [-7, -5, -3, -1, 1, 3, 5, 7])
def test_ties_round_like_tflm(x: int) -> None:
    # m = 0.5: x * m / 2**31 is x / 2 exactly, a tie that SaturatingRoundingDoublingHighMul rounds up.
    assert fp.srdhm(x, 1 << 30) == math.floor(x / 2 + 0.5)
    # RoundingDivideByPOT sends ties away from zero.
    assert fp.rdbpot(x, 1) == int(math.copysign(math.floor(abs(x) / 2 + 0.5), x))
    assert fp.mbqm_double(x, 1 << 30, 0) == _ref_double(x, 1 << 30, 0)


@pytest.mark.parametrize("single", [False, True])
def test_float64_requantization_equals_int64_path(single: bool) -> None:
    """The fast float64 path is exact wherever the prepare-time bound admits it."""
    rng = np.random.default_rng(1 + single)
    channels = 48
    shift = rng.integers(-31, 4, channels).astype(np.int64)
    shift[:8] = np.arange(-8, 0)  # small right shifts: many exact ties
    mult = rng.integers(1 << 30, 1 << 31, channels).astype(np.int64)
    mult[:4] = 1 << 30
    limit = np.floor(np.minimum(2.0**52 / mult / np.exp2(np.maximum(shift, 0)),
                                2.0**31 / np.exp2(np.maximum(shift, 0)))).astype(np.int64) - 1
    acc = (rng.random((4000, channels)) * 2 - 1) * limit
    acc[:1000] = rng.integers(-600, 600, (1000, channels))  # dense small values: ties and signs
    acc = np.trunc(acc)
    bias = np.zeros(channels, np.int64)
    fast = kernels.requantize_acc(acc, bias, mult, shift, 0, -128, 127, single, True)
    slow = kernels.requantize_acc(acc, bias, mult, shift, 0, -128, 127, single, False)
    np.testing.assert_array_equal(fast, slow)
    # Unclamped outputs too: compare before saturation with a wide clamp on int8-sized results.
    small = np.trunc(acc / np.maximum(1, np.abs(acc).max(axis=0) / 2000))
    np.testing.assert_array_equal(
        kernels.requantize_acc(small, bias, mult, np.minimum(shift, -4), 0, -128, 127, single, True),
        kernels.requantize_acc(small, bias, mult, np.minimum(shift, -4), 0, -128, 127, single, False))


def test_transcendental_helpers_are_accurate() -> None:
    """Sanity of the gemmlowp-style helpers (their exact bits are checked through TFLM per op)."""
    for x in np.linspace(-15.9, -0.01, 200):
        raw = int(round(x * 2**26))  # 5 integer bits
        assert abs(fp.exp_on_negative_values(raw, 5) / 2**31 - math.exp(raw / 2**26)) < 2e-6
    for x in np.linspace(-7.9, 7.9, 200):
        raw = int(round(x * 2**27))  # 4 integer bits
        assert abs(fp.logistic(raw, 4) / 2**31 - 1 / (1 + math.exp(-raw / 2**27))) < 2e-6
        assert abs(fp.tanh(raw, 4) / 2**31 - math.tanh(raw / 2**27)) < 4e-6
    for total in (1 << 19, 3 << 19, 123456789, (1 << 31) - 1):
        scale, bits = fp.get_reciprocal(total, 12)
        assert abs(scale / 2**31 * 2.0**-bits - 2**19 / total) < 1e-6 * 2**19 / total


def test_wrap32() -> None:
    assert fp.wrap32(2**31) == -(2**31)
    assert fp.wrap32(-(2**31) - 1) == 2**31 - 1
    assert fp.wrap32(12345) == 12345
