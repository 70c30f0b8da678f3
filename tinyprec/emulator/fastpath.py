"""Float fast paths of the emulator, compiled with numba: exact where the prepare step proved it.

* :func:`requant_block` is the float64 MultiplyByQuantizedMultiplier of
  :func:`tinyprec.emulator.kernels.requantize_exact_float` written branch-free over a row of channels,
  so LLVM vectorizes it. Its per-channel constants come from :func:`requant_constants`.
* :func:`im2col_f32` gathers convolution windows straight into a float32 matrix (padding taps hold the
  input zero point), replacing numpy's pad + strided copy + dtype conversion.
* :func:`depthwise_f32` sums a depthwise convolution (multiplier 1) in float32 on a zero-padded,
  offset-added copy of each sample, then requantizes that sample's block.

The sums are integers below 2**24 (float32) and the requantization products below 2**52 (float64),
both checked at prepare time, so every float operation is exact and the results equal TFLM's.
"""

# mypy: disable-error-code="arg-type,assignment"
from __future__ import annotations

import numba as nb
import numpy as np

_jit = nb.njit(cache=True, nogil=True)


def requant_constants(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-channel float64 (bias, multiplier * 2**left shift, 2**-right shift * 2**-31) for requant_block.

    Both products are exact: one factor is a power of two.
    """
    shift = np.asarray(shift, np.int64)
    bf = np.ascontiguousarray(bias, np.float64)
    lm = np.exp2(np.maximum(shift, 0).astype(np.float64)) * np.asarray(mult, np.float64)
    rs = np.exp2(np.minimum(shift, 0).astype(np.float64) - 31.0)
    return bf, np.ascontiguousarray(lm), np.ascontiguousarray(rs)


@_jit
def requant_block(acc: np.ndarray, out: np.ndarray, bf: np.ndarray, lm: np.ndarray, rs: np.ndarray,
                  out_zp: int, lo: int, hi: int, single: bool) -> None:
    """(rows, channels) exact integer sums (any float/int dtype) -> int8 ``out``: + bias, TFLM's
    per-channel requantization (double or single rounding), + zero point, clamp."""
    rows, channels = acc.shape
    flo, fhi, fzp = float(lo), float(hi), float(out_zp)
    if single:
        for r in range(rows):
            for c in range(channels):
                # (x * m) >> (31 - shift) rounded half up: floor, then +1 at or above the half.
                v = (np.float64(acc[r, c]) + bf[c]) * lm[c] * rs[c]
                q = np.floor(v)
                q = q + (1.0 if v - q >= 0.5 else 0.0) + fzp
                out[r, c] = np.int8(min(max(q, flo), fhi))
    else:
        for r in range(rows):
            for c in range(channels):
                # SaturatingRoundingDoublingHighMul (half up), then RoundingDivideByPOT (half away from 0).
                h = np.floor((np.float64(acc[r, c]) + bf[c]) * lm[c] * (1.0 / 2147483648.0) + 0.5)
                v = h * (rs[c] * 2147483648.0)
                q = np.copysign(np.floor(np.abs(v) + 0.5), v) + fzp
                out[r, c] = np.int8(min(max(q, flo), fhi))


@_jit
def requant_rows(acc: np.ndarray, bf: np.ndarray, lm: np.ndarray, rs: np.ndarray, out_zp: int, lo: int,
                 hi: int, single: bool) -> np.ndarray:
    """:func:`requant_block` into a new (rows, channels) int8 array."""
    out = np.empty(acc.shape, np.int8)
    requant_block(acc, out, bf, lm, rs, out_zp, lo, hi, single)
    return out


@_jit
def im2col_f32(x: np.ndarray, kh: int, kw: int, stride_h: int, stride_w: int, dil_h: int, dil_w: int,
               pad_h: int, pad_w: int, out_h: int, out_w: int, pad_value: int) -> np.ndarray:
    """NHWC int8 -> float32 (N*out_h*out_w, kh*kw*C), columns ordered (ky, kx, c) like an OHWI filter."""
    n, in_h, in_w, c = x.shape
    cols = np.empty((n * out_h * out_w, kh * kw * c), np.float32)
    fill = np.float32(pad_value)
    r = 0
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                k = 0
                for fy in range(kh):
                    iy = oy * stride_h - pad_h + dil_h * fy
                    for fx in range(kw):
                        ix = ox * stride_w - pad_w + dil_w * fx
                        if 0 <= iy < in_h and 0 <= ix < in_w:
                            for ch in range(c):
                                cols[r, k + ch] = np.float32(x[b, iy, ix, ch])
                        else:
                            for ch in range(c):
                                cols[r, k + ch] = fill
                        k += c
                r += 1
    return cols


@_jit
def depthwise_f32(x: np.ndarray, w: np.ndarray, bf: np.ndarray, lm: np.ndarray, rs: np.ndarray,
                  in_off: int, out_zp: int, lo: int, hi: int, stride_h: int, stride_w: int, dil_h: int,
                  dil_w: int, pad_h: int, pad_w: int, out_h: int, out_w: int, single: bool) -> np.ndarray:
    """DEPTHWISE_CONV_2D, multiplier 1, filter (KH, KW, C): float32 sums of w * (x + in_off), where
    taps outside the image add 0 (TFLM skips them), then :func:`requant_block` per sample."""
    n, in_h, in_w, c = x.shape
    kh, kw, _ = w.shape
    wf = w.astype(np.float32)
    off = np.float32(in_off)
    buf_h = max((out_h - 1) * stride_h + (kh - 1) * dil_h + 1, pad_h + in_h)
    buf_w = max((out_w - 1) * stride_w + (kw - 1) * dil_w + 1, pad_w + in_w)
    xp = np.zeros((buf_h, buf_w, c), np.float32)  # the border stays 0: skipped taps
    acc = np.empty((out_h * out_w, c), np.float32)
    out = np.empty((n, out_h * out_w, c), np.int8)
    for b in range(n):
        for iy in range(in_h):
            for ix in range(in_w):
                for ch in range(c):
                    xp[pad_h + iy, pad_w + ix, ch] = np.float32(x[b, iy, ix, ch]) + off
        for oy in range(out_h):
            for ox in range(out_w):
                row = oy * out_w + ox
                for ch in range(c):
                    acc[row, ch] = 0.0
                for fy in range(kh):
                    py = oy * stride_h + dil_h * fy
                    for fx in range(kw):
                        px = ox * stride_w + dil_w * fx
                        for ch in range(c):
                            acc[row, ch] += wf[fy, fx, ch] * xp[py, px, ch]
        requant_block(acc, out[b], bf, lm, rs, out_zp, lo, hi, single)
    return out.reshape((n, out_h, out_w, c))
