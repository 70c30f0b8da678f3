"""Quantization parameters and the fixed-point multiplier encoding TFLM uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class QParams:
    """Affine quantization: real = scale * (q - zero_point).

    ``scale`` is float32 and ``zero_point`` int64, each of shape (1,) for per-tensor
    or (channels,) for per-channel along ``axis`` (the TFLite ``quantized_dimension``).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        zp = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if zp.size == 1 and scale.size > 1:
            zp = np.full(scale.shape, int(zp[0]), dtype=np.int64)
        assert scale.ndim == 1 and scale.shape == zp.shape, (scale.shape, zp.shape)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)

    @staticmethod
    def per_tensor(scale: float, zero_point: int) -> "QParams":
        return QParams(np.array([scale], np.float32), np.array([zero_point], np.int64), None)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1 or self.axis is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QParams):
            return NotImplemented
        return (
            self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def __hash__(self) -> int:
        return hash((self.axis, self.scale.tobytes(), self.zero_point.tobytes()))


def round_half_away(x: float) -> int:
    """std::round / TfLiteRound: halves go away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real_multiplier: float, single_rounding: bool = False) -> tuple[int, int]:
    """Encode a positive real multiplier as (int32 q31 multiplier, shift), as TFLM's QuantizeMultiplier.

    ``real ~= multiplier * 2**(shift - 31)``; a positive shift is a left shift.

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(0.0)
    (0, 0)
    """
    if real_multiplier == 0.0:
        return 0, 0
    frac, shift = math.frexp(real_multiplier)
    q = round_half_away(frac * (1 << 31))
    assert q <= (1 << 31)
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    if single_rounding and shift > 30:
        shift, q = 30, (1 << 31) - 1
    return int(q), int(shift)
