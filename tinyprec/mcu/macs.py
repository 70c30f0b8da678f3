"""Work per op of an IR graph, for one sample: multiply-accumulates, output elements, parameters.

These counts feed the latency estimate and the ``inspect`` op table. A MAC is one int8 x int8
product added to an int32 accumulator; pooling counts one accumulate (or compare) per window
element, elementwise ops one per output element, RESHAPE nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tinyprec.ir import Graph, Op, OpType, PoolOptions


@dataclass(frozen=True)
class OpCost:
    """What one op costs per sample."""

    index: int
    op: OpType
    name: str
    macs: int
    in_elements: int
    out_elements: int
    params: int


def _elements(shape: tuple[int, ...]) -> int:
    # One sample: drop the leading batch dimension of activations.
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(math.prod(shape))


def _conv(graph: Graph, op: Op, out: int) -> int:
    w = graph.tensors[op.inputs[1]]  # type: ignore[index]
    _, kh, kw, cin = w.shape  # OHWI
    return out * kh * kw * cin


def _depthwise(graph: Graph, op: Op, out: int) -> int:
    w = graph.tensors[op.inputs[1]]  # type: ignore[index]
    _, kh, kw, _ = w.shape  # 1HWO
    return out * kh * kw


def _fully_connected(graph: Graph, op: Op, out: int) -> int:
    w = graph.tensors[op.inputs[1]]  # type: ignore[index]
    return out * int(w.shape[-1])


def _pool(graph: Graph, op: Op, out: int) -> int:
    opts = op.options
    assert isinstance(opts, PoolOptions)
    return out * opts.filter_h * opts.filter_w


def _input_elements(graph: Graph, op: Op, out: int) -> int:
    return _elements(graph.tensors[op.inputs[0]].shape)  # type: ignore[index]


def _per_output(graph: Graph, op: Op, out: int) -> int:
    return out


def _nothing(graph: Graph, op: Op, out: int) -> int:
    return 0


def _transpose_conv(graph: Graph, op: Op, out: int) -> int:
    """Every input pixel times the whole filter (TFLM's scatter loop visits each tap, in or out of bounds)."""
    x, w = graph.tensors[op.inputs[2]], graph.tensors[op.inputs[1]]  # type: ignore[index]
    return _elements(x.shape) * _elements(w.shape) // max(int(w.shape[3]), 1)


def _batch_matmul(graph: Graph, op: Op, out: int) -> int:
    """Each output element sums over the shared axis (lhs's last, or second to last with adj_x)."""
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    depth = x.shape[-2] if getattr(op.options, "adj_x", False) else x.shape[-1]
    return out * int(depth)


_MACS: dict[OpType, Callable[[Graph, Op, int], int]] = {
    OpType.CONV_2D: _conv,
    OpType.DEPTHWISE_CONV_2D: _depthwise,
    OpType.FULLY_CONNECTED: _fully_connected,
    OpType.AVERAGE_POOL_2D: _pool,
    OpType.MAX_POOL_2D: _pool,
    OpType.MEAN: _input_elements,
    OpType.ADD: _per_output,
    OpType.MUL: _per_output,
    OpType.SOFTMAX: _per_output,
    OpType.LOGISTIC: _per_output,
    OpType.TANH: _per_output,
    OpType.QUANTIZE: _per_output,
    OpType.DEQUANTIZE: _per_output,
    OpType.PAD: _nothing,
    OpType.CONCATENATION: _nothing,
    OpType.RESHAPE: _nothing,
    OpType.HARD_SWISH: _per_output,
    OpType.LEAKY_RELU: _per_output,
    OpType.SUB: _per_output,
    OpType.MAXIMUM: _per_output,
    OpType.MINIMUM: _per_output,
    OpType.ABS: _per_output,
    OpType.TRANSPOSE: _nothing,
    OpType.STRIDED_SLICE: _nothing,
    OpType.PRELU: _per_output,
    OpType.RESIZE_NEAREST_NEIGHBOR: _nothing,
    OpType.RESIZE_BILINEAR: _per_output,
    OpType.TRANSPOSE_CONV: _transpose_conv,
    OpType.DEPTH_TO_SPACE: _nothing,
    OpType.BATCH_MATMUL: _batch_matmul,
    OpType.ELU: _per_output,
    OpType.REDUCE_MAX: _input_elements,
    OpType.RSQRT: _per_output,
}

# Ops whose "MACs" are true multiply-accumulates (the rest are accumulates, compares or per-element work).
MAC_OPS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.TRANSPOSE_CONV,
           OpType.BATCH_MATMUL)


def op_costs(graph: Graph) -> list[OpCost]:
    """Per-op work of ``graph`` for one sample, in execution order."""
    costs = []
    for i, op in enumerate(graph.ops):
        out = sum(_elements(graph.tensors[name].shape) for name in op.outputs)
        first = op.inputs[0] if op.inputs else None
        inp = _elements(graph.tensors[first].shape) if first is not None else 0
        params = 0
        if op.type in MAC_OPS:
            for name in op.inputs[1:]:
                data = graph.tensors[name].data if name is not None else None
                params += int(data.size) if data is not None else 0
        costs.append(OpCost(i, op.type, op.name or op.outputs[0], _MACS[op.type](graph, op, out), inp, out, params))
    return costs


def total_macs(graph: Graph) -> int:
    """Multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED per sample."""
    return sum(c.macs for c in op_costs(graph) if c.op in MAC_OPS)
