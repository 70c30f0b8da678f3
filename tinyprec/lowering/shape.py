"""Lowering handlers of issue 11's shape ops: Upsample / F.interpolate (nearest, nearest-exact, bilinear),
ConvTranspose2d, PixelShuffle, matmul/bmm (and softmax over the last dim of a rank-3 value, which attention
needs after them).

Registered by name in :data:`tinyprec.lowering.table.LOWERINGS`. Both resize ops copy or blend raw
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
from tinyprec.ir import Activation, DType, Op, OpType, Padding, QParams
from tinyprec.ir.ops import ResizeOptions, StridedSliceOptions, TransposeConvOptions
from tinyprec.lowering.common import (
    _arg,
    _bias,
    _const,
    _finish,
    _name,
    _no_order,
    _pair,
    _require_shared,
    reader_counts,
    weight_dtype,
)
from tinyprec.lowering.attention import matmul_heads
from tinyprec.lowering.state import Lowering, qparams_of


def _torch_sources(lw: Lowering, node: fx.Node, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The source index along ``axis`` (2: rows, or length of a 1-D map; 3: columns) the exported op itself
    reads per output position: the op run on a map holding each pixel's own index."""
    index = torch.arange(shape[axis], dtype=torch.float32)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    probe = index.view(view).expand(1, 1, *shape[2:]).contiguous()
    out = node.target(probe, *(lw.val(a) for a in node.args[1:]), **node.kwargs)  # type: ignore[operator]
    line = out[0, 0, 0, :] if axis == 3 else out[0, 0, :, 0] if len(shape) == 4 else out[0, 0, :]
    return line.round().to(torch.int64).numpy()


def _resize(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        from tinyprec.ir.shape_rules import nearest_indices

        x = lw.act(node.args[0], node)
        rank = len(x.torch_shape)
        if rank not in (3, 4) or x.flat4:
            raise UnsupportedOpError(str(node.target), lw.where(node), "only (N, C, H, W) and (N, C, L) maps")
        _no_order(lw, node, x)
        _, qnode = lw.tail(node, fusable=False)
        qp = _require_shared(lw, node, x, qnode)
        out = lw.shape(qnode)
        if op_type is OpType.RESIZE_NEAREST_NEIGHBOR:
            options = ResizeOptions(False, "nearest_exact" in str(node.target))
            for axis in range(2, rank):
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
        hw = out[2:] if rank == 4 else (1, out[2])  # a 1-D map is IR (N, 1, L, C)
        size = lw.add_const(f"{src or node.name}.size", np.array(hw, np.int32), DType.INT32, None, src)
        _finish(lw, node, op_type, (x.name, size), options, qnode, qparams=qp)

    return handler


def _conv_transpose(lw: Lowering, node: fx.Node) -> None:
    """ConvTranspose2d -> TRANSPOSE_CONV (filter OHWI, per-channel axis 0). TFLM derives its leading padding
    from the output size (SAME or VALID); where neither gives PyTorch's ``padding``, it computes the whole
    scatter (padding 0) and a STRIDED_SLICE crops PyTorch's window out of it."""
    from tinyprec.ir.shape_rules import transpose_conv_pad

    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    if rank not in (3, 4) or x.flat4:
        raise UnsupportedOpError(str(node.target), lw.where(node), "only (N, C, H, W) and (N, C, L) inputs")
    _no_order(lw, node, x)
    stride, pad = _pair(_arg(node, 3, "stride", 1), rank), _pair(_arg(node, 4, "padding", 0), rank)
    if rank == 3:
        pad = (0, pad[1])  # a 1-D map is IR (N, 1, L, C): no rows to pad
    if int(_arg(node, 6, "groups", 1)) != 1 or _pair(_arg(node, 7, "dilation", 1), rank) != (1, 1):
        raise UnsupportedOpError(str(node.target), lw.where(node), "TFLM's TRANSPOSE_CONV has no groups or dilation")
    w, w_qp = _const(lw, node.args[1], node, "the weight")  # [in, out, kh, kw] or [in, out, k]
    if weight_dtype(lw, node.args[1], node) is not DType.INT8:
        raise UnsupportedOpError(str(node.target), lw.where(node), "transposed convolutions take int8 weights")
    if rank == 3:
        w = w[:, :, None, :]
    _, out_c, kh, kw = w.shape
    act, qnode = lw.tail(node, fusable=True)
    ho, wo = (1, lw.shape(qnode)[2]) if rank == 3 else lw.shape(qnode)[2:]
    src, source = _name(lw, node), lw.source(node)
    f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
    w_name = lw.add_const(f"{src}.weight", np.transpose(w, (1, 2, 3, 0)), DType.INT8, f_qp, source)
    b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)

    def padding_for(h: int, w_: int, ph: int, pw: int) -> Padding | None:
        for mode in (Padding.SAME, Padding.VALID):
            if (transpose_conv_pad(h, kh, stride[0], mode), transpose_conv_pad(w_, kw, stride[1], mode)) == (ph, pw):
                return mode
        return None

    def shape_const(h: int, w_: int, what: str) -> str:
        return lw.add_const(f"{src}.{what}", np.array([1, h, w_, out_c], np.int32), DType.INT32, None, source)

    direct = padding_for(ho, wo, pad[0], pad[1])
    if direct is not None:
        options = TransposeConvOptions(direct, stride[0], stride[1], act)
        _finish(lw, node, OpType.TRANSPOSE_CONV, (shape_const(ho, wo, "output_shape"), w_name, x.name, b_name),
                options, qnode)
        return
    fh, fw = pad[0] + ho, pad[1] + wo  # PyTorch's window ends inside rows [0, fh) of the unpadded scatter
    full_mode = padding_for(fh, fw, 0, 0)
    if full_mode is None:
        raise UnsupportedOpError(str(node.target), lw.where(node), f"padding {pad} has no TFLM form here")
    qp = qparams_of(lw, qnode)
    full = lw.add_act(f"{src}.full", (1, out_c, fw) if rank == 3 else (1, out_c, fh, fw), qp, source)
    lw.emit(OpType.TRANSPOSE_CONV, (shape_const(fh, fw, "full_shape"), w_name, x.name, b_name), full,
            TransposeConvOptions(full_mode, stride[0], stride[1], act), source)
    consts = [lw.add_const(f"{src}.{k}", np.array(v, np.int32), DType.INT32, None, source)
              for k, v in (("begin", [0, pad[0], pad[1], 0]), ("end", [1, fh, fw, out_c]), ("strides", [1, 1, 1, 1]))]
    _finish(lw, node, OpType.STRIDED_SLICE, (full.name, *consts), StridedSliceOptions(begin_mask=1, end_mask=1),
            qnode, qparams=qp)


