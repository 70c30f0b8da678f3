"""Check a Graph against the TFLite quantization spec (int8, int16x8, INT4 weights) before it is written
or emulated. Which op runs at which precision is :mod:`tinyprec.ir.support`'s table."""

from __future__ import annotations

import numpy as np

from tinyprec.errors import QuantSpecError
from tinyprec.ir.graph import DType, Graph, Op, Tensor
from tinyprec.ir.ops import OpType
from tinyprec.ir.support import BIAS_DTYPE, WEIGHTED_OPS, check_op_precision

# Ops whose output must carry the input's qparams.
_SHARED_QPARAMS = (OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.RESHAPE, OpType.PAD)
# Fixed output (scale, zero point) per op and activation type.
_FIXED_OUTPUT = {
    (OpType.SOFTMAX, DType.INT8): (1.0 / 256.0, -128),
    (OpType.LOGISTIC, DType.INT8): (1.0 / 256.0, -128),
    (OpType.TANH, DType.INT8): (1.0 / 128.0, 0),
    (OpType.SOFTMAX, DType.INT16): (1.0 / 32768.0, 0),
    (OpType.LOGISTIC, DType.INT16): (1.0 / 32768.0, 0),
    (OpType.TANH, DType.INT16): (1.0 / 32768.0, 0),
}
# Per-channel quantized dimension of the weights, per op.
_WEIGHT_AXIS = {OpType.CONV_2D: 0, OpType.DEPTHWISE_CONV_2D: 3, OpType.FULLY_CONNECTED: 0}
_WEIGHT_RANGE = {DType.INT8: 127, DType.INT4: 7}


def _fail(op: Op, what: str) -> QuantSpecError:
    return QuantSpecError(f"{op.type.value} '{op.name}'{f' ({op.source})' if op.source else ''}: {what}")


def _check_weights(op: Op, x: Tensor, w: Tensor, b: Tensor | None) -> None:
    limit = _WEIGHT_RANGE.get(w.dtype)
    if limit is None or w.qparams is None or w.data is None:
        raise _fail(op, f"weights '{w.name}' must be constant int8 or int4 with qparams")
    if np.any(w.qparams.zero_point != 0):
        raise _fail(op, f"weights '{w.name}' must be symmetric (zero point 0)")
    lo, hi = int(w.data.min(initial=0)), int(w.data.max(initial=0))
    if lo < -limit or hi > limit:
        bad = lo if lo < -limit else hi
        raise _fail(op, f"weights '{w.name}' use {bad}; the {w.dtype.value} spec allows [-{limit}, {limit}]")
    if w.qparams.scale.size > 1 and w.qparams.axis != _WEIGHT_AXIS[op.type]:
        raise _fail(op, f"per-channel weights '{w.name}' must use axis {_WEIGHT_AXIS[op.type]}")
    if b is None:
        return
    want = BIAS_DTYPE[x.dtype]
    if b.dtype is not want or b.qparams is None or np.any(b.qparams.zero_point != 0):
        raise _fail(op, f"bias '{b.name}' must be {want.value} with zero point 0 ({x.dtype.value} activations)")
    assert x.qparams is not None
    expected = (x.qparams.scale.astype(np.float64) * w.qparams.scale.astype(np.float64)).astype(np.float32)
    got = np.broadcast_to(b.qparams.scale, expected.shape)
    if not np.allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6, atol=0):
        raise _fail(op, f"bias '{b.name}' scale must equal input_scale * weight_scale")


def _check_activation(op: Op, t: Tensor) -> None:
    if t.dtype not in (DType.INT8, DType.INT16) or t.qparams is None or t.qparams.scale.size != 1:
        raise _fail(op, f"activation '{t.name}' must be int8 or int16 per-tensor quantized")
    if t.dtype is DType.INT16 and int(t.qparams.zero_point[0]) != 0:
        raise _fail(op, f"int16 activation '{t.name}' must have zero point 0 (symmetric 16x8 quantization)")


def verify_quantized(graph: Graph) -> None:
    """Raise :class:`QuantSpecError` on the first violation of the TFLite integer spec.

    Checks: each op's precision against :data:`tinyprec.ir.support.OP_SUPPORT` (int8 or int16 activations,
    int8 or INT4 weights, INT4 only with int8 activations); activations per-tensor, int16 with zero point 0;
    weights symmetric in [-127, 127] (int8) or [-7, 7] (INT4) on the right axis; bias int32 (int8 inputs) or
    int64 (int16 inputs) with scale input_scale * weight_scale; fixed qparams of SOFTMAX/LOGISTIC/TANH;
    pooling, reshape and pad keep the input's qparams.
    """
    for op in graph.ops:
        rule = check_op_precision(op, graph)
        if rule is not None:
            raise _fail(op, rule)
        if op.type in (OpType.QUANTIZE, OpType.DEQUANTIZE):
            for name in (*op.inputs, *op.outputs):
                t = graph.tensors[name] if name is not None else None
                if t is not None and t.dtype is not DType.FLOAT32:
                    _check_activation(op, t)
            continue
        x = graph.tensors[op.inputs[0]] if op.inputs[0] is not None else None
        y = graph.tensors[op.outputs[0]]
        for t in (x, y):
            if t is not None and not t.is_const:
                _check_activation(op, t)
        if op.type in WEIGHTED_OPS:
            assert x is not None
            w = graph.tensors[op.inputs[1]]  # type: ignore[index]
            bias_name = op.inputs[2] if len(op.inputs) > 2 else None
            _check_weights(op, x, w, graph.tensors[bias_name] if bias_name else None)
        fixed = _FIXED_OUTPUT.get((op.type, y.dtype))
        if fixed is not None:
            scale, zp = fixed
            assert y.qparams is not None
            if float(y.qparams.scale[0]) != np.float32(scale) or int(y.qparams.zero_point[0]) != zp:
                raise _fail(op, f"{y.dtype.value} output must be quantized with scale {scale} and zero point {zp}")
        if op.type in _SHARED_QPARAMS and x is not None and x.qparams != y.qparams:
            raise _fail(op, "output must keep the input's scale and zero point")


# The historical name: int8 graphs pass as before; int16x8 and INT4-weight graphs pass per the support table.
verify_int8 = verify_quantized
