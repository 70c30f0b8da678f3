"""Check a Graph against the TFLite int8 quantization spec before it is written or emulated."""

from __future__ import annotations

import numpy as np

from tinyprec.errors import QuantSpecError
from tinyprec.ir.graph import DType, Graph, Op, Tensor
from tinyprec.ir.ops import OpType

_WEIGHTED = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)
# Ops whose int8 output must carry the input's qparams.
_SHARED_QPARAMS = (OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.RESHAPE, OpType.PAD)
_FIXED_OUTPUT = {
    OpType.SOFTMAX: (1.0 / 256.0, -128),
    OpType.LOGISTIC: (1.0 / 256.0, -128),
    OpType.TANH: (1.0 / 128.0, 0),
}
# Per-channel quantized dimension of the weights, per op.
_WEIGHT_AXIS = {OpType.CONV_2D: 0, OpType.DEPTHWISE_CONV_2D: 3, OpType.FULLY_CONNECTED: 0}


def _fail(op: Op, what: str) -> QuantSpecError:
    return QuantSpecError(f"{op.type.value} '{op.name}'{f' ({op.source})' if op.source else ''}: {what}")


def _check_weights(op: Op, x: Tensor, w: Tensor, b: Tensor | None) -> None:
    if w.dtype is not DType.INT8 or w.qparams is None or w.data is None:
        raise _fail(op, f"weights '{w.name}' must be constant int8 with qparams")
    if np.any(w.qparams.zero_point != 0):
        raise _fail(op, f"weights '{w.name}' must be symmetric (zero point 0)")
    if int(w.data.min(initial=0)) < -127:
        raise _fail(op, f"weights '{w.name}' use -128; the int8 spec allows [-127, 127]")
    if w.qparams.scale.size > 1 and w.qparams.axis != _WEIGHT_AXIS[op.type]:
        raise _fail(op, f"per-channel weights '{w.name}' must use axis {_WEIGHT_AXIS[op.type]}")
    if b is None:
        return
    if b.dtype is not DType.INT32 or b.qparams is None or np.any(b.qparams.zero_point != 0):
        raise _fail(op, f"bias '{b.name}' must be int32 with zero point 0")
    assert x.qparams is not None
    expected = (x.qparams.scale.astype(np.float64) * w.qparams.scale.astype(np.float64)).astype(np.float32)
    got = np.broadcast_to(b.qparams.scale, expected.shape)
    if not np.allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6, atol=0):
        raise _fail(op, f"bias '{b.name}' scale must equal input_scale * weight_scale")


def verify_int8(graph: Graph) -> None:
    """Raise :class:`QuantSpecError` on the first violation of the TFLite int8 spec.

    Checks: activations int8 per-tensor; weights int8 symmetric in [-127, 127] on the right axis;
    int32 bias with scale input_scale * weight_scale; fixed qparams of SOFTMAX/LOGISTIC/TANH;
    pooling, reshape and pad keep the input's qparams.
    """
    for op in graph.ops:
        if op.type in (OpType.QUANTIZE, OpType.DEQUANTIZE):
            continue
        x = graph.tensors[op.inputs[0]] if op.inputs[0] is not None else None
        y = graph.tensors[op.outputs[0]]
        for t in (x, y):
            if t is None or t.is_const:
                continue
            if t.dtype is not DType.INT8 or t.qparams is None or t.qparams.scale.size != 1:
                raise _fail(op, f"activation '{t.name}' must be int8 per-tensor quantized")
        if op.type in _WEIGHTED:
            assert x is not None
            w = graph.tensors[op.inputs[1]]  # type: ignore[index]
            bias_name = op.inputs[2] if len(op.inputs) > 2 else None
            _check_weights(op, x, w, graph.tensors[bias_name] if bias_name else None)
        if op.type in _FIXED_OUTPUT:
            scale, zp = _FIXED_OUTPUT[op.type]
            assert y.qparams is not None
            if float(y.qparams.scale[0]) != np.float32(scale) or int(y.qparams.zero_point[0]) != zp:
                raise _fail(op, f"output must be quantized with scale {scale} and zero point {zp}")
        if op.type in _SHARED_QPARAMS and x is not None and x.qparams != y.qparams:
            raise _fail(op, "output must keep the input's scale and zero point")