def _pixel_shuffle(lw: Lowering, node: fx.Node) -> None:
    """PixelShuffle(r) -> DEPTH_TO_SPACE(r). PyTorch reads channel c * r*r + k where TF's DCR order reads
    k * C + c; for C > 1 the channels are first regrouped: RESHAPE to (1, H*W, C, r*r), TRANSPOSE the last
    two axes, RESHAPE back (all moves of raw int8 values with the input's qparams)."""
    from tinyprec.ir import Tensor
    from tinyprec.ir.ops import DepthToSpaceOptions, NoOptions, ReshapeOptions

    x = lw.act(node.args[0], node)
    if len(x.torch_shape) != 4 or x.flat4:
        raise UnsupportedOpError(str(node.target), lw.where(node), "only (N, C, H, W) maps")
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode)
    r = int(node.args[1])
    _, channels, h, w = x.torch_shape
    c = channels // (r * r)
    src = lw.source(node)
    base = src or node.name
    current = x.name

    def step(op_type: OpType, shape: tuple[int, ...], second: str, options: object, what: str) -> None:
        nonlocal current
        name = lw.unique(f"{base}.{what}")
        lw.tensors[name] = Tensor(name, shape, DType.INT8, qp, None, src)
        lw.ops.append(Op(op_type, (current, second), (name,), options, name=name, source=src))  # type: ignore[arg-type]
        current = name

    def reshape(shape: tuple[int, ...], what: str) -> None:
        new = (-1, *shape[1:])
        const = lw.add_const(f"{base}.{what}.shape", np.array(new, np.int32), DType.INT32, None, src)
        step(OpType.RESHAPE, shape, const, ReshapeOptions(new), what)

    if c > 1:
        reshape((1, h * w, c, r * r), "crd")
        perm = lw.add_const(f"{base}.perm", np.array([0, 1, 3, 2], np.int32), DType.INT32, None, src)
        step(OpType.TRANSPOSE, (1, h * w, r * r, c), perm, NoOptions(), "dcr")
        reshape((1, h, w, r * r * c), "dcr_map")
    _finish(lw, node, OpType.DEPTH_TO_SPACE, (current,), DepthToSpaceOptions(r), qnode, qparams=qp)


