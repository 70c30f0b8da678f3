"""How :func:`tinyprec.quant.exact.tflm_exact` reproduces each IR op's TFLM arithmetic (torch-free table).

Keyed by :class:`~tinyprec.ir.OpType` so that a test can check every op has a row here as in every
other layer. The value names the exact module (a key of ``exact._modules()``) that replaces the op's
``dequantize -> op -> quantize`` chain, or :data:`FLOAT_EXACT` for ops whose float arithmetic between
dequantize and quantize is already exact (they only move, copy or compare int8 values with shared
qparams), or :data:`NOT_EXACT` (with the reason in :data:`CAVEATS`).
"""

from __future__ import annotations

from types import MappingProxyType

from tinyprec.ir import OpType

FLOAT_EXACT = "float-exact"
NOT_EXACT = "not-exact"

EXACT_BY_OPTYPE: MappingProxyType[OpType, str] = MappingProxyType({
    OpType.CONV_2D: "weighted",
    OpType.DEPTHWISE_CONV_2D: "weighted",
    OpType.FULLY_CONNECTED: "weighted",
    OpType.ADD: "add",
    OpType.MUL: "mul",
    OpType.AVERAGE_POOL_2D: "avgpool",
    OpType.MEAN: "mean",
    OpType.MAX_POOL_2D: FLOAT_EXACT,
    OpType.RESHAPE: FLOAT_EXACT,
    OpType.CONCATENATION: FLOAT_EXACT,
    OpType.PAD: FLOAT_EXACT,
    OpType.SOFTMAX: "softmax",
    OpType.LOGISTIC: "table",
    OpType.TANH: "table",
    OpType.QUANTIZE: NOT_EXACT,
    OpType.DEQUANTIZE: FLOAT_EXACT,
    OpType.HARD_SWISH: "table",
    OpType.LEAKY_RELU: "table",
    OpType.ABS: "table",
    OpType.SUB: "sub",  # quant/exact_ops.py
    OpType.MAXIMUM: FLOAT_EXACT,
    OpType.MINIMUM: FLOAT_EXACT,
    OpType.TRANSPOSE: FLOAT_EXACT,
    OpType.STRIDED_SLICE: FLOAT_EXACT,
    OpType.PRELU: "prelu",  # quant/exact_ops.py
    OpType.RESIZE_NEAREST_NEIGHBOR: FLOAT_EXACT,  # a copy with shared qparams (index rule checked at lowering)
    OpType.RESIZE_BILINEAR: "resize_bilinear",  # quant/exact_shape.py
    OpType.TRANSPOSE_CONV: "weighted",  # conv_transpose2d in ExactWeighted (quant/exact_shape.py)
    OpType.DEPTH_TO_SPACE: FLOAT_EXACT,  # pixel_shuffle moves values with shared qparams
    OpType.BATCH_MATMUL: "batch_matmul",  # quant/exact_shape.py
    OpType.ELU: "table",  # quant/exact_act.py
    OpType.REDUCE_MAX: FLOAT_EXACT,  # shared qparams: the float max of dequantized values is the int8 max
    OpType.RSQRT: "table",  # quant/exact_norm.py (the emulator's table)
})

CAVEATS: MappingProxyType[OpType, str] = MappingProxyType({
    OpType.QUANTIZE: "an int8 -> int8 requantization (before a concat) rounds in float32, half to even; TFLM "
                     "uses a q31 multiplier: they may differ by 1 LSB on ties",
})
