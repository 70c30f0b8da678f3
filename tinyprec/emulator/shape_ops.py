"""Issue 11's shape ops: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR, bit-exact with TFLM's int8 kernels.

Both copy or blend raw int8 values, so the output keeps the input's scale and zero point (the lowering
asks the quantizer to share them). Nearest picks source rows/columns in float32 as TFLM's
GetNearestNeighbor does (floor, or round half away from zero with align_corners; half-pixel centres
offset by 0.5); bilinear is TFLM's integer kernel (ResizeBilinearInteger): a 10-bit fixed-point scale,
corner weights in units of 2**-10, the int64 sum rounded at 2**20 (half away from zero, or half up in the
single-rounding build). Registered into :data:`tinyprec.emulator.ops.PREPARE`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyprec.emulator.common import Prepared, fail, int_data, per_tensor
from tinyprec.ir import DType, Graph, Op, OpType
from tinyprec.ir.shape_rules import bilinear_taps, nearest_indices, transpose_conv_pad, trunc_div
from tinyprec.ir.ops import ResizeOptions


def bilinear_round(total: np.ndarray, single: bool) -> np.ndarray:
    """The int64 sum (units of 2**-20) to int8 as TFLM: (sum + 2**19) >> 20 single, else half away from zero,
    then the static_cast's wrap."""
    if single:
        v = (total + (1 << 19)) >> 20
    else:
        v = trunc_div(total + np.where(total > 0, 1 << 19, -(1 << 19)), 1 << 20)
    return (((v + 128) & 0xFF) - 128).astype(np.int8)


def _resize_common(op: Op, graph: Graph) -> tuple[tuple[int, ...], int, int, ResizeOptions]:
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    if len(x.shape) != 4:
        raise fail(op, f"input shape {x.shape} must be 4-D (NHWC)")
    if x.dtype is not DType.INT8:
        raise fail(op, f"{x.dtype.value} input is not emulated (int8 only)")
    size = int_data(op, graph, 1).reshape(-1)
    if size.size != 2 or np.any(size <= 0):
        raise fail(op, f"size must be two positive int32 values, got {size.tolist()}")
    out_h, out_w = int(size[0]), int(size[1])
    if tuple(y.shape) != (x.shape[0], out_h, out_w, x.shape[3]):
        raise fail(op, f"output shape {y.shape} is not the resized shape {(x.shape[0], out_h, out_w, x.shape[3])}")
    s_in, s_out = per_tensor(op, x), per_tensor(op, y)
    if np.float32(s_in[0]) != np.float32(s_out[0]) or s_in[1] != s_out[1]:
        raise fail(op, "int8 resize copies raw values: the output needs the input's scale and zero point")
    o = op.options
    assert isinstance(o, ResizeOptions)
    if o.align_corners and o.half_pixel_centers:
        raise fail(op, "align_corners and half_pixel_centers cannot both be set (TFLM refuses it)")
    return x.shape, out_h, out_w, o


def prepare_resize_nearest(op: Op, graph: Graph, single: bool) -> Prepared:
    shape, out_h, out_w, o = _resize_common(op, graph)
    rows = nearest_indices(shape[1], out_h, o.align_corners, o.half_pixel_centers)
    cols = nearest_indices(shape[2], out_w, o.align_corners, o.half_pixel_centers)
    return Prepared(lambda args: np.ascontiguousarray(args[0][:, rows][:, :, cols]))


def prepare_resize_bilinear(op: Op, graph: Graph, single: bool) -> Prepared:
    shape, out_h, out_w, o = _resize_common(op, graph)
    y0, y1, wy = bilinear_taps(shape[1], out_h, o.align_corners, o.half_pixel_centers)
    x0, x1, wx = bilinear_taps(shape[2], out_w, o.align_corners, o.half_pixel_centers)
    one = 1 << 10
    wy1, wy0 = wy[None, :, None, None], (one - wy)[None, :, None, None]
    wx1, wx0 = wx[None, None, :, None], (one - wx)[None, None, :, None]

    def run(args: list[np.ndarray]) -> np.ndarray:
        v = args[0].astype(np.int64)
        top, bottom = v[:, y0], v[:, y1]
        total = (top[:, :, x0] * wy0 * wx0 + bottom[:, :, x0] * wy1 * wx0
                 + top[:, :, x1] * wy0 * wx1 + bottom[:, :, x1] * wy1 * wx1)
        return bilinear_round(total, single)

    return Prepared(run, scratch_per_sample=out_h * out_w * shape[3] * 8 * 6)


