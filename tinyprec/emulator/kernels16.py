"""Batched int16 loops of the emulator (16x8 quantization), compiled with numba like :mod:`kernels`.

TFLM's int16 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED accumulate in int64 (INT64 bias) and requantize
with the int64 MultiplyByQuantizedMultiplier: the q31 multiplier reduced to 16 bits (rounded), one
rounding shift, the same in double- and single-rounding builds. ADD, MUL, pooling and requantization use
the int32 arithmetic of the int8 kernels with int16 clamps. Each loop writes into an ``out`` array, so
one compiled loop serves every output type.
"""

# mypy: disable-error-code="arg-type,assignment,return-value"
from __future__ import annotations

import numba as nb
import numpy as np

from tinyprec.emulator.fixedpoint import mbqm, mbqm_smaller_than_one, wrap32

_jit = nb.njit(cache=True, nogil=True)


def reduced_multipliers(mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(16-bit multiplier, total right shift) of TFLM's int64 MultiplyByQuantizedMultiplier, per channel."""
    m = np.asarray(mult, np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF).astype(np.int64)
    return reduced, (15 - np.asarray(shift, np.int64)).astype(np.int64)


@_jit
def requant64(acc: np.ndarray, bias: np.ndarray, rmult: np.ndarray, rshift: np.ndarray, lo: int, hi: int,
              out: np.ndarray) -> None:
    """(rows, channels) exact sums (integer-valued floats or ints) + int64 bias -> ``out``: reduced
    multiply, round half up, shift, wrap to int32, clamp (output zero point 0)."""
    rows, channels = acc.shape
    for r in range(rows):
        for c in range(channels):
            a = np.int64(acc[r, c]) + bias[c]
            v = wrap32((a * rmult[c] + (np.int64(1) << (rshift[c] - 1))) >> rshift[c])
            out[r, c] = min(max(v, lo), hi)


@_jit
def depthwise16(x: np.ndarray, w: np.ndarray, bias: np.ndarray, rmult: np.ndarray, rshift: np.ndarray,
                lo: int, hi: int, stride_h: int, stride_w: int, dil_h: int, dil_w: int, pad_h: int, pad_w: int,
                out_h: int, out_w: int, depth_mult: int) -> np.ndarray:
    """int16 DEPTHWISE_CONV_2D, filter (KH, KW, C*M) int8, int64 sums; taps outside the image skipped."""
    n, in_h, in_w, in_c = x.shape
    kh, kw, out_c = w.shape
    out = np.empty((n, out_h, out_w, out_c), np.int16)
    acc = np.empty(out_c, np.int64)
    for b in range(n):
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
                                acc[c] += np.int64(w[fy, fx, c]) * np.int64(x[b, iy, ix, c])
                        else:
                            for ic in range(in_c):
                                v = np.int64(x[b, iy, ix, ic])
                                for m in range(depth_mult):
                                    oc = ic * depth_mult + m
                                    acc[oc] += np.int64(w[fy, fx, oc]) * v
                for oc in range(out_c):
                    a = acc[oc] + bias[oc]
                    v = wrap32((a * rmult[oc] + (np.int64(1) << (rshift[oc] - 1))) >> rshift[oc])
                    out[b, oy, ox, oc] = min(max(v, lo), hi)
    return out


@_jit
def pool_into(x: np.ndarray, fh: int, fw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
              lo: int, hi: int, is_max: bool, out: np.ndarray) -> None:
    """AVERAGE_POOL_2D (rounded integer mean of the taps inside the image) or MAX_POOL_2D into ``out``."""
    n, in_h, in_w, c = x.shape
    _, out_h, out_w, _ = out.shape
    acc = np.empty(c, np.int64)
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_h
            fy0, fy1 = max(0, -y0), min(fh, in_h - y0)
            for ox in range(out_w):
                x0 = ox * stride_w - pad_w
                fx0, fx1 = max(0, -x0), min(fw, in_w - x0)
                count = max(fy1 - fy0, 0) * max(fx1 - fx0, 0)
                acc[:] = -(1 << 31) if is_max else 0
                for fy in range(fy0, fy1):
                    for fx in range(fx0, fx1):
                        row = x[b, y0 + fy, x0 + fx]
                        if is_max:
                            for ch in range(c):
                                acc[ch] = max(acc[ch], np.int64(row[ch]))
                        else:
                            for ch in range(c):
                                acc[ch] += np.int64(row[ch])
                for ch in range(c):
                    v = acc[ch]
                    if not is_max and count > 0:
                        half = count // 2
                        if v > 0:  # C division truncates toward zero
                            v = (v + half) // count
                        else:
                            v = -((-(v - half)) // count)
                    out[b, oy, ox, ch] = min(max(v, lo), hi)


@_jit
def add_into(x1: np.ndarray, x2: np.ndarray, off1: int, off2: int, left_shift: int, m1: int, s1: int, m2: int,
             s2: int, mo: int, so: int, out_zp: int, lo: int, hi: int, single: bool, out: np.ndarray) -> None:
    """ADD on equal-length flat arrays (broadcast beforehand), TFLM's general-scale arithmetic."""
    for i in range(x1.size):
        a = mbqm_smaller_than_one(wrap32((np.int64(x1[i]) + off1) << left_shift), m1, s1, single)
        b = mbqm_smaller_than_one(wrap32((np.int64(x2[i]) + off2) << left_shift), m2, s2, single)
        v = mbqm_smaller_than_one(wrap32(a + b), mo, so, single) + out_zp
        out[i] = min(max(v, lo), hi)


@_jit
def mul_into(x1: np.ndarray, x2: np.ndarray, off1: int, off2: int, mult: int, shift: int, out_zp: int,
             lo: int, hi: int, single: bool, out: np.ndarray) -> None:
    """MUL on equal-length flat arrays (broadcast beforehand)."""
    for i in range(x1.size):
        p = wrap32((np.int64(x1[i]) + off1) * (np.int64(x2[i]) + off2))
        v = mbqm(p, mult, shift, single) + out_zp
        out[i] = min(max(v, lo), hi)


@_jit
def requantize_into(x: np.ndarray, mult: int, shift: int, out_zp: int, lo: int, hi: int, single: bool,
                    out: np.ndarray) -> None:
    """int64 values -> ``out`` with one multiplier (MEAN, QUANTIZE tables)."""
    for i in range(x.size):
        v = mbqm(wrap32(x[i]), mult, shift, single) + out_zp
        out[i] = min(max(v, lo), hi)


@_jit
def lut_lookup(value: int, lut: np.ndarray) -> int:
    """TFLM's int16 LUTLookup: 512 base entries indexed by the high 9 bits, linear interpolation on 7."""
    index = 256 + (value >> 7)
    offset = value & 0x7F
    base = np.int64(lut[index])
    slope = np.int64(lut[index + 1]) - base
    return ((base + ((slope * offset + 64) >> 7)) + 32768) % 65536 - 32768


@_jit
def softmax16(x: np.ndarray, exp_lut: np.ndarray, recip_lut: np.ndarray, mult: int, shift: int,
              single: bool) -> np.ndarray:
    """int16 SOFTMAX over the last axis of (rows, depth): exp and 1/(1+x) by table, output scale 1/32768."""
    rows, depth = x.shape
    out = np.empty((rows, depth), np.int16)
    exps = np.empty(depth, np.int64)
    for r in range(rows):
        top = np.int64(-32768)
        for c in range(depth):
            top = max(top, np.int64(x[r, c]))
        total = np.int64(0)
        for c in range(depth):
            diff = mbqm(np.int64(x[r, c]) - top, mult, shift, single) + 32767
            e = lut_lookup(min(max(diff, -32768), 32767), exp_lut)
            exps[c] = e
            total = wrap32(total + e)
        # CountLeadingZeros of the uint32 sum.
        u = total & 0xFFFFFFFF
        headroom = 32
        while u:
            u >>= 1
            headroom -= 1
        shifted = ((total << (headroom - 1)) + (1 << 13)) >> 14
        sym = min(max(shifted - ((1 << 15) + (1 << 16)), -32768), 32767)
        recip = lut_lookup(sym, recip_lut)
        right = 31 - headroom
        for c in range(depth):
            v = (exps[c] * recip + (np.int64(1) << (right - 1))) >> right
            out[r, c] = min(max(v, 0), 32767)
    return out
