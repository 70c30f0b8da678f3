"""ONNX QDQ emitters of issue 11's ops (HARD_SWISH, LEAKY_RELU, ABS, SUB, MAXIMUM, MINIMUM).

Registered into :data:`tinyprec.formats.onnx_qdq.EMITTERS`; each gets the builder of that module (its
``node``/``value``/``weight``/``activation`` methods) and returns the float ONNX value of the op's
output, which the caller wraps in QuantizeLinear -> DequantizeLinear with the IR output's qparams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir.graph import Op
from tinyprec.ir.ops import ElementwiseOptions, LeakyReluOptions, OpType

_TO_NCHW = (0, 3, 1, 2)


def _where(op: Op, index: int) -> str:
    return f"node {index} '{op.name or op.type.value}'" + (f" ({op.source})" if op.source else "")


def _operand(b: Any, name: str | None, op: Op, i: int) -> str:
    """An input's float ONNX value; an int8 constant operand (a clamp bound) is dequantized in place."""
    t = b.graph.tensors[name] if name is not None else None
    if t is not None and t.is_const and name not in b.values:
        data = np.asarray(t.data).astype(t.dtype.numpy)
        if data.ndim == 4:
            data = np.transpose(data, _TO_NCHW)
        b.values[name] = b.weight(t, np.ascontiguousarray(data), 1)
    return str(b.value(name, op, i))


def _binary(kind: str) -> Callable[[Any, Op, int], str]:
    def emit(b: Any, op: Op, i: int) -> str:
        tensors = [b.graph.tensors[n] for n in op.inputs[:2] if n is not None]
        ranks = {len(t.shape) for t in tensors if not (t.is_const and int(np.prod(t.shape)) == 1)}  # scalars broadcast
        if len(ranks) != 1:
            raise UnsupportedOpError(op.type.value, _where(op, i), "broadcasting between tensors of different "
                                     "rank is not written to ONNX; give both inputs the same rank")
        y = b.node(kind, [_operand(b, n, op, i) for n in op.inputs[:2]], f"{op.outputs[0]}_{kind.lower()}")
        if isinstance(op.options, ElementwiseOptions):
            y = b.activation(y, op.options.activation, f"{op.outputs[0]}_act")
        return str(y)

    return emit


def _unary(kind: str) -> Callable[[Any, Op, int], str]:
    def emit(b: Any, op: Op, i: int) -> str:
        attrs: dict[str, Any] = {}
        if isinstance(op.options, LeakyReluOptions):
            attrs["alpha"] = float(op.options.alpha)
        return str(b.node(kind, [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_{kind.lower()}", **attrs))

    return emit


def _transpose(b: Any, op: Op, i: int) -> str:
    """The IR permutation applied to the ONNX value (NCHW for a 4-D IR tensor, so it is wrapped in the
    NHWC <-> NCHW permutations; all three composed into one Transpose)."""
    t = b.graph.tensors.get(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] else None
    if t is None or t.data is None:
        raise UnsupportedOpError("TRANSPOSE", _where(op, i), "the permutation must be a constant")
    perm = [int(p) for p in np.asarray(t.data).reshape(-1)]
    if len(perm) == 4:
        to_nhwc = (0, 2, 3, 1)
        perm = [to_nhwc[perm[_TO_NCHW[k]]] for k in range(4)]
    return str(b.node("Transpose", [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_transpose", perm=perm))


MORE_EMITTERS: dict[OpType, Callable[[Any, Op, int], str]] = {
    OpType.HARD_SWISH: _unary("HardSwish"),
    OpType.LEAKY_RELU: _unary("LeakyRelu"),
    OpType.ABS: _unary("Abs"),
    OpType.SUB: _binary("Sub"),
    OpType.MAXIMUM: _binary("Max"),
    OpType.MINIMUM: _binary("Min"),
    OpType.TRANSPOSE: _transpose,
}