def prepare_transpose_conv(op: Op, graph: Graph, single: bool) -> Prepared:
    """TFLM's int8 TRANSPOSE_CONV: every input pixel scatters (x - zp) * filter into an int32 buffer at
    in * stride - pad + tap (taps outside the output dropped), then + bias and the per-channel
    requantization of CONV_2D. The sums are exact in float64 (|x - zp| * |w| <= 255 * 127 per term)."""
    from tinyprec.emulator import kernels
    from tinyprec.emulator.conv import _channel_multipliers
    from tinyprec.emulator.common import act_range
    from tinyprec.ir.ops import TransposeConvOptions

    o = op.options
    assert isinstance(o, TransposeConvOptions)
    if len(op.inputs) < 3 or op.inputs[2] is None or op.inputs[1] is None:
        raise fail(op, "needs (output_shape, filter, input[, bias])")
    x, w, y = graph.tensors[op.inputs[2]], graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
    if x.dtype is not DType.INT8 or y.dtype is not DType.INT8:
        raise fail(op, "only int8 input and output are emulated")
    if w.data is None or w.dtype is not DType.INT8 or w.qparams is None or len(w.shape) != 4:
        raise fail(op, "the filter must be a constant int8 OHWI tensor with quantization parameters")
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise fail(op, "input and output must be 4-D (NHWC)")
    oc, kh, kw, ic = w.shape
    if ic != x.shape[3] or oc != y.shape[3]:
        raise fail(op, f"filter {w.shape} does not match input {x.shape} and output {y.shape} channels")
    shape = int_data(op, graph, 0).reshape(-1)
    if shape.size != 4 or tuple(int(d) for d in shape[1:]) != tuple(y.shape[1:]):
        raise fail(op, f"output_shape {shape.tolist()} does not match the output tensor {y.shape}")
    if np.any(w.qparams.zero_point != 0):
        raise fail(op, "the filter must be symmetric (zero point 0)")
    bias = np.zeros(oc, np.int64)
    if len(op.inputs) > 3 and op.inputs[3] is not None:
        b = graph.tensors[op.inputs[3]]
        if b.data is None or b.dtype is not DType.INT32 or b.data.size != oc:
            raise fail(op, f"bias must be a constant int32 tensor of {oc} values")
        bias = b.data.astype(np.int64).reshape(-1)
    si, zi = per_tensor(op, x)
    so, zo = per_tensor(op, y)
    mult, shift = _channel_multipliers(op, si, w, so, oc, single)
    lo, hi = act_range(op, o.activation, so, zo, y.dtype)
    _, h, wd, _ = x.shape
    _, oh, ow, _ = y.shape
    ph, pw = transpose_conv_pad(oh, kh, o.stride_h, o.padding), transpose_conv_pad(ow, kw, o.stride_w, o.padding)
    full_h, full_w = max((h - 1) * o.stride_h + kh, ph + oh), max((wd - 1) * o.stride_w + kw, pw + ow)
    filt = w.data.astype(np.float64)

    def run(args: list[np.ndarray]) -> np.ndarray:
        v = args[2].astype(np.float64) - zi
        n = v.shape[0]
        acc = np.zeros((n, full_h, full_w, oc), np.float64)
        for fy in range(kh):
            for fx in range(kw):
                part = v @ filt[:, fy, fx, :].T
                acc[:, fy:fy + (h - 1) * o.stride_h + 1:o.stride_h, fx:fx + (wd - 1) * o.stride_w + 1:o.stride_w] += part
        out = acc[:, ph:ph + oh, pw:pw + ow].astype(np.int64).reshape(-1, oc)
        q = kernels.requantize_acc(np.ascontiguousarray(out), bias, mult, shift, zo, lo, hi, single, False)
        return q.reshape(n, oh, ow, oc)

    return Prepared(run, macs=h * wd * ic * kh * kw * oc, scratch_per_sample=full_h * full_w * oc * 8 * 3)


