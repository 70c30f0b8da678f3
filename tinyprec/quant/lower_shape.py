"""Lowering handlers of issue 11's shape ops: Upsample / F.interpolate (nearest, nearest-exact, bilinear).

Registered by name in :data:`tinyprec.quant.lower_table.LOWERINGS`. Both resize ops copy or blend raw
int8 values, so the quantizer shares the input's qparams with the output. PyTorch's ``nearest`` is TF's
floor rule (``align_corners=False, half_pixel_centers=False``), ``nearest-exact`` TF's half-pixel rule;
the handler checks on the real op that PyTorch and TFLM read the same source pixels. Bilinear
``align_corners=True`` is TF's align_corners, ``align_corners=False`` TF's ``half_pixel_centers=True``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import DType, OpType
from tinyprec.ir.ops import ResizeOptions
from tinyprec.quant.lower import Lowering
from tinyprec.quant.lower_ops import _finish, _no_order, _require_shared


def _torch_sources(lw: Lowering, node: fx.Node, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The source index along ``axis`` (2: rows, 3: columns) the exported op itself reads per output
    position: the op run on a map holding each pixel's own index."""
    index = torch.arange(shape[axis], dtype=torch.float32)
    view = [1, 1, 1, 1]
    view[axis] = shape[axis]
    probe = index.view(view).expand(1, 1, shape[2], shape[3]).contiguous()
    out = node.target(probe, *(lw.val(a) for a in node.args[1:]), **node.kwargs)  # type: ignore[operator]
    line = out[0, 0, :, 0] if axis == 2 else out[0, 0, 0, :]
    return line.round().to(torch.int64).numpy()


def _resize(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        from tinyprec.emulator.shape_ops import nearest_indices

        x = lw.act(node.args[0], node)
        if len(x.torch_shape) != 4 or x.flat4:
            raise UnsupportedOpError(str(node.target), lw.where(node), "only (N, C, H, W) maps are resized")
        _no_order(lw, node, x)
        _, qnode = lw.tail(node, fusable=False)
        qp = _require_shared(lw, node, x, qnode)
        out = lw.shape(qnode)
        if op_type is OpType.RESIZE_NEAREST_NEIGHBOR:
            options = ResizeOptions(False, "nearest_exact" in str(node.target))
            for axis in (2, 3):
                want = nearest_indices(x.torch_shape[axis], out[axis], False, options.half_pixel_centers)
                got = _torch_sources(lw, node, x.torch_shape, axis)
                if not np.array_equal(want, got):
                    raise UnsupportedOpError(str(node.target), lw.where(node),
                                             f"PyTorch reads source pixels {got.tolist()} where TFLM reads "
                                             f"{want.tolist()}; use an integer scale factor or size=(h, w)")
        else:
            align = bool(node.args[2]) if len(node.args) > 2 else False
            options = ResizeOptions(align, not align)
        src = lw.source(node)
        size = lw.add_const(f"{src or node.name}.size", np.array(out[2:], np.int32), DType.INT32, None, src)
        _finish(lw, node, op_type, (x.name, size), options, qnode, qparams=qp)

    return handler


SHAPE_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "resize_nearest": _resize(OpType.RESIZE_NEAREST_NEIGHBOR),
    "resize_bilinear": _resize(OpType.RESIZE_BILINEAR),
}
