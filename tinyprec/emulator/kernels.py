"""Batched integer loops of the emulator, compiled with numba (cached on disk, GIL released).

Each loop does, for a whole batch, what one TFLM reference kernel does for one sample; the per-op
constants (multipliers, shifts, offsets, clamps) come prepared from :mod:`tinyprec.emulator.ops`.
Convolution sums arrive here already computed exactly (float GEMM on integers, see ``conv``).
The loops are serial: the interpreter runs chunks of the batch on a thread pool, which scales
without the spinning thread teams (OpenMP, BLAS) that fight each other on a busy machine.
"""

# The loop bodies mix numpy scalars and Python ints, which numba types precisely and mypy cannot.
# mypy: disable-error-code="arg-type,assignment"
from __future__ import annotations

import numba as nb
import numpy as np

from tinyprec.emulator.fastpath import requant_block, requant_constants
from tinyprec.emulator.fixedpoint import (
    exp_on_negative_values,
    get_reciprocal,
    mbqm,
    mbqm_greater_than_one,
    mbqm_smaller_than_one,
    rdbpot,
    rescale,
    srdhm,
    wrap32,
)

_jit = nb.njit(cache=True, nogil=True)
_pjit = _jit


@_jit
def requantize_exact_float(a: float, mult: float, left_scale: float, right_scale: float, single: bool) -> float:
    """MultiplyByQuantizedMultiplier in float64 arithmetic, exact when |a| * 2**left * mult < 2**52.

    Every intermediate is an integer times a power of two with at most 53 significant bits, so each
    float operation is exact and the roundings are TFLM's integer ones. Callers check the bound at
    prepare time (``exact_float``); otherwise the int64 path runs.
    """
    p = a * left_scale * mult
    if single:
        # (x * m + 2**(total - 1)) >> total with total = 31 - shift: floor, then half up.
        v = p * right_scale * (1.0 / 2147483648.0)
        q = np.floor(v)
        return q + (1.0 if v - q >= 0.5 else 0.0)
    # SaturatingRoundingDoublingHighMul rounds half up (its nudge sends negative ties toward zero);
    # RoundingDivideByPOT rounds half away from zero.
    h = np.floor(p * (1.0 / 2147483648.0) + 0.5)
    v = h * right_scale
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


@_pjit
def requantize_acc(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                   out_zp: int, lo: int, hi: int, single: bool, exact_float: bool) -> np.ndarray:
    """(rows, channels) exact sums -> int8: + bias, per-channel multiply, + zero point, clamp.

    ``exact_float`` selects the float64 formulation (faster; the caller proved it exact) over int64.
    """
    rows, channels = acc.shape
    out = np.empty((rows, channels), np.int8)
    if exact_float:
        scale, offset, post = requant_constants(bias, mult, shift, single)
        requant_block(acc, out, scale, offset, post, out_zp, lo, hi, single)
        return out
    for r in range(rows):
        for c in range(channels):
            a = wrap32(np.int64(acc[r, c]) + bias[c])
            v = mbqm(a, mult[c], shift[c], single) + out_zp
            out[r, c] = min(max(v, lo), hi)
    return out


@_pjit
def requantize_flat(x: np.ndarray, mult: int, shift: int, out_zp: int, lo: int, hi: int,
                    single: bool) -> np.ndarray:
    """int64 values -> int8 with one multiplier (MEAN, QUANTIZE int8 -> int8)."""
    out = np.empty(x.size, np.int8)
    for i in range(x.size):
        v = mbqm(wrap32(x[i]), mult, shift, single) + out_zp
        out[i] = min(max(v, lo), hi)
    return out


@_pjit
def depthwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
              in_off: int, out_zp: int, lo: int, hi: int, stride_h: int, stride_w: int, dil_h: int,
              dil_w: int, pad_h: int, pad_w: int, out_h: int, out_w: int, depth_mult: int,
              single: bool, exact_float: bool) -> np.ndarray:
    """DEPTHWISE_CONV_2D on NHWC int8 with filter (KH, KW, C*M); taps outside the image are skipped."""
    n, in_h, in_w, in_c = x.shape
    kh, kw, out_c = w.shape
    out = np.empty((n, out_h, out_w, out_c), np.int8)
    off = np.int32(in_off)
    mf = mult.astype(np.float64)
    bf = bias.astype(np.float64)
    ls = np.empty(out_c, np.float64)
    rs = np.empty(out_c, np.float64)
    for c in range(out_c):
        ls[c] = 2.0 ** max(shift[c], 0)
        rs[c] = 2.0 ** min(shift[c], 0)
    for b in range(n):
        acc = np.empty(out_c, np.int32)
        for oy in range(out_h):
            for ox in range(out_w):
                acc[:] = 0
                for fy in range(kh):
                    iy = oy * stride_h - pad_h + dil_h * fy
                    if iy < 0 or iy >= in_h:
                        continue
                    for fx in range(kw):
                        ix = ox * stride_w - pad_w + dil_w * fx
                        if ix < 0 or ix >= in_w:
                            continue
                        if depth_mult == 1:
                            for c in range(in_c):
                                acc[c] += np.int32(w[fy, fx, c]) * (np.int32(x[b, iy, ix, c]) + off)
                        else:
                            for ic in range(in_c):
                                v = np.int32(x[b, iy, ix, ic]) + off
                                for m in range(depth_mult):
                                    oc = ic * depth_mult + m
                                    acc[oc] += np.int32(w[fy, fx, oc]) * v
                if exact_float:
                    for oc in range(out_c):
                        fv = requantize_exact_float(np.float64(acc[oc]) + bf[oc], mf[oc], ls[oc], rs[oc], single)
                        out[b, oy, ox, oc] = np.int8(min(max(fv + out_zp, lo), hi))
                else:
                    for oc in range(out_c):
                        a = wrap32(np.int64(acc[oc]) + bias[oc])
                        val = mbqm(a, mult[oc], shift[oc], single) + out_zp
                        out[b, oy, ox, oc] = min(max(val, lo), hi)
    return out