def prepare_depth_to_space(op: Op, graph: Graph, single: bool) -> Prepared:
    """TFLM DEPTH_TO_SPACE (DCR): a copy; the output keeps the input's qparams."""
    from tinyprec.ir.ops import DepthToSpaceOptions

    o = op.options
    assert isinstance(o, DepthToSpaceOptions)
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    r = o.block_size
    if len(x.shape) != 4 or r < 1 or x.shape[3] % (r * r):
        raise fail(op, f"input {x.shape} must be NHWC with channels divisible by block_size**2 = {r * r}")
    _, h, w, c = x.shape
    c //= r * r
    if tuple(y.shape) != (x.shape[0], h * r, w * r, c):
        raise fail(op, f"output shape {y.shape} is not {(x.shape[0], h * r, w * r, c)}")
    s_in, s_out = per_tensor(op, x), per_tensor(op, y)
    if np.float32(s_in[0]) != np.float32(s_out[0]) or s_in[1] != s_out[1]:
        raise fail(op, "int8 DEPTH_TO_SPACE moves raw values: the output needs the input's scale and zero point")

    def run(args: list[np.ndarray]) -> np.ndarray:
        n = args[0].shape[0]
        v = args[0].reshape(n, h, w, r, r, c).transpose(0, 1, 3, 2, 4, 5)
        return np.ascontiguousarray(v.reshape(n, h * r, w * r, c))

    return Prepared(run)


def prepare_batch_matmul(op: Op, graph: Graph, single: bool) -> Prepared:
    """TFLM int8 BATCH_MATMUL: sum (lhs - zl)(rhs - zr) over the shared axis (exact in float64), then one
    MultiplyByQuantizedMultiplier whose real multiplier is (s_lhs * s_rhs in float32) / s_out, as TFLM's
    GetQuantizedConvolutionMultipler forms it; no fused activation (the int8 range)."""
    from tinyprec.emulator import kernels
    from tinyprec.ir import quantize_multiplier
    from tinyprec.ir.ops import BatchMatMulOptions

    o = op.options
    assert isinstance(o, BatchMatMulOptions)
    if len(op.inputs) != 2 or any(n is None for n in op.inputs):
        raise fail(op, "needs two inputs (lhs, rhs)")
    a, b, y = (graph.tensors[n] for n in (*op.inputs, op.outputs[0]))  # type: ignore[index]
    if {a.dtype, b.dtype, y.dtype} != {DType.INT8}:
        raise fail(op, "only int8 lhs, rhs and output are emulated")
    if not (2 <= len(a.shape) <= 5 and 2 <= len(b.shape) <= 5):
        raise fail(op, f"operands of rank {len(a.shape)} and {len(b.shape)}: TFLM takes ranks 2 to 5")
    rows = a.shape[-1] if o.adj_x else a.shape[-2]
    depth = a.shape[-2] if o.adj_x else a.shape[-1]
    depth_b, cols = (b.shape[-1], b.shape[-2]) if o.adj_y else (b.shape[-2], b.shape[-1])
    if depth != depth_b:
        raise fail(op, f"lhs {a.shape} and rhs {b.shape} do not share the summed axis ({depth} != {depth_b})")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise fail(op, f"batch dims of {a.shape} and {b.shape} do not broadcast") from None
    if tuple(y.shape) != (*batch, rows, cols):
        raise fail(op, f"output shape {y.shape} is not {(*batch, rows, cols)}")
    (sa, za), (sb, zb), (so, zo) = (per_tensor(op, t) for t in (a, b, y))
    real = float(np.float32(sa) * np.float32(sb)) / float(so)
    mult, shift = quantize_multiplier(real, single)

    def run(args: list[np.ndarray]) -> np.ndarray:
        x1 = args[0].astype(np.float64) - za
        x2 = args[1].astype(np.float64) - zb
        if o.adj_x:
            x1 = np.swapaxes(x1, -1, -2)
        if o.adj_y:
            x2 = np.swapaxes(x2, -1, -2)
        acc = np.matmul(x1, x2)
        flat = kernels.requantize_flat(acc.astype(np.int64).reshape(-1), mult, shift, zo, -128, 127, single)
        return flat.reshape(acc.shape)

    return Prepared(run, macs=int(np.prod(y.shape[1:])) * int(depth))


PREPARE_SHAPE: dict[OpType, Callable[[Op, Graph, bool], Prepared]] = {
    OpType.RESIZE_NEAREST_NEIGHBOR: prepare_resize_nearest,
    OpType.RESIZE_BILINEAR: prepare_resize_bilinear,
    OpType.TRANSPOSE_CONV: prepare_transpose_conv,
    OpType.DEPTH_TO_SPACE: prepare_depth_to_space,
    OpType.BATCH_MATMUL: prepare_batch_matmul,
}
