"""16x8 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: int16 activations, int8 weights, int64 bias.

The prepare steps in :mod:`conv` check the op and compute the per-channel multipliers as for int8;
these builders take them and return the int16 ``run``. Sums are exact float64 GEMMs on the raw int16
values (every partial sum is below 2**53: 32768 * 127 * taps), the input zero point is 0 (so padding taps
add nothing, as skipping them does in TFLM), and :func:`kernels16.requant64` applies the int64 bias and
TFLM's reduced-multiplier requantization.
"""

from __future__ import annotations

import numpy as np

from tinyprec.emulator import kernels16
from tinyprec.emulator.common import Geometry, Prepared
from tinyprec.emulator.int16 import gemm_requant, im2col64
from tinyprec.ir import Conv2DOptions, DepthwiseConv2DOptions


def _bias(bias: np.ndarray | None, oc: int) -> np.ndarray:
    return np.ascontiguousarray(bias if bias is not None else np.zeros(oc, np.int64), dtype=np.int64)


def conv2d(wd: np.ndarray, bias: np.ndarray | None, mult: np.ndarray, shift: np.ndarray, lo: int, hi: int,
           opts: Conv2DOptions, geo: Geometry, groups: int) -> Prepared:
    oc, kh, kw, cin_f = wd.shape
    per_group = oc // groups
    rows = wd.reshape(oc, -1).astype(np.float64)
    mats = [np.ascontiguousarray(rows[g * per_group:(g + 1) * per_group].T) for g in range(groups)]
    red = kernels16.reduced_multipliers(mult, shift)
    b = _bias(bias, oc)
    sh, sw, dh, dw = opts.stride_h, opts.stride_w, opts.dilation_h, opts.dilation_w
    pointwise = kh == kw == 1 and sh == sw == 1 and groups == 1

    def run(args: list[np.ndarray]) -> np.ndarray:
        xb = args[0]
        n = xb.shape[0]
        if pointwise:
            acc = xb.reshape(-1, xb.shape[-1]).astype(np.float64) @ mats[0]
        else:
            cols = im2col64(xb, kh, kw, sh, sw, dh, dw, geo.pad_h, geo.pad_w, geo.out_h, geo.out_w)
            if groups == 1:
                acc = cols @ mats[0]
            else:
                width = kh * kw * cin_f
                cols = cols.reshape(-1, kh * kw, groups, cin_f)
                acc = np.concatenate([cols[:, :, g, :].reshape(-1, width) @ mats[g] for g in range(groups)], axis=1)
        return gemm_requant(np.ascontiguousarray(acc), b, red, lo, hi).reshape(n, geo.out_h, geo.out_w, oc)

    scratch = geo.out_h * geo.out_w * (kh * kw * cin_f * groups * 12 + oc * 10)
    return Prepared(run, macs=geo.out_h * geo.out_w * oc * kh * kw * cin_f, scratch_per_sample=scratch)


def depthwise(filt: np.ndarray, bias: np.ndarray | None, mult: np.ndarray, shift: np.ndarray, lo: int, hi: int,
              opts: DepthwiseConv2DOptions, geo: Geometry) -> Prepared:
    kh, kw, oc = filt.shape
    red = kernels16.reduced_multipliers(mult, shift)
    b = _bias(bias, oc)

    def run(args: list[np.ndarray]) -> np.ndarray:
        return kernels16.depthwise16(np.ascontiguousarray(args[0]), filt, b, red[0], red[1], lo, hi, opts.stride_h,
                                     opts.stride_w, opts.dilation_h, opts.dilation_w, geo.pad_h, geo.pad_w,
                                     geo.out_h, geo.out_w, opts.depth_multiplier)

    return Prepared(run, macs=geo.out_h * geo.out_w * oc * kh * kw)


def fully_connected(wd: np.ndarray, bias: np.ndarray | None, mult: np.ndarray, shift: np.ndarray, lo: int, hi: int,
                    depth: int, out_sample: tuple[int, ...], rows_per_sample: int) -> Prepared:
    oc = wd.shape[0]
    mat = np.ascontiguousarray(wd.T.astype(np.float64))
    red = kernels16.reduced_multipliers(mult, shift)
    b = _bias(bias, oc)

    def run(args: list[np.ndarray]) -> np.ndarray:
        xb = args[0]
        acc = xb.reshape(-1, depth).astype(np.float64) @ mat
        return gemm_requant(acc, b, red, lo, hi).reshape((xb.shape[0], *out_sample))

    return Prepared(run, macs=rows_per_sample * oc * depth)
