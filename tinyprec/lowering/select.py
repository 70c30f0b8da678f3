"""Lowering handlers of integer indexing (``x[:, i]``, ``aten.select.int``) and ``torch.stack``.

Both move int8 values with the input's qparams (the quantizer shares them). Removing or adding a dim
changes the layout of the IR tensor (NHWC storage, :mod:`tinyprec.ir.layout`): ``(N, C, H, W)`` is stored
``(N, H, W, C)``, ``(N, C, L)`` as ``(N, 1, L, C)``, ``(N, F)`` as is. :func:`relayout` re-expresses a value
under a new PyTorch shape that differs only by size-1 dims: a RESHAPE when the storage order is unchanged
(or nothing when the IR shape is the same), else RESHAPE + TRANSPOSE + RESHAPE (e.g. ``y[:, 0]`` of an
``(N, C, H, W)`` map: ``(N, H, W)`` is stored ``(N, 1, W, H)``, rows and columns swapped).

- select -> STRIDED_SLICE of one position (dim kept, size 1), then :func:`relayout` to the output shape.
  (STRIDED_SLICE's ``shrink_axis_mask`` would give an IR tensor of rank 3, which is no IR layout; the
  RESHAPE after a kept-dim slice is what TFLM would run anyway.)
- stack -> :func:`relayout` of each input to its unsqueezed shape (a RESHAPE or nothing), then CONCATENATION
  on the IR axis of ``dim``; ``dim=1`` of ``(N, C, L)`` inputs, which would need a TRANSPOSE per input, is
  CONCATENATION on IR axis 1 (giving ``(N, C, K, L)``) and one TRANSPOSE. TFLM's PACK adds an
  axis to its output rank, which the rank-4 IR layout of an (N, C, L) -> (N, K, C, L) stack cannot use.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import fx

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir import ConcatenationOptions, DType, NoOptions, Op, OpType, ReshapeOptions, Tensor
from tinyprec.ir.layout import ir_shape
from tinyprec.ir.ops import StridedSliceOptions
from tinyprec.lowering.common import _arg, _finish, _no_order, _require_shared
from tinyprec.lowering.nodes import _AXIS
from tinyprec.lowering.state import Lowering, Value


def _storage_dims(torch_shape: tuple[int, ...]) -> list[int]:
    """The non-batch dims of size > 1, numbered in PyTorch order, in the order the IR stores them."""
    rank = len(torch_shape)
    big = [j for j in range(1, rank) if torch_shape[j] > 1]
    label = {j: k for k, j in enumerate(big)}
    return [label[j] for j in sorted(big, key=lambda j: _AXIS[rank][j])]


def _step(lw: Lowering, x: str, op_type: OpType, shape: tuple[int, ...], second: str, options: object,
          qp: object, dtype: DType, base: str, source: str | None) -> str:
    name = lw.unique(base)
    lw.tensors[name] = Tensor(name, shape, dtype, qp, None, source)  # type: ignore[arg-type]
    lw.ops.append(Op(op_type, (x, second), (name,), options, name=name, source=source))  # type: ignore[arg-type]
    return name


def _reshape(lw: Lowering, x: str, shape: tuple[int, ...], v: Value, base: str) -> str:
    if lw.tensors[x].shape == shape:
        return x
    new = (-1, *shape[1:])  # -1 for the batch, as TF's converter writes it
    const = lw.add_const(f"{base}.shape", np.array(new, np.int32), DType.INT32, None, v.source)
    return _step(lw, x, OpType.RESHAPE, shape, const, ReshapeOptions(new), v.qparams, v.dtype, base, v.source)


def relayout(lw: Lowering, v: Value, torch_shape: tuple[int, ...], base: str) -> Value:
    """``v`` as a value of PyTorch shape ``torch_shape`` (same sizes but for size-1 dims; see the module doc)."""
    assert [d for d in v.torch_shape[1:] if d > 1] == [d for d in torch_shape[1:] if d > 1], (v.torch_shape,
                                                                                            torch_shape)
    want = ir_shape(torch_shape)
    have, target = _storage_dims(v.torch_shape), _storage_dims(torch_shape)
    name = v.name
    if have != target:
        sizes = [d for d in v.torch_shape[1:] if d > 1]
        pad = 3 - len(sizes)  # the moved dims last in a rank-4 tensor
        name = _reshape(lw, name, (v.torch_shape[0], *([1] * pad), *(sizes[k] for k in have)), v, f"{base}.flat")
        perm = [0, *range(1, pad + 1), *(pad + 1 + have.index(k) for k in target)]
        const = lw.add_const(f"{base}.perm", np.array(perm, np.int32), DType.INT32, None, v.source)
        moved = tuple(lw.tensors[name].shape[p] for p in perm)
        name = _step(lw, name, OpType.TRANSPOSE, moved, const, NoOptions(), v.qparams, v.dtype, f"{base}.moved",
                     v.source)
    name = _reshape(lw, name, want, v, base)
    return Value(name, v.qparams, torch_shape, v.source, dtype=v.dtype)


def _select(lw: Lowering, node: fx.Node) -> None:
    """x[:, i] (any non-batch dim of a rank-3/4 value): STRIDED_SLICE of position i, then :func:`relayout`."""
    x = lw.act(node.args[0], node)
    rank = len(x.torch_shape)
    if rank not in (3, 4) or x.flat4:
        raise UnsupportedOpError(str(node.target), lw.where(node), "index a dim of a rank-3 or rank-4 tensor; "
                                 "on (N, F) keep the dim: x[:, i:i + 1]")
    _no_order(lw, node, x)
    _, qnode = lw.tail(node, fusable=False)
    qp = _require_shared(lw, node, x, qnode)
    dim = int(node.args[1]) % rank
    size = x.torch_shape[dim]
    index = int(node.args[2]) % size
    if dim == 0:
        raise UnsupportedOpError(str(node.target), lw.where(node), "indexing the batch dim is not supported")
    base = lw.source(node) or node.name
    kept = tuple(1 if j == dim else d for j, d in enumerate(x.torch_shape))
    piece = x
    if size > 1:
        ir = lw.tensors[x.name].shape
        axis = _AXIS[rank][dim]
        b, e = [0] * len(ir), list(ir)
        b[axis], e[axis] = index, index + 1
        consts = [lw.add_const(f"{base}.{k}", np.array(v, np.int32), DType.INT32, None, lw.source(node))
                  for k, v in (("begin", b), ("end", e), ("strides", [1] * len(ir)))]
        piece = lw.add_act(f"{base}.slice", kept, qp, lw.source(node), dtype=x.dtype)
        lw.emit(OpType.STRIDED_SLICE, (x.name, *consts), piece, StridedSliceOptions(begin_mask=1, end_mask=1),
                lw.source(node))
    else:
        piece = Value(x.name, qp, kept, x.source, dtype=x.dtype)
    lw.qvals[qnode] = relayout(lw, piece, lw.shape(qnode), base)


def _stack(lw: Lowering, node: fx.Node) -> None:
    """torch.stack(xs, dim): each input relaid out as its unsqueezed shape, then CONCATENATION."""
    values = [lw.act(a, node) for a in node.args[0]]
    rank = len(values[0].torch_shape) + 1
    if rank not in (3, 4):
        raise UnsupportedOpError(str(node.target), lw.where(node), "stack (N, F) or (N, C, L) tensors only")
    _no_order(lw, node, *values)
    dim = int(_arg(node, 1, "dim", 0)) % rank
    if dim == 0:
        raise UnsupportedOpError(str(node.target), lw.where(node), "stacking along the batch dim is not supported")
    _, qnode = lw.tail(node, fusable=False)  # TFLM's CONCATENATION requires no fused activation
    for v in values:
        _require_shared(lw, node, v, qnode)
    base = lw.source(node) or node.name
    n, c, length = values[0].torch_shape if rank == 4 else (0, 1, 1)
    if dim == 1 and c > 1 and length > 1:
        # (N, C, L) inputs are stored (N, 1, L, C): concatenated on IR axis 1 they are (N, C, K, L), one
        # TRANSPOSE from (N, K, C, L), instead of a TRANSPOSE per input.
        k = len(values)
        mid = lw.add_act(f"{base}.rows", (n, c, k, length), values[0].qparams, lw.source(node), dtype=values[0].dtype)
        lw.emit(OpType.CONCATENATION, tuple(v.name for v in values), mid, ConcatenationOptions(1), lw.source(node))
        perm = lw.add_const(f"{base}.perm", np.array([0, 3, 2, 1], np.int32), DType.INT32, None, lw.source(node))
        _finish(lw, node, OpType.TRANSPOSE, (mid.name, perm), NoOptions(), qnode, qparams=mid.qparams)
        return
    parts = []
    for k, v in enumerate(values):
        shape = (*v.torch_shape[:dim], 1, *v.torch_shape[dim:])
        parts.append(relayout(lw, v, shape, f"{base}.in{k}").name)
    _finish(lw, node, OpType.CONCATENATION, tuple(parts), ConcatenationOptions(_AXIS[rank][dim]), qnode)


def collapse_reshapes(lw: Lowering, outputs: list[str]) -> int:
    """A RESHAPE of a RESHAPE reads the first one's input instead (``x[:, i]`` then ``unsqueeze``, or a select
    fed to a stack, make such chains), and one that ends in its input's own shape goes, its readers reading
    that input. Values are unchanged: a RESHAPE keeps qparams and storage order. Returns how many RESHAPEs
    were bypassed; the ones nothing reads any more are left for the dead-op sweep."""
    done = 0
    while True:
        producer = {op.outputs[0]: op for op in lw.ops}
        found = None
        for i, op in enumerate(lw.ops):
            first = producer.get(op.inputs[0] or "") if op.type is OpType.RESHAPE else None
            if first is not None and first.type is OpType.RESHAPE and first.inputs[0] is not None:
                a, b = lw.tensors[first.inputs[0]], lw.tensors[op.outputs[0]]
                if (a.qparams, a.dtype) == (b.qparams, b.dtype):
                    found = i, op, first.inputs[0]
                    break
        if found is None:
            return done
        i, op, src = found
        out = op.outputs[0]
        if lw.tensors[src].shape == lw.tensors[out].shape and out not in outputs:
            lw.ops = [Op(o.type, tuple(src if n == out else n for n in o.inputs), o.outputs, o.options, name=o.name,
                         source=o.source) for o in lw.ops if o is not op]
        else:
            lw.ops[i] = Op(op.type, (src, *op.inputs[1:]), op.outputs, op.options, name=op.name, source=op.source)
        done += 1


SELECT_LOWERINGS: dict[str, Callable[[Lowering, fx.Node], None]] = {
    "select": _select,
    "stack": _stack,
}
