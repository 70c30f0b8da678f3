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
from tinyprec.ir.ops import ElementwiseOptions, LeakyReluOptions, OpType, StridedSliceOptions

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


def _strided_slice(b: Any, op: Op, i: int) -> str:
    """STRIDED_SLICE as ONNX Slice over the resolved per-axis ranges (4-D axes mapped to NCHW)."""
    from tinyprec.ir.slicing import slice_ranges

    consts = [b.graph.tensors.get(n) for n in op.inputs[1:4]]
    if len(consts) != 3 or any(t is None or t.data is None for t in consts):
        raise UnsupportedOpError("STRIDED_SLICE", _where(op, i), "begin, end and strides must be constants")
    o = op.options
    assert isinstance(o, StridedSliceOptions)
    shape = b.graph.tensors[op.inputs[0]].shape
    begin, end, strides = ([int(v) for v in np.asarray(t.data).reshape(-1)] for t in consts)  # type: ignore[union-attr]
    ranges = slice_ranges(shape, begin, end, strides, o.begin_mask, o.end_mask, o.shrink_axis_mask)
    if any(r[3] for r in ranges):
        raise UnsupportedOpError("STRIDED_SLICE", _where(op, i), "shrink_axis_mask is not written to ONNX")
    nchw = {0: 0, 1: 2, 2: 3, 3: 1}
    axes, starts, ends, steps = [], [], [], []
    for axis, (start, stop, stride, _) in enumerate(ranges):
        if axis == 0 or (start, stop, stride) == (0, shape[axis], 1):
            continue
        axes.append(nchw[axis] if len(shape) == 4 else axis)
        starts.append(start)
        ends.append(stop if stop >= 0 else -(1 << 62))
        steps.append(stride)
    if not axes:
        return str(b.value(op.inputs[0], op, i))
    ints = [b.const(f"{op.outputs[0]}_{k}", np.array(v, np.int64))
            for k, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
    return str(b.node("Slice", [b.value(op.inputs[0], op, i), *ints], f"{op.outputs[0]}_slice"))


def _reduce_max(b: Any, op: Op, i: int) -> str:
    """REDUCE_MAX (keep_dims) as ReduceMax over the ONNX axes (a 4-D IR tensor is NCHW in ONNX)."""
    from tinyprec.formats.onnx_qdq import NHWC_TO_NCHW_AXIS, _const_ints
    from tinyprec.ir.ops import MeanOptions

    o = op.options
    assert isinstance(o, MeanOptions)
    rank = b.rank(op.inputs[0])
    if not o.keep_dims:
        raise UnsupportedOpError("REDUCE_MAX", f"op {i} '{op.outputs[0]}'", "only keep_dims=True is written to ONNX")
    axes = sorted({int(a) % rank for a in _const_ints(b, op, i, 1).reshape(-1)})
    if rank == 4:
        axes = sorted(NHWC_TO_NCHW_AXIS[a] for a in axes)
    return str(b.node("ReduceMax", [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_max", axes=axes, keepdims=1))


def _rsqrt(b: Any, op: Op, i: int) -> str:
    """RSQRT as Sqrt then Reciprocal (a zero input gives +inf, which QuantizeLinear saturates to the top
    value, as TFLM returns its int8 maximum for an input at the zero point)."""
    root = b.node("Sqrt", [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_sqrt")
    return str(b.node("Reciprocal", [root], f"{op.outputs[0]}_rsqrt"))


MORE_EMITTERS: dict[OpType, Callable[[Any, Op, int], str]] = {
    OpType.HARD_SWISH: _unary("HardSwish"),
    OpType.LEAKY_RELU: _unary("LeakyRelu"),
    OpType.ABS: _unary("Abs"),
    OpType.SUB: _binary("Sub"),
    OpType.MAXIMUM: _binary("Max"),
    OpType.MINIMUM: _binary("Min"),
    OpType.TRANSPOSE: _transpose,
    OpType.STRIDED_SLICE: _strided_slice,
    OpType.PRELU: _binary("PRelu"),
    OpType.ELU: _unary("Elu"),  # alpha 1.0, ONNX's default
    OpType.REDUCE_MAX: _reduce_max,
    OpType.RSQRT: _rsqrt,  # issue 11 (LayerNorm)
}
