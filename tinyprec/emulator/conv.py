"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: exact integer sums, then TFLM's requantization.

CONV_2D and FULLY_CONNECTED sum as a float GEMM on the raw int8 values: float32 when every partial sum
is provably below 2**24 in magnitude (128 * sum|w| per output channel), float64 otherwise (exact below
2**53). The input offset is folded into the bias (sum w*(x - zp) = sum w*x - zp*sum w), and padding taps
hold x = zp, so they contribute nothing, as skipping them does in TFLM. The sums are exact integers,
so the result is what TFLM's int32 loops compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyprec.emulator import fastpath, kernels
from tinyprec.emulator.common import Prepared, fail, per_tensor, pool_geometry, sample_shape
from tinyprec.emulator.common import act_range
from tinyprec.ir import (
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Graph,
    Op,
    Tensor,
    quantize_multiplier,
)

_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53


def _weights(op: Op, graph: Graph) -> tuple[Tensor, np.ndarray, np.ndarray | None]:
    name = op.inputs[1]
    w = graph.tensors[name] if name is not None else None
    if w is None or w.data is None or w.dtype not in (DType.INT8, DType.INT4) or w.qparams is None:
        raise fail(op, "weights must be a constant int8 or int4 tensor with quantization parameters")
    bias = None
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    want = DType.INT64 if x.dtype is DType.INT16 else DType.INT32
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        b = graph.tensors[op.inputs[2]]
        if b.data is None or b.dtype is not want:
            raise fail(op, f"bias '{b.name}' must be a constant {want.value} tensor ({x.dtype.value} input)")
        bias = b.data.astype(np.int64).reshape(-1)
    return w, w.data.astype(np.int64), bias


def _channel_multipliers(op: Op, in_scale: float, w: Tensor, out_scale: float, channels: int,
                         single: bool) -> tuple[np.ndarray, np.ndarray]:
    """TFLM PopulateConvolutionQuantizationParams: per channel, in double precision."""
    assert w.qparams is not None
    scales = w.qparams.scale
    if scales.size not in (1, channels):
        raise fail(op, f"{scales.size} weight scales for {channels} output channels")
    mult = np.empty(channels, np.int64)
    shift = np.empty(channels, np.int64)
    for c in range(channels):
        s = float(scales[c] if scales.size > 1 else scales[0])
        mult[c], shift[c] = quantize_multiplier(in_scale * s / out_scale, single)
    return mult, shift


def _float_type(op: Op, w_rows: np.ndarray, x_bound: int) -> type:
    """float32 when every partial sum is provably exact in float32, else float64."""
    bound = x_bound * int(np.abs(w_rows).sum(axis=1).max(initial=0))
    if bound < _F32_EXACT:
        return np.float32
    if bound < _F64_EXACT:
        return np.float64
    raise fail(op, "accumulator bound exceeds 2**53; the weights are not int8-sized")


def _float_requant_is_exact(w_rows: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                            x_bound: int) -> bool:
    """Whether the float64 requantization is exact for every reachable accumulator (see kernels)."""
    total = x_bound * np.abs(w_rows).sum(axis=1).astype(np.float64) + np.abs(bias).astype(np.float64)
    shifted = total * np.exp2(np.maximum(shift, 0))  # TFLM wraps x << left in int32; stay below that
    product = shifted * mult.astype(np.float64)
    return bool(shifted.max(initial=0) < 2.0**31 and product.max(initial=0) < 2.0**52)


def _requantizer(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, out_zp: int, lo: int, hi: int,
                 single: bool, exact_float: bool) -> Callable[[np.ndarray], np.ndarray]:
    """(rows, channels) exact sums -> int8, with the float64 constants computed once when exact."""
    if exact_float:
        scale, offset, post = fastpath.requant_constants(bias, mult, shift, single)
        return lambda acc: fastpath.requant_rows(acc, scale, offset, post, out_zp, lo, hi, single)
    return lambda acc: kernels.requantize_acc(acc, bias, mult, shift, out_zp, lo, hi, single, False)


def _conv_setup(op: Op, opts: Conv2DOptions | DepthwiseConv2DOptions, x: Tensor, y: Tensor, w: Tensor,
                bias: np.ndarray | None, kh: int, kw: int, oc: int, single: bool) -> tuple[Any, ...]:
    """What CONV_2D and DEPTHWISE_CONV_2D prepare alike: geometry and shape checks, zero points,
    per-channel multipliers and the activation range."""
    geo = pool_geometry(op, x.shape[1], x.shape[2], kh, kw, opts.stride_h, opts.stride_w, opts.dilation_h,
                        opts.dilation_w, opts.padding)
    if sample_shape(y) != (geo.out_h, geo.out_w, oc):
        raise fail(op, f"output shape {y.shape} does not match the convolution's {(1, geo.out_h, geo.out_w, oc)}")
    if bias is not None and bias.size != oc:
        raise fail(op, f"bias has {bias.size} values for {oc} output channels")
    si, zi = per_tensor(op, x)
    so, zo = per_tensor(op, y)
    mult, shift = _channel_multipliers(op, si, w, so, oc, single)
    lo, hi = act_range(op, opts.activation, so, zo, y.dtype)
    return geo, zi, zo, mult, shift, lo, hi


