"""The lowering table: aten op -> handler; the shape, pooling and elementwise handlers live here.

Weighted ops, quantize/dequantize and shared helpers are in :mod:`tinyprec.quant.lower_ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import (
    Activation,
    ConcatenationOptions,
    DType,
    ElementwiseOptions,
    MeanOptions,
    NoOptions,
    OpType,
    Padding,
    PoolOptions,
    QParams,
    ReshapeOptions,
    SoftmaxOptions,
)
from tinyprec.quant.lower import Lowering, Value, qparams_of
from tinyprec.quant.lower_more import MORE_LOWERINGS
from tinyprec.quant.lower_shape import SHAPE_LOWERINGS
from tinyprec.quant.lower_act import ACT_LOWERINGS
from tinyprec.quant.optable import OPS, supported_summary
from tinyprec.quant.lower_layout import ir_shape, storage_order
from tinyprec.quant.lower_ops import (
    _AXIS,
    ACTIVATIONS,
    DEQUANTIZE_OPS,
    QUANTIZE_OPS,
    _arg,
    _conv,
    _dequantize,
    _finish,
    _hw,
    _identity,
    _ignore,
    _linear,
    _no_order,
    _pair,
    _quantize,
    _require_shared,
    qd,
    same_pads,
)

aten = torch.ops.aten


def _elementwise(op_type: OpType) -> Callable[[Lowering, fx.Node], None]:
    def handler(lw: Lowering, node: fx.Node) -> None:
        args = [a for a in node.args[:2]]
        if not all(isinstance(a, fx.Node) for a in args):
            raise UnsupportedOpError(
                f"{op_type.value.lower()} with a constant", lw.where(node), "both operands must be tensors"
            )
        from tinyprec.quant.lower_recurrent import constant_operand, is_constant_operand

        const = [is_constant_operand(lw, x) for x in args]  # b_hh at an unrolled GRU's first step
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


def _reshape(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    _, qnode = lw.tail(node, fusable=False)
    out_shape = lw.shape(qnode)
    if tuple(out_shape) == tuple(x.torch_shape):
        _require_shared(lw, node, x, qnode)
        lw.qvals[qnode] = x
        return
    _emit_reshape(lw, node, x, qnode)


def _emit_reshape(lw: Lowering, node: fx.Node, x: Value, qnode: fx.Node) -> None:
    qp = _require_shared(lw, node, x, qnode)
    out_shape = lw.shape(qnode)
    if len(out_shape) not in _AXIS:
        raise UnsupportedOpError(f"reshape to rank {len(out_shape)}", lw.where(node), "ranks 2, 3 and 4 only")
    have = x.order if x.order is not None else storage_order(x.torch_shape)
    want = storage_order(out_shape)
    order = None
    if not np.array_equal(have, want):
        if len(out_shape) != 2:
            raise UnsupportedOpError(
                str(node.target), lw.where(node),
                "this reshape reorders NHWC data (it would need a TRANSPOSE); only flatten before a Linear",
            )
        order = have
    src = lw.source(node)
    # -1 for the batch, as TensorFlow's converter writes it, so a runtime may resize the batch.
    new_shape = (-1, *ir_shape(out_shape)[1:])
    shape_const = lw.add_const(f"{src or node.name}.shape", np.array(new_shape, np.int32), DType.INT32, None, src)
    out = _finish(lw, node, OpType.RESHAPE, (x.name, shape_const), ReshapeOptions(tuple(new_shape)), qnode,
                  qparams=qp, order=order)
    if len(out_shape) == 2 and len(x.torch_shape) in (3, 4):
        out.flattened_from = x


def reshape_value(lw: Lowering, x: Value, *, flat4: bool) -> Value:
    """A 2-D value re-expressed as an IR tensor [1, F] (flat4 False) or [1, 1, 1, F] (True), via RESHAPE."""
    out = lw.add_act(f"{x.name}.{'4d' if flat4 else '2d'}", x.torch_shape, x.qparams, x.source, x.order, flat4,
                     x.dtype)
    new_shape = (-1, *lw.tensors[out.name].shape[1:])
    const = lw.add_const(f"{out.name}.shape", np.array(new_shape, np.int32), DType.INT32, None, x.source)
    lw.emit(OpType.RESHAPE, (x.name, const), out, ReshapeOptions(tuple(new_shape)), x.source)
    lw.aliases[out.name] = lw.aliases.get(x.name, x.name)
    return out


def _cat(lw: Lowering, node: fx.Node) -> None:
    values = [lw.act(a, node) for a in node.args[0]]
    rank = len(values[0].torch_shape)
    _no_order(lw, node, *values)
    dim = int(_arg(node, 1, "dim", 0)) % rank
    flat4 = rank == 2 and any(v.flat4 for v in values)
    if flat4:
        values = [v if v.flat4 else reshape_value(lw, v, flat4=True) for v in values]
    act, qnode = lw.tail(node, fusable=True)
    for v in values:
        _require_shared(lw, node, v, qnode)
    options = ConcatenationOptions(3 if flat4 and dim == 1 else _AXIS[rank][dim], act)
    _finish(lw, node, OpType.CONCATENATION, tuple(v.name for v in values), options, qnode, flat4=flat4)


def _softmax(lw: Lowering, node: fx.Node) -> None:
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    if rank == 3 and int(node.args[1]) % rank == 2 and not x.flat4:
        from tinyprec.quant.lower_shape import softmax_last_dim

        softmax_last_dim(lw, node)  # attention scores (N, M, P): issue 11
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


def _standalone_activation(lw: Lowering, node: fx.Node) -> None:
    """A ReLU/ReLU6 with its own output qparams: MUL by an exact int8 1.0 with the fused activation.

    TFLite has no int8 RELU in our op set; MUL(x, 1.0) requantizes once from the input's to the output's
    qparams and clamps, which is what the fake-quant relu -> quantize computes.
    """
    x = lw.act(node.args[0], node)
    act = ACTIVATIONS[node.target](lw, node)
    _, qnode = lw.tail(node, fusable=False)
    src = lw.source(node)
    # 1.0 as int8 1 with scale 1: the requantizing multiplier is then exactly s_in / s_out, and TFLM's
    # MUL applies it with one rounding (a small int8 value would need a large right shift and round twice).
    # Of x's rank: the ONNX writer broadcasts only between tensors of one rank.
    one = lw.add_const(f"{src or node.name}.one", np.ones((1,) * len(lw.tensors[x.name].shape), x.dtype.numpy),
                       x.dtype, QParams.per_tensor(1.0, 0), src)
    _finish(lw, node, OpType.MUL, (x.name, one), ElementwiseOptions(act), qnode, order=x.order, flat4=x.flat4)


#: The lowering handlers by name: the ``lowering`` column of :data:`tinyprec.quant.optable.OPS`.
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
    **MORE_LOWERINGS,  # issue 11's ops (quant/lower_more.py)
    **SHAPE_LOWERINGS,  # issue 11's shape ops (quant/lower_shape.py)
    **ACT_LOWERINGS,  # issue 11's activation / arithmetic ops (quant/lower_act.py)
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
