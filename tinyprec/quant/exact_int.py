"""TFLM's integer arithmetic on int64 torch tensors, for :mod:`tinyprec.quant.exact`.

The same semantics as the emulator's scalar numba functions (:mod:`tinyprec.emulator.fixedpoint`, which
are bit-exact with TFLM): gemmlowp SaturatingRoundingDoublingHighMul, RoundingDivideByPOT,
MultiplyByQuantizedMultiplier with double rounding, int32 wrap-around, GetReciprocal; plus TFLM's
activation ranges and the LOGISTIC/TANH int8 tables.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from tinyprec.ir.qparams import quantize_multiplier, round_half_away

if TYPE_CHECKING:  # pragma: no cover
    import torch

_INT32 = 1 << 31


def quiet_leafspec() -> None:
    """tflm_exact deep-copies the converted program; torch's pytree deprecates LeafSpec and warns
    (FutureWarning) on every copy of a GraphModule holding one, which would leak into every run's output."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)


quiet_leafspec()


def wrap32(x: "torch.Tensor") -> "torch.Tensor":
    return ((x + _INT32) & 0xFFFFFFFF) - _INT32


def srdhm(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    import torch

    ab = a * b
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    return torch.div(ab + nudge, _INT32, rounding_mode="trunc")


def rdbpot(x: "torch.Tensor", exponent: "torch.Tensor") -> "torch.Tensor":
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (x < 0).long()
    return (x >> exponent) + ((x & mask) > threshold).long()


def mbqm(x: "torch.Tensor", mult: "torch.Tensor", shift: "torch.Tensor") -> "torch.Tensor":
    """MultiplyByQuantizedMultiplier with double rounding (TFLM's default build)."""
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0)
    return rdbpot(srdhm(wrap32(wrap32(x) << left), mult), right)


def encode(reals: list[float]) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    pairs = [quantize_multiplier(r) for r in reals]
    return (torch.tensor([p[0] for p in pairs], dtype=torch.int64),
            torch.tensor([p[1] for p in pairs], dtype=torch.int64))


def act_range(act: str, scale: float, zp: int, bounds: tuple[int, int] = (-128, 127)) -> tuple[int, int]:
    """TFLM CalculateActivationRangeQuantized: the output type's ``bounds`` (int8 by default), then the fused
    activation."""

    def q(f: float) -> int:
        return zp + round_half_away(float(np.float32(f) / np.float32(scale)))

    lo, hi = bounds
    if act == "relu":
        lo = max(lo, q(0.0))
    elif act == "relu6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif act == "relu_n1_to_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


def sat_shift_left(x: "torch.Tensor", exponent: int) -> "torch.Tensor":
    threshold = (1 << (31 - exponent)) - 1
    return (x << exponent).where(x <= threshold, _INT32 - 1).where(x >= -threshold, -_INT32)


def reciprocal(x: "torch.Tensor", integer_digits: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """TFLM GetReciprocal of positive int32 values: (Q0.31 scale, bits over unit), Newton-Raphson in gemmlowp."""
    import torch

    bit_length = torch.stack([((x >> k) > 0).long() for k in range(32)]).sum(dim=0)
    headroom = 32 - bit_length  # count of leading zeros in 32 bits
    shifted_minus_one = wrap32(((x << headroom) & 0xFFFFFFFF) - _INT32)
    s = shifted_minus_one + (_INT32 - 1)  # rounding half sum with 1.0
    half_den = wrap32(trunc_div2(s + (s >= 0).long() * 2 - 1))
    est = wrap32(1515870810 + srdhm(half_den, x.new_tensor(-1010580540)))
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half_den, est))
        est = wrap32(est + sat_shift_left(srdhm(est, one_minus), 2))
    return sat_shift_left(est, 1), integer_digits - headroom


def trunc_div2(x: "torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.div(x, 2, rounding_mode="trunc")


def lut(si: float, zi: int, zo: int, is_tanh: bool) -> np.ndarray:
    """The int8 table TFLM's LOGISTIC/TANH Prepare builds (input rescaled to Q4.27, gemmlowp function)."""
    from tinyprec.emulator.fixedpoint import logistic, mbqm, rdbpot, tanh

    frac, left_shift = math.frexp(si * float(1 << 27))
    mult = round_half_away(frac * (1 << 31))
    if mult == 1 << 31:
        mult = -(1 << 31)  # static_cast<int32_t> of 2**31 on the MCU
    radius = math.floor(15.0 * (1 << 27) / (2.0 ** left_shift))
    out = np.empty(256, np.int64)
    for i in range(256):
        v = i - 128 - zi
        if v <= -radius:
            out[i] = -128
        elif v >= radius:
            out[i] = 127
        else:
            q4 = mbqm(v, mult, left_shift, False)
            r = rdbpot(tanh(q4, 4), 24) if is_tanh else rdbpot(logistic(q4, 4), 23) - 128
            out[i] = min(max(r, -128), 127)
    return out
