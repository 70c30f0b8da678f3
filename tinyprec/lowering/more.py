"""Lowering handlers of issue 11's ops: HARD_SWISH, LEAKY_RELU, ABS, SUB, MAXIMUM/MINIMUM and clamp.

Registered by name in :data:`tinyprec.lowering.table.LOWERINGS` (the ``lowering`` column of
:data:`tinyprec.optable.table.OPS`). A clamp/hardtanh whose bounds TFLite fuses is either fused by the
op before it or, standalone, lowered as before (MUL by an exact 1 with the fused activation); any other
bounds keep the input's qparams (the quantizer shares them) and become MAXIMUM/MINIMUM with int8 bound
constants rounded exactly as the converted graph's quantize node rounds the float bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import fx

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import DType, ElementwiseOptions, NoOptions, OpType, QParams
from tinyprec.ir.ops import LeakyReluOptions, StridedSliceOptions
from tinyprec.lowering.common import (
    _const,
    _finish,
    _no_order,
    _require_shared,
    _standalone_activation,
    reshape_value,
)
from tinyprec.lowering.nodes import _AXIS
from tinyprec.lowering.state import Lowering, Value, qparams_of
from tinyprec.optable.table import clamp_bounds, fused_activation, torch_perm


def _unary(op_type: OpType, options: Callable[[fx.Node], Any] = lambda n: NoOptions()) -> Callable[..., None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        x = lw.act(node.args[0], node)
        _, qnode = lw.tail(node, fusable=False)
        _finish(lw, node, op_type, (x.name,), options(node), qnode, order=x.order, flat4=x.flat4)

    return handler


def _leaky_options(node: fx.Node) -> LeakyReluOptions:
    slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
    return LeakyReluOptions(float(np.float32(slope)))


def _pair(lw: Lowering, node: fx.Node) -> tuple[Value, Value]:
    """Both operands as IR values of one storage form (a 2-D value as [1, F] or [1, 1, 1, F])."""
    if not all(isinstance(a, fx.Node) for a in node.args[:2]):
        raise UnsupportedOpError(str(node.target), lw.where(node), "both operands must be tensors")
    a, b = (lw.act(x, node) for x in node.args[:2])
    if len(a.torch_shape) != len(b.torch_shape):
        raise UnsupportedOpError(str(node.target), lw.where(node), "operands must have the same rank")
    _no_order(lw, node, a, b)
    if a.flat4 != b.flat4:
        a, b = (v if v.flat4 else reshape_value(lw, v, flat4=True) for v in (a, b))
    return a, b


def _sub(lw: Lowering, node: fx.Node) -> None:
    a, b = _pair(lw, node)
    act, qnode = lw.tail(node, fusable=True)
    _finish(lw, node, OpType.SUB, (a.name, b.name), ElementwiseOptions(act), qnode, flat4=a.flat4)


def _extremum(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        a, b = _pair(lw, node)
        _, qnode = lw.tail(node, fusable=False)
        for v in (a, b):
            _require_shared(lw, node, v, qnode)
        _finish(lw, node, op_type, (a.name, b.name), NoOptions(), qnode, flat4=a.flat4)

    return handler


def _bound_const(lw: Lowering, node: fx.Node, x: Value, bound: float, what: str) -> str:
    """An int8 constant of ``bound`` in x's qparams, rounded as quantize_per_tensor does (float32, half even)."""
    scale, zp = np.float32(x.qparams.scale[0]), int(x.qparams.zero_point[0])
    q = np.round(np.float32(bound) * (np.float32(1.0) / scale)) + zp
    value = np.array([np.clip(q, -128, 127)], np.int8)
    src = lw.source(node)
    return lw.add_const(f"{src or node.name}.{what}", value, DType.INT8, QParams.per_tensor(float(scale), zp), src)


def _clamp(lw: Lowering, node: fx.Node) -> None:
    if fused_activation(node) is not None:  # standalone ReLU-like clamp with its own qparams
        _standalone_activation(lw, node)
        return
    x = lw.act(node.args[0], node)
    _, qnode = lw.tail(node, fusable=False)
    qp = qparams_of(lw, qnode)
    if qp != x.qparams:
        raise QuantSpecError(f"{lw.where(node)}: a clamp to ({clamp_bounds(node)}) must keep its input's qparams; "
                             "the quantizer shares them")
    lo, hi = clamp_bounds(node)
    src = lw.source(node)
    steps = [(OpType.MAXIMUM, lo, "min")] if lo != float("-inf") else []
    steps += [(OpType.MINIMUM, hi, "max")] if hi != float("inf") else []
    current = x
    for k, (op_type, bound, what) in enumerate(steps):
        const = _bound_const(lw, node, x, bound, what)
        if k == len(steps) - 1:
            _finish(lw, node, op_type, (current.name, const), NoOptions(), qnode, qparams=qp, order=x.order,
                    flat4=x.flat4)
        else:
            nxt = lw.add_act(f"{src or node.name}.{what}", x.torch_shape, qp, src, x.order, x.flat4)
            lw.emit(op_type, (current.name, const), nxt, NoOptions(), src)
            current = nxt