def _matmul(lw: Lowering, node: fx.Node) -> None:
    """torch.matmul / bmm of two (N, M, K) @ (N, K, P) activations -> BATCH_MATMUL. The IR holds a rank-3
    value (N, C, L) as (N, 1, L, C), i.e. each matrix transposed, so C^T = B^T A^T: the operands swap."""
    from tinyprec.ir.ops import BatchMatMulOptions

    if not all(isinstance(a, fx.Node) for a in node.args[:2]):
        raise UnsupportedOpError(str(node.target), lw.where(node), "both operands must be activations")
    a, b = (lw.act(v, node) for v in node.args[:2])
    if len(a.torch_shape) == 4 and len(b.torch_shape) == 4:
        matmul_heads(lw, node, a, b)  # multi-head attention: (N, H, M, K) @ (N, H, K, P)
        return
    if len(a.torch_shape) != 3 or len(b.torch_shape) != 3 or a.flat4 or b.flat4:
        raise UnsupportedOpError(str(node.target), lw.where(node), "matmul of two rank-3 (N, M, K) @ (N, K, P) "
                                 "activations only")
    _no_order(lw, node, a, b)
    act, qnode = lw.tail(node, fusable=True)
    if act is not Activation.NONE:
        raise UnsupportedOpError(str(node.target), lw.where(node), "BATCH_MATMUL has no fused activation; "
                                 "put the ReLU after another op or drop it")
    _finish(lw, node, OpType.BATCH_MATMUL, (b.name, a.name), BatchMatMulOptions(), qnode)


def softmax_last_dim(lw: Lowering, node: fx.Node) -> None:
    """Softmax over the last dim of a rank-3 (N, M, P) value: that dim is IR axis 2 of (N, 1, P, M), so
    TRANSPOSE it last, SOFTMAX, TRANSPOSE back (the transposes move int8 values with unchanged qparams)."""
    from tinyprec.ir import Tensor
    from tinyprec.ir.ops import NoOptions, SoftmaxOptions

    x = lw.act(node.args[0], node)
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    n, one, p, m = lw.tensors[x.name].shape
    src = lw.source(node)
    base = src or node.name
    perm = lw.add_const(f"{base}.perm", np.array([0, 1, 3, 2], np.int32), DType.INT32, None, src)
    swapped, soft = lw.unique(f"{base}.rows"), ""
    lw.tensors[swapped] = Tensor(swapped, (n, one, m, p), DType.INT8, x.qparams, None, src)
    lw.ops.append(Op(OpType.TRANSPOSE, (x.name, perm), (swapped,), NoOptions(), name=swapped, source=src))
    soft = lw.unique(f"{base}.softmax")
    lw.tensors[soft] = Tensor(soft, (n, one, m, p), DType.INT8, qparams_of(lw, qnode), None, src)
    lw.ops.append(Op(OpType.SOFTMAX, (swapped,), (soft,), SoftmaxOptions(1.0), name=soft, source=src))
    _finish(lw, node, OpType.TRANSPOSE, (soft, perm), NoOptions(), qnode)


def cancel_transpose_pairs(lw: Lowering, outputs: list[str]) -> int:
    """Drop TRANSPOSE -> TRANSPOSE pairs that compose to the identity (a softmax over the last dim followed by
    the user's own ``.transpose(1, 2)`` in attention): readers of the second read the first's input.
    Returns how many pairs went; the first TRANSPOSE is left for the dead-op sweep."""
    producer = {op.outputs[0]: op for op in lw.ops}
    readers = reader_counts(lw.ops)
    dropped = 0
    for second in list(lw.ops):
        first = producer.get(second.inputs[0]) if second.type is OpType.TRANSPOSE else None  # type: ignore[arg-type]
        if first is None or first.type is not OpType.TRANSPOSE or readers.get(first.outputs[0]) != 1:
            continue
        mid, out, src = first.outputs[0], second.outputs[0], first.inputs[0]
        if mid in outputs or out in outputs or src is None:
            continue
        p1, p2 = (lw.tensors[op.inputs[1]].data for op in (first, second))  # type: ignore[index]
        if p1 is None or p2 is None or [int(p1[int(k)]) for k in p2] != list(range(len(p1))):
            continue
        if lw.tensors[src].qparams != lw.tensors[out].qparams:
            continue
        lw.ops = [Op(op.type, tuple(src if n == out else n for n in op.inputs), op.outputs, op.options,
                     name=op.name, source=op.source) for op in lw.ops if op is not second]
        lw.aliases[out] = lw.aliases.get(src, src)
        dropped += 1
    return dropped


SHAPE_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "resize_nearest": _resize(OpType.RESIZE_NEAREST_NEIGHBOR),
    "resize_bilinear": _resize(OpType.RESIZE_BILINEAR),
    "conv_transpose": _conv_transpose,
    "pixel_shuffle": _pixel_shuffle,
    "matmul": _matmul,
}
