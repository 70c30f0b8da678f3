"""Split a large INT4 layer's output channels into smaller ops + CONCATENATION, to cut TFLM's unpack scratch.

TFLM unpacks an INT4 filter into an arena scratch buffer of its full weight count at that op
(kernels/conv_common.cc). A CONV_2D (or FULLY_CONNECTED) whose output channels are computed by ``k``
ops on channel slices of the filter, bias and per-channel scales, each writing an int8 tensor with the
original output's qparams, then CONCATENATION on the channel axis (same qparams in and out: a copy), gives
bit-identical outputs with a scratch of ``weights / k``. The price: ``k`` ops and tensors more in the file,
and at the concatenation the pieces and the whole output live together.

Pure IR -> IR (torch-free); applied at export when ``[quant] int4_max_scratch`` is set.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tinyprec.ir import ConcatenationOptions, Graph, Op, OpType, QParams, Tensor

from tinyprec.mcu.budget import SPLITTABLE, pieces_for


def _slice_qparams(qp: QParams | None, lo: int, hi: int) -> QParams | None:
    if qp is None or qp.scale.size == 1:
        return qp
    return QParams(qp.scale[lo:hi].copy(), qp.zero_point[lo:hi].copy(), qp.axis)


def split_int4_layers(graph: Graph, max_scratch: int) -> Graph:
    """A copy of ``graph`` with every INT4 CONV_2D / FULLY_CONNECTED whose weight count exceeds
    ``max_scratch`` split into the fewest equal output-channel groups that fit (see the module doc)."""
    tensors = dict(graph.tensors)
    ops: list[Op] = []
    for op in graph.ops:
        w = tensors.get(op.inputs[1]) if op.type in SPLITTABLE and len(op.inputs) > 1 and op.inputs[1] else None
        if w is None or not w.is_const or w.dtype.value != "int4" or math.prod(w.shape) <= max_scratch:
            ops.append(op)
            continue
        channels = int(w.shape[0])  # OHWI conv, [out, in] FC
        k = pieces_for(int(math.prod(w.shape)), channels, max_scratch)
        if k == 1:
            ops.append(op)
            continue
        out = tensors[op.outputs[0]]
        b = tensors.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
        step = channels // k
        parts = []
        assert w.data is not None and (b is None or b.data is not None)  # constants, checked above
        for i in range(k):
            lo, hi = i * step, (i + 1) * step
            wn = _unique(tensors, f"{w.name}.s{i}")
            tensors[wn] = replace(w, name=wn, shape=(hi - lo, *w.shape[1:]), data=np.ascontiguousarray(w.data[lo:hi]),
                                  qparams=_slice_qparams(w.qparams, lo, hi))
            bn = None
            if b is not None:
                bn = _unique(tensors, f"{b.name}.s{i}")
                tensors[bn] = replace(b, name=bn, shape=(hi - lo,), data=np.ascontiguousarray(b.data[lo:hi]),  # type: ignore[index]
                                      qparams=_slice_qparams(b.qparams, lo, hi))
            on = _unique(tensors, f"{out.name}.s{i}")
            tensors[on] = Tensor(on, (*out.shape[:-1], hi - lo), out.dtype, out.qparams, None, out.source)
            ops.append(Op(op.type, (op.inputs[0], wn, bn, *op.inputs[3:]), (on,), op.options, f"{op.name}.s{i}",
                          op.source))
            parts.append(on)
        for name in (w.name, *((b.name,) if b is not None else ())):
            if not any(name in o.inputs for o in graph.ops if o is not op):
                tensors.pop(name, None)
        ops.append(Op(OpType.CONCATENATION, tuple(parts), (out.name,), ConcatenationOptions(axis=len(out.shape) - 1),
                      f"{op.name}.concat", op.source))
    return Graph(tensors, ops, list(graph.inputs), list(graph.outputs), name=graph.name, metadata=dict(graph.metadata))


def _unique(tensors: dict[str, Tensor], name: str) -> str:
    base, i = name, 0
    while name in tensors:
        i += 1
        name = f"{base}_{i}"
    return name
