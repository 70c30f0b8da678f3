"""Constants in the lowering: constant tensor operands of ADD / MUL, and constants stored once.

- A constant operand of ADD / MUL (LayerNorm's weight and bias; an unrolled GRU's first-step ``b_hh``, h0
  being zero): the converted graph holds it as ``dequantize_per_tensor(int8 constant)``, quantized once by the
  reader's input observer; it becomes a per-tensor int8 constant tensor of the IR in the other operand's
  layout, which TFLM broadcasts (:func:`constant_operand`).
- Constants several ops read (each time step's Linear reads the same weight): the lowering emits one IR
  tensor per reader, :func:`share_constants` keeps one of each identical set (same type, shape, qparams
  and bytes), so the .tflite, the ONNX file and the firmware hold each weight once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import DType, Op, QParams, Tensor
from tinyprec.ir.layout import LAYOUT_BY_RANK, ir_shape, to_ir_layout
from tinyprec.lowering.common import _const
from tinyprec.lowering.nodes import DEQUANTIZE_OPS
from tinyprec.lowering.state import Lowering, Value

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def is_constant_operand(lw: Lowering, arg: Any) -> bool:
    """True for an operand that is a dequantized int8 constant (not a quantized activation)."""
    if arg in lw.floats or getattr(arg, "target", None) not in DEQUANTIZE_OPS:
        return False
    src = arg.args[0]
    return getattr(src, "op", None) == "get_attr"


def constant_operand(lw: Lowering, arg: fx.Node, user: fx.Node, like: Value) -> Value:
    """The constant ``arg`` as an IR int8 (int16 with int16 activations) tensor laid out as ``like`` (the op's
    activation operand)."""
    data, qp = _const(lw, arg, user, "a constant operand")
    if qp.scale.size != 1:
        raise QuantSpecError(f"{lw.where(user)}: a constant operand must be quantized per tensor")
    dtype = {np.dtype(np.int8): DType.INT8, np.dtype(np.int16): DType.INT16}.get(data.dtype)
    if dtype is None or like.dtype is not dtype:
        raise UnsupportedOpError(str(user.target), lw.where(user),
                                 f"a {data.dtype} constant operand with {like.dtype.value} activations: both must be "
                                 "int8 or both int16")
    shape = tuple(int(d) for d in data.shape)
    if len(shape) != len(like.torch_shape) or shape[0] != 1:
        raise UnsupportedOpError(str(user.target), lw.where(user),
                                 f"a constant operand of shape {shape}: give it the activation's rank and a "
                                 "leading 1 (b.view(1, -1))")
    if len(shape) in (3, 4):
        data = to_ir_layout(data, LAYOUT_BY_RANK[len(shape)])
    elif like.flat4:
        data = data.reshape(1, 1, 1, -1)
    else:
        data = data.reshape(ir_shape(shape))
    src = lw.source(user)
    name = lw.add_const(f"{src or user.name}.operand", data, dtype, qp, src)
    return Value(name, qp, shape, src, flat4=like.flat4 and len(shape) == 2)


def share_constants(tensors: dict[str, Tensor], ops: list[Op]) -> tuple[dict[str, Tensor], list[Op]]:
    """One tensor per set of identical constants; the ops read it. Returns (tensors, ops)."""
    first: dict[tuple[Any, ...], str] = {}
    rename: dict[str, str] = {}
    for name, t in tensors.items():
        if t.data is None:
            continue
        key = (t.dtype, t.shape, _qkey(t.qparams), np.ascontiguousarray(t.data).tobytes())
        kept = first.setdefault(key, name)
        if kept != name:
            rename[name] = kept
    if not rename:
        return tensors, ops
    from dataclasses import replace

    ops = [replace(op, inputs=tuple(rename.get(n, n) if n is not None else None for n in op.inputs)) for op in ops]
    return {k: t for k, t in tensors.items() if k not in rename}, ops


def _qkey(qp: QParams | None) -> tuple[Any, ...] | None:
    if qp is None:
        return None
    return (np.asarray(qp.scale).tobytes(), np.asarray(qp.zero_point).tobytes(), qp.axis)