def _transpose(lw: Lowering, node: fx.Node) -> None:
    """permute/transpose -> TRANSPOSE, its permutation mapped from PyTorch dims to IR (NHWC) axes."""

    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    perm = torch_perm(node, rank) or list(range(rank))
    if perm[0] != 0 or rank not in _AXIS:
        raise UnsupportedOpError(str(node.target), lw.where(node), "the batch dim must stay first; ranks 2-4")
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    if perm == list(range(rank)):
        _require_shared(lw, node, x, qnode)
        lw.qvals[qnode] = x
        return
    axis = _AXIS[rank]
    ir_perm = list(range(4 if rank in (3, 4) else 2))
    for j in range(rank):
        ir_perm[axis[j]] = axis[perm[j]]
    src = lw.source(node)
    const = lw.add_const(f"{src or node.name}.perm", np.array(ir_perm, np.int32), DType.INT32, None, src)
    qp = _require_shared(lw, node, x, qnode)
    _finish(lw, node, OpType.TRANSPOSE, (x.name, const), NoOptions(), qnode, qparams=qp)


def _slice(lw: Lowering, node: fx.Node) -> None:
    """x[..., a:b:s] on one dim -> STRIDED_SLICE over the IR axes (a full slice is no op at all)."""

    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode)
    dim = int(node.args[1]) % rank if len(node.args) > 1 else 0
    size = x.torch_shape[dim]
    start = node.args[2] if len(node.args) > 2 and node.args[2] is not None else 0
    end = node.args[3] if len(node.args) > 3 and node.args[3] is not None else size
    step = int(node.args[4]) if len(node.args) > 4 else 1
    begin, stop = (min(max(int(v) + (size if int(v) < 0 else 0), 0), size) for v in (start, end))
    if (begin, stop, step) == (0, size, 1):
        lw.qvals[qnode] = x
        return
    if dim == 0 or rank not in _AXIS or step < 1:
        raise UnsupportedOpError(str(node.target), lw.where(node), "slice a non-batch dim of rank 2-4, step >= 1")
    ir = lw.tensors[x.name].shape
    axis = 3 if x.flat4 else _AXIS[rank][dim]
    b, e, s = [0] * len(ir), list(ir), [1] * len(ir)
    b[axis], e[axis], s[axis] = begin, stop, step
    src = lw.source(node)
    consts = [lw.add_const(f"{src or node.name}.{k}", np.array(v, np.int32), DType.INT32, None, src)
              for k, v in (("begin", b), ("end", e), ("strides", s))]
    _finish(lw, node, OpType.STRIDED_SLICE, (x.name, *consts), StridedSliceOptions(begin_mask=1, end_mask=1),
            qnode, qparams=qp, flat4=x.flat4)


def _expand(lw: Lowering, node: fx.Node) -> None:
    """expand/expand_as feeding a broadcasting op: the op broadcasts the unexpanded value itself."""
    x = lw.act(node.args[0], node)
    _, qnode = lw.tail(node, fusable=False)
    _require_shared(lw, node, x, qnode)
    if len(lw.shape(qnode)) != len(x.torch_shape):
        raise UnsupportedOpError(str(node.target), lw.where(node), "expand must keep the rank (use view first)")
    lw.qvals[qnode] = x


def _prelu(lw: Lowering, node: fx.Node) -> None:
    """PReLU -> PRELU; the slopes (C,) or (1,) become an int8 constant broadcast along the IR channel axis."""

    x = lw.act(node.args[0], node)
    _no_order(lw, node, x)
    data, qp = _const(lw, node.args[1], node, "the PReLU slope")
    if qp.scale.size != 1:
        raise QuantSpecError(f"{lw.where(node)}: the PReLU slope must be quantized per tensor")
    rank = len(lw.tensors[x.name].shape)
    shape = (1,) if data.size == 1 else (*([1] * (rank - 1)), data.size)
    src = lw.source(node)
    alpha = lw.add_const(f"{src or node.name}.alpha", data.reshape(shape), DType.INT8, qp, src)
    _, qnode = lw.tail(node, fusable=False)
    _finish(lw, node, OpType.PRELU, (x.name, alpha), NoOptions(), qnode, flat4=x.flat4)


MORE_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "hard_swish": _unary(OpType.HARD_SWISH),
    "leaky_relu": _unary(OpType.LEAKY_RELU, _leaky_options),
    "abs": _unary(OpType.ABS),
    "sub": _sub,
    "maximum": _extremum(OpType.MAXIMUM),
    "minimum": _extremum(OpType.MINIMUM),
    "clamp": _clamp,
    "transpose": _transpose,
    "slice": _slice,
    "expand": _expand,
    "prelu": _prelu,
}
