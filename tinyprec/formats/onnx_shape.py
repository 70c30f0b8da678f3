"""ONNX QDQ emitters of issue 11's shape ops: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR as ONNX Resize,
TRANSPOSE_CONV as ConvTranspose.

Registered into :data:`tinyprec.formats.onnx_qdq.EMITTERS` like :mod:`tinyprec.formats.onnx_more`. ONNX
Runtime interpolates in float where TFLM uses 10-bit fixed-point weights, so bilinear outputs may differ
from TFLM by an LSB; the index rules (floor, TF's half-pixel nearest, align_corners) are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir.graph import Op
from tinyprec.ir.ops import OpType, ResizeOptions, TransposeConvOptions


def _where(op: Op, index: int) -> str:
    return f"node {index} '{op.name or op.type.value}'" + (f" ({op.source})" if op.source else "")


def _resize(b: Any, op: Op, i: int) -> str:
    """Resize with the output's NCHW sizes; TF's coordinate rules as ONNX attributes."""
    o = op.options
    assert isinstance(o, ResizeOptions)
    y = b.graph.tensors[op.outputs[0]]
    if len(y.shape) != 4:
        raise UnsupportedOpError(op.type.value, _where(op, i), "only 4-D (NHWC) tensors are written to ONNX")
    _, h, w, _ = y.shape
    x = b.value(op.inputs[0], op, i)
    # sizes = (batch and channels of x as they come, h, w): the batch stays dynamic.
    base = str(op.outputs[0])
    shape = b.node("Shape", [x], f"{base}_shape")
    ints = [b.const(f"{base}_{k}", np.array(v, np.int64)) for k, v in (("nc0", [0]), ("nc1", [2]), ("hw", [h, w]))]
    nc = b.node("Slice", [shape, ints[0], ints[1]], f"{base}_nc")
    sizes = b.node("Concat", [nc, ints[2]], f"{base}_sizes", axis=0)
    attrs: dict[str, Any]
    if op.type is OpType.RESIZE_NEAREST_NEIGHBOR:
        if o.align_corners:
            attrs = {"coordinate_transformation_mode": "align_corners", "nearest_mode": "round_prefer_ceil"}
        elif o.half_pixel_centers:
            attrs = {"coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"}
        else:
            attrs = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        attrs["mode"] = "nearest"
    else:
        mode = "align_corners" if o.align_corners else "half_pixel" if o.half_pixel_centers else "asymmetric"
        attrs = {"mode": "linear", "coordinate_transformation_mode": mode}
    return str(b.node("Resize", [x, "", "", sizes], f"{op.outputs[0]}_resize", **attrs))


def _transpose_conv(b: Any, op: Op, i: int) -> str:
    """ConvTranspose (weights (I, O, kh, kw), per-channel on axis 1) with TFLM's leading padding; the rows
    TFLM's output size keeps past the scatter's extent become output_padding."""
    from tinyprec.ir.shape_rules import transpose_conv_pad

    o = op.options
    assert isinstance(o, TransposeConvOptions)
    w_ir, x_ir, y = (b.graph.tensors[n] for n in (op.inputs[1], op.inputs[2], op.outputs[0]))
    assert w_ir.data is not None
    _, kh, kw, _ = w_ir.shape
    inputs = [b.value(op.inputs[2], op, i), b.weight(w_ir, np.ascontiguousarray(np.transpose(w_ir.data, (3, 0, 1, 2))), 1)]
    if len(op.inputs) > 3 and op.inputs[3] is not None:
        bias = b.graph.tensors[op.inputs[3]]
        inputs.append(b.weight(bias, np.asarray(bias.data, np.int32), 0))
    begin, end, extra = [], [], []
    for size, out, k, s in ((x_ir.shape[1], y.shape[1], kh, o.stride_h), (x_ir.shape[2], y.shape[2], kw, o.stride_w)):
        p = transpose_conv_pad(out, k, s, o.padding)
        tail = (size - 1) * s + k - p - out
        begin.append(p)
        end.append(max(tail, 0))
        extra.append(max(-tail, 0))
    node = b.node("ConvTranspose", inputs, f"{op.outputs[0]}_deconv", kernel_shape=[kh, kw],
                  strides=[o.stride_h, o.stride_w], pads=begin + end, output_padding=extra)
    return str(b.activation(node, o.activation, f"{op.outputs[0]}_act"))


def _depth_to_space(b: Any, op: Op, i: int) -> str:
    """ONNX DepthToSpace in DCR mode is TF's order on NCHW values."""
    block = int(op.options.block_size)  # type: ignore[union-attr]
    return str(b.node("DepthToSpace", [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_d2s", blocksize=block,
                      mode="DCR"))


def _batch_matmul(b: Any, op: Op, i: int) -> str:
    """MatMul on the IR layout: 4-D values (NCHW in ONNX) are moved to NHWC around it."""
    o = op.options
    base = str(op.outputs[0])
    operands = []
    for k, (name, adj) in enumerate(zip(op.inputs, (o.adj_x, o.adj_y))):  # type: ignore[union-attr]
        v, rank = b.value(name, op, i), b.rank(name)
        if rank == 4:
            v = b.transpose(v, (0, 2, 3, 1), f"{base}_in{k}_nhwc")
        if adj:
            perm = list(range(rank))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            v = b.transpose(v, tuple(perm), f"{base}_in{k}_adj")
        operands.append(v)
    y = b.node("MatMul", operands, f"{base}_matmul")
    if b.rank(op.outputs[0]) == 4:
        y = b.transpose(y, (0, 3, 1, 2), f"{base}_nchw")
    return str(y)


SHAPE_EMITTERS: dict[OpType, Callable[[Any, Op, int], str]] = {
    OpType.RESIZE_NEAREST_NEIGHBOR: _resize,
    OpType.RESIZE_BILINEAR: _resize,
    OpType.TRANSPOSE_CONV: _transpose_conv,
    OpType.DEPTH_TO_SPACE: _depth_to_space,
    OpType.BATCH_MATMUL: _batch_matmul,
}
