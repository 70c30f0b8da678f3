"""Lowering of multi-head attention's rank-4 pieces (issue 11): matmul and softmax over the last dim of
(N, H, M, K) values, and the merging of TRANSPOSE chains that heads split by view/transpose produce.

The IR holds a rank-4 PyTorch value (N, H, M, K) as NHWC (N, M, K, H): the heads are the channel. TFLite's
BATCH_MATMUL multiplies the last two axes with the leading ones as batch, so each operand is first moved to
(N, H, K, M) (TRANSPOSE perm (0, 3, 2, 1): the matrix transposed, as the rank-3 lowering holds it), then
``C^T = B^T A^T`` is one BATCH_MATMUL(B', A') giving (N, H, P, M), and the same TRANSPOSE returns the NHWC
layout of C. A softmax over the last PyTorch dim (IR axis 2) is TRANSPOSE (0, 1, 3, 2), SOFTMAX,
TRANSPOSE back. :func:`merge_transpose_chains` then fuses every TRANSPOSE that only feeds another TRANSPOSE
into one (dropping it when the two compose to the identity), so a head split ``x.view(N, T, H, D)
.transpose(1, 2)`` followed by a matmul costs no transpose at all.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import Activation, DType, NoOptions, Op, OpType, SoftmaxOptions, Tensor
from tinyprec.ir.ops import BatchMatMulOptions
from tinyprec.lowering.common import _finish, _no_order, reader_counts
from tinyprec.lowering.state import Lowering, Value, qparams_of

_HEADS_FIRST = (0, 3, 2, 1)  # NHWC (N, M, K, H) <-> (N, H, K, M); its own inverse
_LAST_TWO = (0, 1, 3, 2)


def _transpose(lw: Lowering, name: str, perm: tuple[int, ...], src: str | None, base: str) -> str:
    shape = lw.tensors[name].shape
    const = lw.add_const(f"{base}.perm", np.array(perm, np.int32), DType.INT32, None, src)
    out = lw.unique(f"{base}.t")
    t = lw.tensors[name]
    lw.tensors[out] = Tensor(out, tuple(shape[p] for p in perm), t.dtype, t.qparams, None, src)
    lw.ops.append(Op(OpType.TRANSPOSE, (name, const), (out,), NoOptions(), name=out, source=src))
    return out


def matmul_heads(lw: Lowering, node: fx.Node, a: Value, b: Value) -> None:
    """(N, H, M, K) @ (N, H, K, P) -> TRANSPOSE both, BATCH_MATMUL(B', A'), TRANSPOSE."""
    _no_order(lw, node, a, b)
    if a.dtype is not DType.INT8 or b.dtype is not DType.INT8:
        raise UnsupportedOpError(str(node.target), lw.where(node), "matmul of int8 activations only")
    act, qnode = lw.tail(node, fusable=True)
    if act is not Activation.NONE:
        raise UnsupportedOpError(str(node.target), lw.where(node), "BATCH_MATMUL has no fused activation")
    src = lw.source(node)
    base = src or node.name
    lhs = _transpose(lw, b.name, _HEADS_FIRST, src, f"{base}.rhs")
    rhs = _transpose(lw, a.name, _HEADS_FIRST, src, f"{base}.lhs")
    n, h, m, p = lw.shape(qnode)
    out = lw.unique(f"{base}.heads")
    lw.tensors[out] = Tensor(out, (n, h, p, m), DType.INT8, qparams_of(lw, qnode), None, src)
    lw.ops.append(Op(OpType.BATCH_MATMUL, (lhs, rhs), (out,), BatchMatMulOptions(), name=out, source=src))
    perm = lw.add_const(f"{base}.perm", np.array(_HEADS_FIRST, np.int32), DType.INT32, None, src)
    _finish(lw, node, OpType.TRANSPOSE, (out, perm), NoOptions(), qnode)


def softmax_heads(lw: Lowering, node: fx.Node, x: Value) -> None:
    """Softmax over the last dim of (N, H, M, P) (IR axis 2 of (N, M, P, H)): TRANSPOSE, SOFTMAX, TRANSPOSE."""
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    src = lw.source(node)
    base = src or node.name
    rows = _transpose(lw, x.name, _LAST_TWO, src, f"{base}.rows")
    soft = lw.unique(f"{base}.softmax")
    lw.tensors[soft] = Tensor(soft, lw.tensors[rows].shape, DType.INT8, qparams_of(lw, qnode), None, src)
    lw.ops.append(Op(OpType.SOFTMAX, (rows,), (soft,), SoftmaxOptions(1.0), name=soft, source=src))
    perm = lw.add_const(f"{base}.perm", np.array(_LAST_TWO, np.int32), DType.INT32, None, src)
    _finish(lw, node, OpType.TRANSPOSE, (soft, perm), NoOptions(), qnode)


def merge_transpose_chains(lw: Lowering, outputs: list[str]) -> int:
    """Fuse TRANSPOSE -> TRANSPOSE (the first read by nothing else, same qparams) into one TRANSPOSE of the
    composed permutation, or none when that is the identity; returns how many TRANSPOSEs went."""
    merged = 0
    changed = True
    while changed:
        changed = False
        producer = {op.outputs[0]: op for op in lw.ops}
        readers = reader_counts(lw.ops)
        for second in lw.ops:
            if second.type is not OpType.TRANSPOSE:
                continue
            first = producer.get(second.inputs[0])  # type: ignore[arg-type]
            if first is None or first.type is not OpType.TRANSPOSE or readers.get(first.outputs[0]) != 1:
                continue
            if first.outputs[0] in outputs or lw.tensors[first.inputs[0]].qparams != lw.tensors[second.outputs[0]].qparams:  # type: ignore[index]
                continue
            p1, p2 = (lw.tensors[op.inputs[1]].data for op in (first, second))  # type: ignore[index]
            if p1 is None or p2 is None:
                continue
            composed = [int(p1[int(k)]) for k in p2]
            src, out = first.inputs[0], second.outputs[0]
            assert src is not None
            keep = [op for op in lw.ops if op is not first]
            if composed == list(range(len(composed))) and out not in outputs:
                lw.ops = [Op(op.type, tuple(src if n == out else n for n in op.inputs), op.outputs, op.options,
                             name=op.name, source=op.source) for op in keep if op is not second]
                lw.aliases[out] = lw.aliases.get(src, src)
                merged += 2
            else:
                perm = lw.add_const(f"{out}.perm", np.array(composed, np.int32), DType.INT32, None, second.source)
                lw.ops = [Op(op.type, (src, perm), op.outputs, op.options, name=op.name, source=op.source)
                          if op is second else op for op in keep]
                merged += 1
            changed = True
            break
    return merged
