"""ONNX QDQ emitters of issue 11's shape ops: RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR as ONNX Resize.

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
from tinyprec.ir.ops import OpType, ResizeOptions


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


SHAPE_EMITTERS: dict[OpType, Callable[[Any, Op, int], str]] = {
    OpType.RESIZE_NEAREST_NEIGHBOR: _resize,
    OpType.RESIZE_BILINEAR: _resize,
}
