"""Lowering handlers of issue 11's LayerNorm pieces and of Linear on an (N, T, F) sequence.

- ``rsqrt`` -> RSQRT (int8, own output qparams).
- ``x * c`` / ``x + c`` with ``c`` a quantized constant tensor (LayerNorm's weight and bias, shaped
  (1, ..., 1, F) by :mod:`tinyprec.quant.norm_rewrite`) -> MUL / ADD with an int8 constant operand in the
  IR layout, broadcast by TFLM; :func:`constant_operand` is called by the ADD/MUL handler first.
- ``linear`` on a rank-3 (N, T, F) input: the IR holds that value as (N, 1, F, T) (T is the channel), so it
  becomes TRANSPOSE to (N, 1, T, F), a 1x1 CONV_2D over F (TFLM and TF Lite agree on CONV_2D; DESIGN's
  reason for lowering nn.Linear that way), and TRANSPOSE back. A TRANSPOSE of the same value is reused
  (q, k and v read one LayerNorm output), and :func:`tinyprec.lowering.shape.cancel_transpose_pairs`
  drops a back-transpose that the next Linear or a ``.transpose(-2, -1)`` undoes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import fx

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import Conv2DOptions, DType, ElementwiseOptions, NoOptions, Op, OpType, Padding, QParams, Tensor
from tinyprec.ir.layout import layout_of_rank, to_ir_layout
from tinyprec.lowering.common import _arg, _bias, _const, _finish, _name, _no_order, weight_dtype
from tinyprec.lowering.more import _unary
from tinyprec.lowering.nodes import _DQ_CONST_OPS
from tinyprec.lowering.state import Lowering, Value, qparams_of

_SWAP = (0, 1, 3, 2)  # (N, 1, F, T) <-> (N, 1, T, F)


def _is_constant(arg: object) -> bool:
    return (isinstance(arg, fx.Node) and arg.target in _DQ_CONST_OPS and isinstance(arg.args[0], fx.Node)
            and arg.args[0].op == "get_attr")


def constant_operand(lw: Lowering, node: fx.Node, op_type: OpType) -> bool:
    """ADD/MUL of an activation and a quantized constant tensor -> the op with an int8 constant operand (in the
    IR layout of the activation, broadcast by TFLM). False (nothing emitted) when neither operand is one."""
    args = list(node.args[:2])
    consts = [_is_constant(a) for a in args]
    if not any(consts):
        return False
    if all(consts):
        raise UnsupportedOpError(str(node.target), lw.where(node), "one operand must be an activation")
    k = consts.index(True)
    x = lw.act(args[1 - k], node)
    _no_order(lw, node, x)
    if x.dtype is not DType.INT8:
        raise UnsupportedOpError(str(node.target), lw.where(node), "a constant operand with int8 activations only")
    data, qp = _const(lw, args[k], node, "the constant operand")
    if qp.scale.size != 1:
        raise QuantSpecError(f"{lw.where(node)}: the constant operand must be quantized per tensor")
    rank = len(x.torch_shape)
    if data.ndim != rank or data.shape[0] != 1:
        raise UnsupportedOpError(str(node.target), lw.where(node),
                                 f"a constant operand of shape {tuple(data.shape)}: give it x's rank with batch 1")
    if x.flat4:
        stored = data.reshape(1, 1, 1, -1) if rank == 2 else data
    else:
        stored = to_ir_layout(data, layout_of_rank(rank)) if rank in (3, 4) else data
    src = lw.source(node)
    const = lw.add_const(f"{src or node.name}.constant", stored, DType.INT8, qp, src)
    act, qnode = lw.tail(node, fusable=True)
    inputs = (const, x.name) if k == 0 else (x.name, const)
    _finish(lw, node, op_type, inputs, ElementwiseOptions(act), qnode, flat4=x.flat4)
    return True


def _swapped(lw: Lowering, x: Value, src: str | None) -> str:
    """x (IR (1, 1, A, B)) transposed to (1, 1, B, A): an existing TRANSPOSE of x is reused."""
    for op in lw.ops:
        if op.type is OpType.TRANSPOSE and op.inputs[0] == x.name:
            perm = lw.tensors[op.inputs[1]].data  # type: ignore[index]
            if perm is not None and tuple(int(p) for p in perm) == _SWAP:
                return op.outputs[0]
    n, one, a, b = lw.tensors[x.name].shape
    perm_name = lw.add_const(f"{x.name}.perm", np.array(_SWAP, np.int32), DType.INT32, None, src)
    out = lw.unique(f"{x.name}.swapped")
    lw.tensors[out] = Tensor(out, (n, one, b, a), x.dtype, x.qparams, None, src)
    lw.ops.append(Op(OpType.TRANSPOSE, (x.name, perm_name), (out,), NoOptions(), name=out, source=src))
    return out


def linear_sequence(lw: Lowering, node: fx.Node, x: Value) -> None:
    """Linear over the last dim of an (N, T, F) value: TRANSPOSE, 1x1 CONV_2D, TRANSPOSE."""
    _no_order(lw, node, x)
    if x.dtype is not DType.INT8 or x.flat4:
        raise UnsupportedOpError("linear", lw.where(node), "a Linear on (N, T, F) runs with int8 activations only")
    w, w_qp = _const(lw, node.args[1], node, "the weight")
    w_type = weight_dtype(lw, node.args[1], node)
    src = _name(lw, node)
    act, qnode = lw.tail(node, fusable=True)
    rows = _swapped(lw, x, lw.source(node))  # (1, 1, T, F)
    f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
    w_name = lw.add_const(f"{src}.weight", w.reshape(w.shape[0], 1, 1, w.shape[1]), w_type, f_qp, lw.source(node))
    b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)
    _, steps, _ = x.torch_shape
    out_q = lw.shape(qnode)

    mid = lw.add_act(f"{src}.rows", (1, int(out_q[2]), steps), qparams_of(lw, qnode), lw.source(node))
    lw.emit(OpType.CONV_2D, (rows, w_name, b_name), mid, Conv2DOptions(1, 1, Padding.VALID, 1, 1, act),
            lw.source(node))
    perm = lw.add_const(f"{src}.perm", np.array(_SWAP, np.int32), DType.INT32, None, lw.source(node))
    _finish(lw, node, OpType.TRANSPOSE, (mid.name, perm), NoOptions(), qnode)


NORM_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "rsqrt": _unary(OpType.RSQRT),
}
