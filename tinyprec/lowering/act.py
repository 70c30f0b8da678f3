"""Lowering handlers of issue 11's activation / arithmetic ops (ops-act): ELU, scalar operands, amax, mean.

Registered by name in :data:`tinyprec.lowering.table.LOWERINGS` (the ``lowering`` column of
:data:`tinyprec.optable.table.OPS`). A Python-number operand ``c`` of ``x + c``, ``x * c`` or ``x / c``
becomes a one-element int8 constant: the value ``+-1`` with scale ``|c|`` (float32), zero point 0, so the
constant is exactly the float32 ``c`` the fake-quant program uses and TFLM's ADD / MUL apply it inside their
one requantization (:func:`scalar_operand`, shared with the TFLM-exact program).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import DType, ElementwiseOptions, MeanOptions, NoOptions, OpType, Padding, PoolOptions, QParams
from tinyprec.lowering.common import _arg, _emit_reshape, _finish, _hw, _no_order, _require_shared
from tinyprec.lowering.nodes import _AXIS
from tinyprec.lowering.state import Lowering, Value, qparams_of


def scalar_value(node: fx.Node) -> float:
    """The number a scalar node applies: c for ``x + c`` / ``x * c`` / ``c - x``, ``1 / c`` (float32) for ``x / c``."""
    c = float(node.args[1])  # type: ignore[arg-type]
    if str(node.target).startswith("aten.div"):
        return float(np.float32(1.0) / np.float32(c))
    return c


def scalar_operand(c: float) -> tuple[int, float]:
    """(int8 value, float32 scale) holding the number ``c`` exactly: (+-1, |c|), or (0, 1.0) for 0."""
    if c == 0:
        return 0, 1.0
    return (1 if c > 0 else -1), float(np.float32(abs(c)))


def _scalar(op_type: OpType, const_first: bool = False) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        x = lw.act(node.args[0], node)
        if x.dtype is not DType.INT8:
            raise UnsupportedOpError(str(node.target), lw.where(node), "a constant operand with int8 activations only")
        q, scale = scalar_operand(scalar_value(node))
        src = lw.source(node)
        rank = len(lw.tensors[x.name].shape)  # same rank as x: the ONNX writer broadcasts only within a rank
        const = lw.add_const(f"{src or node.name}.const", np.full((1,) * rank, q, np.int8), DType.INT8,
                             QParams.per_tensor(scale, 0), src)
        act, qnode = lw.tail(node, fusable=True)
        inputs = (const, x.name) if const_first else (x.name, const)
        _finish(lw, node, op_type, inputs, ElementwiseOptions(act), qnode, order=x.order, flat4=x.flat4)

    return handler


def _elu(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    _, qnode = lw.tail(node, fusable=False)
    _finish(lw, node, OpType.ELU, (x.name,), NoOptions(), qnode, order=x.order, flat4=x.flat4)


def _amax(lw: Lowering, node: fx.Node) -> None:
    """Global max pooling: MAX_POOL_2D over the whole map (+ RESHAPE to (N, C) without keepdim)."""
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    dims = sorted({int(d) % rank for d in node.args[1]})  # type: ignore[union-attr]
    if rank not in (3, 4) or dims != list(range(2, rank)):
        _reduce(lw, node, OpType.REDUCE_MAX, shared=True)
        return
    _no_order(lw, node, x)
    keep = bool(_arg(node, 2, "keepdim", False))
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode)
    h, w = _hw(x.torch_shape)
    options = PoolOptions(h, w, h, w, Padding.VALID)
    if keep:
        _finish(lw, node, OpType.MAX_POOL_2D, (x.name,), options, qnode, qparams=qp)
        return
    src = lw.source(node)
    pooled = lw.add_act(f"{src or node.name}.pool", (1, x.torch_shape[1], 1, 1), qp, src, dtype=x.dtype)
    lw.emit(OpType.MAX_POOL_2D, (x.name,), pooled, options, src)
    _emit_reshape(lw, node, pooled, qnode)


def _mean(lw: Lowering, node: fx.Node, x: Value, qnode: fx.Node, keep_dims: bool) -> None:
    src = lw.source(node)
    axes = lw.add_const(f"{src or node.name}.axes", np.array([1, 2], np.int32), DType.INT32, None, src)
    _finish(lw, node, OpType.MEAN, (x.name, axes), MeanOptions(keep_dims), qnode)


def _mean_dim(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    dims = sorted(int(d) % rank for d in node.args[1])
    keep = bool(_arg(node, 2, "keepdim", False))
    if dims != list(range(2, rank)):
        raise UnsupportedOpError("mean", lw.where(node), "only the mean over all spatial dims (global pool)")
    act, qnode = lw.tail(node, fusable=not keep)
    h, w = _hw(x.torch_shape)
    if qparams_of(lw, qnode) != x.qparams:
        if not keep:
            raise UnsupportedOpError("mean", lw.where(node), "a rescaling mean must keep dims")
        _mean(lw, node, x, qnode, keep_dims=True)
        return
    if keep:
        _finish(lw, node, OpType.AVERAGE_POOL_2D, (x.name,), PoolOptions(h, w, h, w, Padding.VALID, act), qnode)
        return
    # AVERAGE_POOL_2D to [1,1,1,C], then RESHAPE to [1, C] (same storage order).
    src = lw.source(node)
    pooled = lw.add_act(f"{src or node.name}.pool", (1, x.torch_shape[1], 1, 1), x.qparams, src, dtype=x.dtype)
    lw.emit(OpType.AVERAGE_POOL_2D, (x.name,), pooled, PoolOptions(h, w, h, w, Padding.VALID, act), src)
    _emit_reshape(lw, node, pooled, qnode)


def _mean_any(lw: Lowering, node: fx.Node) -> None:
    """mean over any non-batch dims: the global spatial mean as before, else MEAN (keep_dims) [+ RESHAPE]."""
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    dims = sorted({int(d) % rank for d in node.args[1]})  # type: ignore[union-attr]
    if rank in (3, 4) and dims == list(range(2, rank)):
        _mean_dim(lw, node)
        return
    _reduce(lw, node, OpType.MEAN, shared=False)


def _reduce(lw: Lowering, node: fx.Node, op_type: OpType, *, shared: bool) -> None:
    """MEAN / REDUCE_MAX over the IR axes of the node's dims, keep_dims, then a RESHAPE without keepdim."""
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    dims = sorted({int(d) % rank for d in node.args[1]})  # type: ignore[union-attr]
    what = str(node.target)
    if 0 in dims or rank not in _AXIS:
        raise UnsupportedOpError(what, lw.where(node), "reduce over non-batch dims of a rank 2-4 tensor")
    _no_order(lw, node, x)
    keep = bool(_arg(node, 2, "keepdim", False))
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode) if shared else qparams_of(lw, qnode)
    axes = sorted(3 if x.flat4 else _AXIS[rank][d] for d in dims)
    src = lw.source(node)
    const = lw.add_const(f"{src or node.name}.axes", np.array(axes, np.int32), DType.INT32, None, src)
    kept = tuple(1 if i in dims else s for i, s in enumerate(x.torch_shape))
    if keep:
        _finish(lw, node, op_type, (x.name, const), MeanOptions(True), qnode, qparams=qp, flat4=x.flat4)
        return
    mid = lw.add_act(f"{src or node.name}.{op_type.value.lower()}", kept, qp, src, flat4=x.flat4, dtype=x.dtype)
    lw.emit(op_type, (x.name, const), mid, MeanOptions(True), src)
    _emit_reshape(lw, node, mid, qnode)


ACT_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "elu": _elu,
    "scalar_add": _scalar(OpType.ADD),
    "scalar_mul": _scalar(OpType.MUL),
    "scalar_div": _scalar(OpType.MUL),
    "scalar_rsub": _scalar(OpType.SUB, const_first=True),  # c - x: SUB(c, x)
    "amax": _amax,
    "mean_any": _mean_any,
}
