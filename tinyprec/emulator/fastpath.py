"""Float fast paths of the emulator, compiled with numba: exact where the prepare step proved it.

* :func:`requant_block` is the float64 MultiplyByQuantizedMultiplier of
  :func:`tinyprec.emulator.kernels.requantize_exact_float` with the bias and the power-of-two factors
  folded into per-channel constants (:func:`requant_constants`), branch-free so LLVM vectorizes it.
* :func:`im2col_f32` gathers convolution windows straight into a float32 matrix (padding taps hold the
  input zero point), replacing numpy's pad + strided copy + dtype conversion.
* :func:`depthwise_f32` sums a depthwise convolution (multiplier 1) in float32 on a zero-padded,
  offset-added copy of each sample, then requantizes that sample's block.

The sums are integers below 2**24 (float32) and the requantization products below 2**52 (float64),
both checked at prepare time, so every float operation is exact and the results equal TFLM's.
numba's on-disk cache does not follow calls across modules: after editing a function here that
:mod:`tinyprec.emulator.kernels` calls (requant_block), touch kernels.py too.
"""

# mypy: disable-error-code="arg-type,assignment"
from __future__ import annotations

import numba as nb
import numpy as np

_jit = nb.njit(cache=True, nogil=True)


@_jit
def requant_constants(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                      single: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel float64 (scale, offset, post) for :func:`requant_block`.

    With L = 2**max(shift, 0) and R = 2**min(shift, 0): double rounding takes scale = mult * L * 2**-31,
    offset = bias * scale + 1/2, post = R; single rounding scale = mult * L * R * 2**-31,
    offset = bias * scale. Each is exact: the factors are powers of two, and the prepare-time bound
    keeps (sum + bias) * mult * L below 2**52.
    """
    channels = mult.size
    scale = np.empty(channels, np.float64)
    offset = np.empty(channels, np.float64)
    post = np.empty(channels, np.float64)
    for c in range(channels):
        left = 2.0 ** max(shift[c], 0)
        right = 2.0 ** min(shift[c], 0)
        if single:
            scale[c] = np.float64(mult[c]) * left * right * (1.0 / 2147483648.0)
            offset[c] = np.float64(bias[c]) * scale[c]
        else:
            scale[c] = np.float64(mult[c]) * left * (1.0 / 2147483648.0)
            offset[c] = np.float64(bias[c]) * scale[c] + 0.5
        post[c] = right
    return scale, offset, post


@_jit
def requant_block(acc: np.ndarray, out: np.ndarray, scale: np.ndarray, offset: np.ndarray, post: np.ndarray,
                  out_zp: int, lo: int, hi: int, single: bool) -> None:
    """(rows, channels) exact integer sums (any float/int dtype) -> int8 ``out``: + bias, TFLM's
    per-channel requantization (double or single rounding), + zero point, clamp.

    ``acc * scale + offset`` is exact: it is (sum + bias) * mult * 2**left, an integer below 2**52,
    times a power of two (plus 1/2), so it has at most 53 significant bits.
    """
    rows, channels = acc.shape
    flo, fhi, fzp = float(lo), float(hi), float(out_zp)
    for r in range(rows):
        a = acc[r]
        o = out[r]
        if single:
            for i in range(channels):
                c = np.uint64(i)
                # (x * m) >> (31 - shift) rounded half up: floor, then +1 at or above the half.
                v = np.float64(a[c]) * scale[c] + offset[c]
                q = np.floor(v)
                q = q + (1.0 if v - q >= 0.5 else 0.0) + fzp
                o[c] = np.int8(min(max(q, flo), fhi))
        else:
            for i in range(channels):
                c = np.uint64(i)
                # SaturatingRoundingDoublingHighMul (half up), then RoundingDivideByPOT (half away
                # from zero; v has under 32 significant bits, so v +- 1/2 is exact).
                v = np.floor(np.float64(a[c]) * scale[c] + offset[c]) * post[c]
                q = np.trunc(v + np.copysign(0.5, v)) + fzp
                o[c] = np.int8(min(max(q, flo), fhi))


@_jit
def requant_rows(acc: np.ndarray, scale: np.ndarray, offset: np.ndarray, post: np.ndarray, out_zp: int,
                 lo: int, hi: int, single: bool) -> np.ndarray:
    """:func:`requant_block` into a new (rows, channels) int8 array."""
    out = np.empty(acc.shape, np.int8)
    requant_block(acc, out, scale, offset, post, out_zp, lo, hi, single)
    return out


@_jit
def _padded_rows(x: np.ndarray, b: int, xp: np.ndarray, pad_h: int, pad_w: int, off: float) -> None:
    """Sample ``b`` of NHWC ``x`` as float32 (value + off) into the (rows, cols * C) buffer ``xp`` at
    (pad_h, pad_w); the rest of ``xp`` is left as it is (the caller's padding value)."""
    _, in_h, in_w, c = x.shape
    foff = np.float32(off)
    for iy in range(in_h):
        for ix in range(in_w):
            base = np.uint64((pad_w + ix) * c)
            for ch in range(c):
                xp[pad_h + iy, base + np.uint64(ch)] = np.float32(x[b, iy, ix, ch]) + foff


@_jit
def im2col_f32(x: np.ndarray, kh: int, kw: int, stride_h: int, stride_w: int, dil_h: int, dil_w: int,
               pad_h: int, pad_w: int, out_h: int, out_w: int, pad_value: int) -> np.ndarray:
    """NHWC int8 -> float32 (N*out_h*out_w, kh*kw*C), columns ordered (ky, kx, c) like an OHWI filter;
    taps outside the image hold ``pad_value``."""
    n, in_h, in_w, c = x.shape
    buf_h = max((out_h - 1) * stride_h + (kh - 1) * dil_h + 1, pad_h + in_h)
    buf_w = max((out_w - 1) * stride_w + (kw - 1) * dil_w + 1, pad_w + in_w)
    xp = np.full((buf_h, buf_w * c), np.float32(pad_value), np.float32)
    cols = np.empty((n * out_h * out_w, kh * kw * c), np.float32)
    run = np.uint64(kw * c if dil_w == 1 else c)  # contiguous elements per copy
    copies = 1 if dil_w == 1 else kw
    r = 0
    for b in range(n):
        _padded_rows(x, b, xp, pad_h, pad_w, 0.0)
        for oy in range(out_h):
            for ox in range(out_w):
                k = np.uint64(0)
                for fy in range(kh):
                    src = xp[oy * stride_h + dil_h * fy]
                    for j in range(copies):
                        start = np.uint64((ox * stride_w + j * dil_w) * c)
                        for i in range(run):
                            cols[r, k + i] = src[start + i]
                        k += run
                r += 1
    return cols


@_jit
def _taps_3x3(acc: np.ndarray, xp: np.ndarray, wt: np.ndarray, stride_h: int, dil_h: int, dil_w: int,
              c: int) -> None:
    """acc[oy, ox*C + ch] = 3x3 window sum (stride_w 1) on padded rows; wt is (9, out_w*C)."""
    out_h, span = acc.shape
    d1 = np.uint64(dil_w * c)
    d2 = np.uint64(2 * dil_w * c)
    for oy in range(out_h):
        y = oy * stride_h
        r0 = xp[y]
        r1 = xp[y + dil_h]
        r2 = xp[y + 2 * dil_h]
        a = acc[oy]
        for i in range(span):
            j = np.uint64(i)
            a[j] = (wt[0, j] * r0[j] + wt[1, j] * r0[j + d1] + wt[2, j] * r0[j + d2]
                    + wt[3, j] * r1[j] + wt[4, j] * r1[j + d1] + wt[5, j] * r1[j + d2]
                    + wt[6, j] * r2[j] + wt[7, j] * r2[j + d1] + wt[8, j] * r2[j + d2])


@_jit
def _taps_rows(acc: np.ndarray, xp: np.ndarray, wt: np.ndarray, kh: int, kw: int, stride_h: int,
               dil_h: int, dil_w: int, c: int) -> None:
    """:func:`_taps_3x3` for any window (stride_w 1); wt is (kh*kw, out_w*C)."""
    out_h, span = acc.shape
    for oy in range(out_h):
        a = acc[oy]
        for i in range(span):
            a[np.uint64(i)] = 0.0
        for fy in range(kh):
            row = xp[oy * stride_h + dil_h * fy]
            for fx in range(kw):
                w = wt[fy * kw + fx]
                base = np.uint64(fx * dil_w * c)
                for i in range(span):
                    j = np.uint64(i)
                    a[j] += w[j] * row[base + j]


@_jit
def _taps_pixels(acc: np.ndarray, xp: np.ndarray, wf: np.ndarray, out_w: int, stride_h: int,
                 stride_w: int, dil_h: int, dil_w: int) -> None:
    """Window sums pixel by pixel (any stride); acc is (out_h, out_w*C), wf (kh, kw, C)."""
    out_h = acc.shape[0]
    kh, kw, c = wf.shape
    for oy in range(out_h):
        a = acc[oy]
        for ox in range(out_w):
            o = np.uint64(ox * c)
            for ch in range(c):
                a[o + np.uint64(ch)] = 0.0
            for fy in range(kh):
                row = xp[oy * stride_h + dil_h * fy]
                for fx in range(kw):
                    base = np.uint64((ox * stride_w + fx * dil_w) * c)
                    for ch in range(c):
                        u = np.uint64(ch)
                        a[o + u] += wf[fy, fx, ch] * row[base + u]


@_jit
def depthwise_f32(x: np.ndarray, w: np.ndarray, scale: np.ndarray, offset: np.ndarray, post: np.ndarray,
                  in_off: int, out_zp: int, lo: int, hi: int, stride_h: int, stride_w: int, dil_h: int,
                  dil_w: int, pad_h: int, pad_w: int, out_h: int, out_w: int, single: bool) -> np.ndarray:
    """DEPTHWISE_CONV_2D, multiplier 1, filter (KH, KW, C): float32 sums of w * (x + in_off), where
    taps outside the image add 0 (TFLM skips them), then :func:`requant_block` per sample.

    With stride_w 1 each output row is a run of out_w*C contiguous sums over whole padded input rows
    (the filter tiled along it), which vectorizes; 3x3 windows are unrolled.
    """
    n, in_h, in_w, c = x.shape
    kh, kw, _ = w.shape
    wf = w.astype(np.float32)
    buf_h = max((out_h - 1) * stride_h + (kh - 1) * dil_h + 1, pad_h + in_h)
    buf_w = max((out_w - 1) * stride_w + (kw - 1) * dil_w + 1, pad_w + in_w)
    xp = np.zeros((buf_h, buf_w * c), np.float32)  # the border stays 0: skipped taps
    span = out_w * c
    wt = np.empty((kh * kw, span), np.float32)  # each filter tap tiled out_w times
    for t in range(kh * kw):
        for j in range(span):
            wt[t, j] = wf[t // kw, t % kw, j % c]
    acc = np.empty((out_h, span), np.float32)
    out = np.empty((n, out_h * out_w, c), np.int8)
    for b in range(n):
        _padded_rows(x, b, xp, pad_h, pad_w, in_off)
        if stride_w != 1:
            _taps_pixels(acc, xp, wf, out_w, stride_h, stride_w, dil_h, dil_w)
        elif kh == 3 and kw == 3:
            _taps_3x3(acc, xp, wt, stride_h, dil_h, dil_w, c)
        else:
            _taps_rows(acc, xp, wt, kh, kw, stride_h, dil_h, dil_w, c)
        requant_block(acc.reshape(out_h * out_w, c), out[b], scale, offset, post, out_zp, lo, hi, single)
    return out.reshape((n, out_h, out_w, c))