def prepare_conv2d(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, Conv2DOptions)
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    w, wd, bias = _weights(op, graph)
    if len(x.shape) != 4 or wd.ndim != 4:
        raise fail(op, f"input {x.shape} and filter {wd.shape} must be 4-D (NHWC, OHWI)")
    oc, kh, kw, cin_f = wd.shape
    cin = x.shape[3]
    if cin_f == 0 or cin % cin_f or oc % (cin // cin_f):
        raise fail(op, f"filter depth {cin_f} does not divide input depth {cin} into groups")
    groups = cin // cin_f
    geo, zi, zo, mult, shift, lo, hi = _conv_setup(op, opts, x, y, w, bias, kh, kw, oc, single)
    if x.dtype is DType.INT16:
        from tinyprec.emulator import conv16

        return conv16.conv2d(wd, bias, mult, shift, lo, hi, opts, geo, groups)
    rows = wd.reshape(oc, -1)
    ftype = _float_type(op, rows, 128)
    per_group = oc // groups
    # (groups, KH*KW*cin_f, per_group): im2col columns ordered (ky, kx, c) to match the OHWI filter.
    mats: list[np.ndarray] = [np.ascontiguousarray(rows[g * per_group:(g + 1) * per_group].T.astype(ftype)) for g in range(groups)]
    bias_v = (bias if bias is not None else np.zeros(oc, np.int64)) - zi * rows.sum(axis=1)
    exact_float = _float_requant_is_exact(rows, bias_v, mult, shift, 128)
    requant = _requantizer(bias_v, mult, shift, zo, lo, hi, single, exact_float)
    sh, sw, dh, dw = opts.stride_h, opts.stride_w, opts.dilation_h, opts.dilation_w
    pointwise = kh == kw == 1 and sh == sw == 1 and groups == 1
    in_h, in_w = x.shape[1], x.shape[2]
    need_h = (geo.out_h - 1) * sh + (kh - 1) * dh + 1
    need_w = (geo.out_w - 1) * sw + (kw - 1) * dw + 1
    pad_bottom = max(need_h - in_h - geo.pad_h, 0)
    pad_right = max(need_w - in_w - geo.pad_w, 0)

    def run(args: list[np.ndarray]) -> np.ndarray:
        xb = args[0]
        n = xb.shape[0]
        if pointwise:
            acc = xb.reshape(-1, cin).astype(ftype) @ mats[0]
        elif groups == 1 and ftype is np.float32:
            cols = fastpath.im2col_f32(xb, kh, kw, sh, sw, dh, dw, geo.pad_h, geo.pad_w, geo.out_h, geo.out_w, zi)
            acc = cols @ mats[0]
        else:
            xp = np.pad(xb, ((0, 0), (geo.pad_h, pad_bottom), (geo.pad_w, pad_right), (0, 0)), constant_values=zi)
            s = xp.strides
            win = np.lib.stride_tricks.as_strided(
                xp, (n, geo.out_h, geo.out_w, kh, kw, cin),
                (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
            if groups == 1:
                acc = win.reshape(-1, kh * kw * cin).astype(ftype) @ mats[0]
            else:
                acc = np.concatenate(
                    [win[..., g * cin_f:(g + 1) * cin_f].reshape(-1, kh * kw * cin_f).astype(ftype) @ mats[g]
                     for g in range(groups)], axis=1)
        out = requant(np.ascontiguousarray(acc))
        return out.reshape(n, geo.out_h, geo.out_w, oc)

    itemsize = np.dtype(ftype).itemsize
    scratch = geo.out_h * geo.out_w * (kh * kw * cin * (1 + itemsize) + oc * itemsize)
    return Prepared(run, macs=geo.out_h * geo.out_w * oc * kh * kw * cin_f, scratch_per_sample=scratch)


def prepare_depthwise(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, DepthwiseConv2DOptions)
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    w, wd, bias = _weights(op, graph)
    if len(x.shape) != 4 or wd.ndim != 4 or wd.shape[0] != 1:
        raise fail(op, f"input {x.shape} must be NHWC and filter {wd.shape} 1HWC")
    _, kh, kw, oc = wd.shape
    cin = x.shape[3]
    dm = opts.depth_multiplier
    if cin * dm != oc:
        raise fail(op, f"input depth {cin} x depth multiplier {dm} != filter depth {oc}")
    geo, zi, zo, mult, shift, lo, hi = _conv_setup(op, opts, x, y, w, bias, kh, kw, oc, single)
    filt = np.ascontiguousarray(wd[0].astype(np.int8))
    if x.dtype is DType.INT16:
        from tinyprec.emulator import conv16

        return conv16.depthwise(filt, bias, mult, shift, lo, hi, opts, geo)
    bias_v = bias if bias is not None else np.zeros(oc, np.int64)
    exact_float = _float_requant_is_exact(wd[0].reshape(-1, oc).T, bias_v, mult, shift, 255)

    # float32 sums are exact when every partial sum stays below 2**24 (|x - zp| <= 255).
    f32_sums = dm == 1 and exact_float and 255 * int(np.abs(wd[0]).sum(axis=(0, 1)).max(initial=0)) < _F32_EXACT

    scale, offset, post = fastpath.requant_constants(bias_v, mult, shift, single)

    def run(args: list[np.ndarray]) -> np.ndarray:
        x_in = np.ascontiguousarray(args[0])
        if f32_sums:
            return fastpath.depthwise_f32(x_in, filt, scale, offset, post, -zi, zo, lo, hi, opts.stride_h, opts.stride_w,
                                          opts.dilation_h, opts.dilation_w, geo.pad_h, geo.pad_w, geo.out_h,
                                          geo.out_w, single)
        return kernels.depthwise(x_in, filt, bias_v, mult, shift, -zi, zo, lo, hi, opts.stride_h, opts.stride_w,
                                 opts.dilation_h, opts.dilation_w, geo.pad_h, geo.pad_w, geo.out_h, geo.out_w, dm,
                                 single, exact_float)

    return Prepared(run, macs=geo.out_h * geo.out_w * oc * kh * kw)


def prepare_fully_connected(op: Op, graph: Graph, single: bool) -> Prepared:
    opts = op.options
    assert isinstance(opts, FullyConnectedOptions)
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    y = graph.tensors[op.outputs[0]]
    w, wd, bias = _weights(op, graph)
    if wd.ndim != 2:
        raise fail(op, f"weights of shape {wd.shape} must be 2-D [out, in]")
    oc, depth = wd.shape
    x_elems = int(np.prod(sample_shape(x), dtype=np.int64))
    if depth == 0 or x_elems % depth or not y.shape or y.shape[-1] != oc:
        raise fail(op, f"input {x.shape} and output {y.shape} do not fit weights {wd.shape}")
    rows_per_sample = x_elems // depth
    if int(np.prod(sample_shape(y), dtype=np.int64)) != rows_per_sample * oc:
        raise fail(op, f"output shape {y.shape} does not hold {rows_per_sample} rows of {oc}")
    if bias is not None and bias.size != oc:
        raise fail(op, f"bias has {bias.size} values for {oc} outputs")
    si, zi = per_tensor(op, x)
    so, zo = per_tensor(op, y)
    assert w.qparams is not None
    w_offset = -int(w.qparams.zero_point[0])
    if w.qparams.scale.size > 1:
        mult, shift = _channel_multipliers(op, si, w, so, oc, single)
    else:
        # TFLM forms the per-tensor product in float32 before widening it to double.
        product = float(np.float32(si) * np.float32(w.qparams.scale[0]))
        if bias is not None:
            b = graph.tensors[op.inputs[2]]  # type: ignore[index]
            b_scale = float(b.qparams.scale[0]) if b.qparams is not None else 0.0
            if abs(float(si) * float(w.qparams.scale[0]) - b_scale) / so > 0.02:
                raise fail(op, f"bias scale {b_scale:.6g} is not input_scale * weight_scale (TFLM refuses it)")
        m, s = quantize_multiplier(product / so, single)
        mult, shift = np.full(oc, m, np.int64), np.full(oc, s, np.int64)
    lo, hi = act_range(op, opts.activation, so, zo, y.dtype)
    if x.dtype is DType.INT16:
        from tinyprec.emulator import conv16

        return conv16.fully_connected(wd, bias, mult, shift, lo, hi, depth, sample_shape(y), rows_per_sample)
    wrows = wd + w_offset
    ftype = _float_type(op, wrows, 128)
    mat: np.ndarray = np.ascontiguousarray(wrows.T.astype(ftype))
    bias_v = (bias if bias is not None else np.zeros(oc, np.int64)) - zi * wrows.sum(axis=1)
    exact_float = _float_requant_is_exact(wrows, bias_v, mult, shift, 128)
    requant = _requantizer(bias_v, mult, shift, zo, lo, hi, single, exact_float)
    out_sample = sample_shape(y)

    def run(args: list[np.ndarray]) -> np.ndarray:
        xb = args[0]
        out = requant(np.ascontiguousarray(xb.reshape(-1, depth).astype(ftype) @ mat))
        return out.reshape((xb.shape[0], *out_sample))

    return Prepared(run, macs=rows_per_sample * oc * depth)