@_pjit
def pool(x: np.ndarray, fh: int, fw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
         out_h: int, out_w: int, lo: int, hi: int, is_max: bool) -> np.ndarray:
    """AVERAGE_POOL_2D (rounded integer mean of the taps inside the image) or MAX_POOL_2D."""
    n, in_h, in_w, c = x.shape
    out = np.empty((n, out_h, out_w, c), np.int8)
    acc = np.empty(c, np.int32)  # |sum| <= 128 * taps: int32 as in TFLM
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_h
            fy0, fy1 = max(0, -y0), min(fh, in_h - y0)
            for ox in range(out_w):
                x0 = ox * stride_w - pad_w
                fx0, fx1 = max(0, -x0), min(fw, in_w - x0)
                count = max(fy1 - fy0, 0) * max(fx1 - fx0, 0)
                acc[:] = -128 if is_max else 0
                for fy in range(fy0, fy1):  # channels innermost: contiguous, vectorized
                    for fx in range(fx0, fx1):
                        row = x[b, y0 + fy, x0 + fx]
                        if is_max:
                            for ch in range(c):
                                acc[ch] = max(acc[ch], np.int32(row[ch]))
                        else:
                            for ch in range(c):
                                acc[ch] += np.int32(row[ch])
                for ch in range(c):
                    v = np.int64(acc[ch])
                    if not is_max and count > 0:
                        half = count // 2
                        # C division truncates toward zero.
                        if v > 0:
                            v = (v + half) // count
                        else:
                            v = -((-(v - half)) // count)
                    out[b, oy, ox, ch] = min(max(v, lo), hi)
    return out


@_pjit
def add(x1: np.ndarray, x2: np.ndarray, off1: int, off2: int, left_shift: int, m1: int, s1: int, m2: int,
        s2: int, mo: int, so: int, out_zp: int, lo: int, hi: int, single: bool) -> np.ndarray:
    """ADD on equal-length flat int8 arrays (broadcast beforehand)."""
    out = np.empty(x1.size, np.int8)
    for i in range(x1.size):
        a = mbqm_smaller_than_one(wrap32((np.int64(x1[i]) + off1) << left_shift), m1, s1, single)
        b = mbqm_smaller_than_one(wrap32((np.int64(x2[i]) + off2) << left_shift), m2, s2, single)
        v = mbqm_smaller_than_one(wrap32(a + b), mo, so, single) + out_zp
        out[i] = min(max(v, lo), hi)
    return out


@_pjit
def mul(x1: np.ndarray, x2: np.ndarray, off1: int, off2: int, mult: int, shift: int, out_zp: int,
        lo: int, hi: int, single: bool) -> np.ndarray:
    """MUL on equal-length flat int8 arrays (broadcast beforehand)."""
    out = np.empty(x1.size, np.int8)
    for i in range(x1.size):
        p = wrap32((np.int64(x1[i]) + off1) * (np.int64(x2[i]) + off2))
        v = mbqm(p, mult, shift, single) + out_zp
        out[i] = min(max(v, lo), hi)
    return out


@_pjit
def softmax(x: np.ndarray, exp_raw: np.ndarray, exp_acc: np.ndarray, diff_min: int) -> np.ndarray:
    """int8 SOFTMAX over the last axis of (rows, depth); exp tables are indexed by -(x - row max)."""
    rows, depth = x.shape
    out = np.empty((rows, depth), np.int8)
    for r in range(rows):
        row_max = np.int64(-128)
        for c in range(depth):
            row_max = max(row_max, np.int64(x[r, c]))
        total = np.int64(0)
        for c in range(depth):
            diff = np.int64(x[r, c]) - row_max
            if diff >= diff_min:
                total = wrap32(total + exp_acc[-diff])
        scale, bits_over_unit = get_reciprocal(total, 12)
        exponent = bits_over_unit + 31 - 8
        for c in range(depth):
            diff = np.int64(x[r, c]) - row_max
            if diff >= diff_min:
                v = rdbpot(srdhm(scale, exp_raw[-diff]), exponent) - 128
                out[r, c] = min(max(v, -128), 127)
            else:
                out[r, c] = -128
    return out


@_jit
def softmax_exp_tables(multiplier: int, left_shift: int, single: bool) -> tuple[np.ndarray, np.ndarray]:
    """exp(beta * scale * d) in Q0.31 for d = 0, -1, ..., -255, and the same rescaled to Q12.19."""
    raw = np.empty(256, np.int64)
    acc = np.empty(256, np.int64)
    for k in range(256):
        rescaled = mbqm_greater_than_one(np.int64(-k), multiplier, left_shift, single)
        e = exp_on_negative_values(rescaled, 5)
        raw[k] = e
        acc[k] = rescale(e, 0, 12)
    return raw, acc
