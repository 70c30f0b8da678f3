"""The lowering table: aten op -> handler; the shape, pooling and elementwise handlers live here.

Weighted ops and quantize/dequantize are in :mod:`tinyprec.lowering.ops`, shared helpers in
:mod:`tinyprec.lowering.common`; the table imports every handler module, none imports the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import (
    Activation,
    ConcatenationOptions,
    ElementwiseOptions,
    NoOptions,
    OpType,
    Padding,
    PoolOptions,
    SoftmaxOptions,
)
from tinyprec.ir.layout import ir_shape
from tinyprec.lowering.act import ACT_LOWERINGS, _mean
from tinyprec.lowering.attention import softmax_heads
from tinyprec.lowering.constants import constant_operand, is_constant_operand
from tinyprec.lowering.common import (
    _arg,
    _emit_reshape,
    _finish,
    _hw,
    _no_order,
    _pair,
    _require_shared,
    _standalone_activation,
    reshape_value,
    same_pads,
)
from tinyprec.lowering.more import MORE_LOWERINGS
from tinyprec.lowering.nodes import _AXIS, DEQUANTIZE_OPS, QUANTIZE_OPS, aten, qd
from tinyprec.lowering.norm import NORM_LOWERINGS
from tinyprec.lowering.ops import _conv, _dequantize, _identity, _ignore, _linear, _quantize
from tinyprec.lowering.shape import SHAPE_LOWERINGS, softmax_last_dim
from tinyprec.lowering.select import SELECT_LOWERINGS
from tinyprec.lowering.state import Lowering, Value, qparams_of
from tinyprec.optable.table import OPS, supported_summary


def _elementwise(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        args = [a for a in node.args[:2]]
        if not all(isinstance(a, fx.Node) for a in args):
            raise UnsupportedOpError(
                f"{op_type.value.lower()} with a constant", lw.where(node), "both operands must be tensors"
            )
        const = [is_constant_operand(lw, x) for x in args]  # LayerNorm's weight/bias, a GRU's first-step b_hh
        if all(const):
            raise UnsupportedOpError(str(node.target), lw.where(node), "at least one operand must be an activation")
        a, b = (None if c else lw.act(x, node) for x, c in zip(args, const))
        a = a if a is not None else constant_operand(lw, args[0], node, b)
        b = b if b is not None else constant_operand(lw, args[1], node, a)
        if len(a.torch_shape) != len(b.torch_shape):
            raise UnsupportedOpError(str(node.target), lw.where(node), "operands must have the same rank")
        _no_order(lw, node, a, b)
        if a.flat4 != b.flat4:
            a, b = (v if v.flat4 else reshape_value(lw, v, flat4=True) for v in (a, b))
        act, qnode = lw.tail(node, fusable=True)
        _finish(lw, node, op_type, (a.name, b.name), ElementwiseOptions(act), qnode, flat4=a.flat4)

    return handler


def _pool(op_type: OpType, adaptive: bool = False) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        x = lw.act(node.args[0], node)
        rank = len(x.torch_shape)
        h, w = _hw(x.torch_shape)
        if adaptive:
            oh, ow = _pair(node.args[1], rank)
            if h % oh or w % ow:
                raise UnsupportedOpError(str(node.target), lw.where(node), "input size must be a multiple of output")
            kernel, stride, pads = (h // oh, w // ow), (h // oh, w // ow), (0, 0)
        else:
            kernel = _pair(node.args[1], rank)
            stride_arg = _arg(node, 2, "stride", [])
            stride = _pair(stride_arg, rank) if stride_arg else kernel
            pads = _pair(_arg(node, 3, "padding", 0), rank)
            if rank == 3:
                pads = (0, pads[1])
        padding = Padding.VALID
        if any(pads):
            include_pad = op_type is OpType.AVERAGE_POOL_2D and bool(_arg(node, 5, "count_include_pad", True))
            same = (same_pads(h, kernel[0], stride[0]) == (pads[0], pads[0])
                    and same_pads(w, kernel[1], stride[1]) == (pads[1], pads[1]))
            if include_pad or not same:
                raise UnsupportedOpError(
                    str(node.target), lw.where(node),
                    "pool padding must equal TensorFlow's SAME split (and count_include_pad=False for avg)",
                )
            padding = Padding.SAME
        act, qnode = lw.tail(node, fusable=True)
        qp = qparams_of(lw, qnode)
        if op_type is OpType.AVERAGE_POOL_2D and qp != x.qparams and kernel == (h, w) and act is Activation.NONE:
            _mean(lw, node, x, qnode, keep_dims=True)  # a global average that rescales: MEAN does
            return
        _require_shared(lw, node, x, qnode)
        options = PoolOptions(kernel[0], kernel[1], stride[0], stride[1], padding, act)
        _finish(lw, node, op_type, (x.name,), options, qnode)

    return handler


def _reshape(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    _, qnode = lw.tail(node, fusable=False)
    out_shape = lw.shape(qnode)
    if tuple(out_shape) == tuple(x.torch_shape):
        _require_shared(lw, node, x, qnode)
        lw.qvals[qnode] = x
        return
    _emit_reshape(lw, node, x, qnode)


def _cat(lw: Lowering, node: fx.Node) -> None:
    values = [lw.act(a, node) for a in node.args[0]]
    rank = len(values[0].torch_shape)
    _no_order(lw, node, *values)
    dim = int(_arg(node, 1, "dim", 0)) % rank
    flat4 = rank == 2 and any(v.flat4 for v in values)
    if flat4:
        values = [v if v.flat4 else reshape_value(lw, v, flat4=True) for v in values]
    _, qnode = lw.tail(node, fusable=False)  # TFLM's CONCATENATION refuses a fused activation
    for v in values:
        _require_shared(lw, node, v, qnode)
    options = ConcatenationOptions(3 if flat4 and dim == 1 else _AXIS[rank][dim])
    _finish(lw, node, OpType.CONCATENATION, tuple(v.name for v in values), options, qnode, flat4=flat4)


def _softmax(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    if rank == 3 and int(node.args[1]) % rank == 2 and not x.flat4:
        softmax_last_dim(lw, node)  # attention scores (N, M, P): issue 11
        return
    if rank == 4 and int(node.args[1]) % rank == 3:
        softmax_heads(lw, node, x)  # multi-head attention scores (N, H, M, P): issue 11
        return
    if _AXIS[rank][int(node.args[1]) % rank] != len(ir_shape(x.torch_shape)) - 1:
        raise UnsupportedOpError("softmax", lw.where(node), "softmax must run over the channel/feature dim")
    _, qnode = lw.tail(node, fusable=False)
    order = x.order if rank == 2 else None
    _finish(lw, node, OpType.SOFTMAX, (x.name,), SoftmaxOptions(1.0), qnode, order=order, flat4=x.flat4)


def _unary(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        x = lw.act(node.args[0], node)
        _, qnode = lw.tail(node, fusable=False)
        _finish(lw, node, op_type, (x.name,), NoOptions(), qnode, order=x.order, flat4=x.flat4)

    return handler


def _pad(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    if x.flat4:
        x = reshape_value(lw, x, flat4=False)
    pads = tuple(int(p) for p in node.args[1])
    if node.target is aten.pad.default:
        mode = _arg(node, 2, "mode", "constant")
        value = _arg(node, 3, "value", None)
    else:
        mode, value = "constant", _arg(node, 2, "value", 0)
    if mode != "constant" or float(value or 0.0) != 0.0 or min(pads, default=0) < 0:
        raise UnsupportedOpError(f"pad({mode}, {value})", lw.where(node), "only zero padding by >= 0")
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode)
    lw.qvals[qnode] = Value("", qp, lw.shape(qnode), lw.source(node), None, (x, pads), dtype=x.dtype)


#: The lowering handlers by name: the ``lowering`` column of :data:`tinyprec.optable.table.OPS`.
LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "conv": _conv,
    "linear": _linear,
    "activation": _standalone_activation,
    "add": _elementwise(OpType.ADD),
    "mul": _elementwise(OpType.MUL),
    "max_pool": _pool(OpType.MAX_POOL_2D),
    "avg_pool": _pool(OpType.AVERAGE_POOL_2D),
    "adaptive_avg_pool": _pool(OpType.AVERAGE_POOL_2D, adaptive=True),
    "reshape": _reshape,
    "cat": _cat,
    "pad": _pad,
    "softmax": _softmax,
    "logistic": _unary(OpType.LOGISTIC),
    "tanh": _unary(OpType.TANH),
    "identity": _identity,
    **MORE_LOWERINGS,  # issue 11's ops (lowering/more.py)
    **SHAPE_LOWERINGS,  # issue 11's shape ops (lowering/shape.py)
    **ACT_LOWERINGS,  # issue 11's activation / arithmetic ops (lowering/act.py)
    **NORM_LOWERINGS,  # issue 11's LayerNorm pieces (lowering/norm.py)
    **SELECT_LOWERINGS,  # issue 11: x[:, i] and torch.stack (lowering/select.py)
}


def _overload(name: str) -> Any:
    """The torch op overload of a table key such as ``"aten.conv2d.padding"``."""
    _, op, overload = name.split(".")
    return getattr(getattr(aten, op), overload)


#: aten overload -> handler: the graph plumbing (quantize/dequantize) plus one entry per row of OPS.
HANDLERS: dict[Any, Callable[[Lowering, fx.Node], None]] = {
    **{op: _quantize for op in QUANTIZE_OPS},
    **{op: _dequantize for op in DEQUANTIZE_OPS},
    qd.dequantize_per_channel.default: _ignore,
    **{_overload(name): LOWERINGS[row.lowering] for name, row in OPS.items() if row.lowering is not None},
}

SUPPORTED_HINT = f"supported: {supported_summary()}"
