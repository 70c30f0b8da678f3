"""Lowering handlers of issue 11's LayerNorm pieces and of Linear on an (N, T, F) sequence.

- ``rsqrt`` -> RSQRT (int8, own output qparams).
- LayerNorm's weight and bias (shaped (1, ..., 1, F) by :mod:`tinyprec.quant.norm_rewrite`) are MUL / ADD
  with an int8 constant operand: :func:`tinyprec.lowering.constants.constant_operand`.
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

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import Conv2DOptions, DType, NoOptions, Op, OpType, Padding, QParams, Tensor
from tinyprec.lowering.common import _arg, _bias, _const, _finish, _name, _no_order, weight_dtype
from tinyprec.lowering.more import _unary
from tinyprec.lowering.nodes import _DQ_CONST_OPS
from tinyprec.lowering.state import Lowering, Value, qparams_of

_SWAP = (0, 1, 3, 2)  # (N, 1, F, T) <-> (N, 1, T, F)


def _is_constant(arg: object) -> bool:
    return (isinstance(arg, fx.Node) and arg.target in _DQ_CONST_OPS and isinstance(arg.args[0], fx.Node)
            and arg.args[0].op == "get_attr")


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
