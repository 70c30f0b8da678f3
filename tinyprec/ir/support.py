"""Which precisions each op runs at on TFLM: one row per :class:`OpType`, torch-free.

The verifier, the quantizer front end (to refuse a combination before training) and the emulator read
this one table. Activations are the op's non-constant inputs and outputs; weights are input 1 of
CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED. Measured on the pinned tflite-micro wheel:

- int16 activations ("16x8") take int8 weights and an INT64 bias; INT4 weights only with int8
  activations (TFLM refuses int16 + INT4: "Hybrid models are not supported on TFLite Micro.").
- INT4 FULLY_CONNECTED is per-tensor only (lower the layer as CONV_2D for per-channel 4-bit weights).
- QUANTIZE converts float -> int8/int16 and int8 <-> int16; DEQUANTIZE int8/int16 -> float.

:func:`cmsis_nn_rule` adds what TFLM's reference kernels run but its CMSIS-NN kernels (what Cortex-M
products ship) compute differently, found on the emulated Cortex-M4 (tests/test_mcu_lowbits.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyprec.ir.graph import DType, Graph, Op
from tinyprec.ir.ops import OpType


@dataclass(frozen=True)
class OpSupport:
    """``activations``: the integer activation types the op runs on (all of one op's activations share
    one type, except QUANTIZE/DEQUANTIZE); ``weights``: weight types (empty: the op has no weights);
    ``int4_per_channel``: whether INT4 weights may be per-channel."""

    activations: frozenset[DType]
    weights: frozenset[DType] = frozenset()
    int4_per_channel: bool = False


_A8 = frozenset({DType.INT8})
_A8_16 = frozenset({DType.INT8, DType.INT16})

OP_SUPPORT: dict[OpType, OpSupport] = {
    OpType.CONV_2D: OpSupport(_A8_16, frozenset({DType.INT8, DType.INT4}), int4_per_channel=True),
    OpType.DEPTHWISE_CONV_2D: OpSupport(_A8_16, frozenset({DType.INT8, DType.INT4}), int4_per_channel=True),
    OpType.FULLY_CONNECTED: OpSupport(_A8_16, frozenset({DType.INT8, DType.INT4}), int4_per_channel=False),
    OpType.ADD: OpSupport(_A8_16),
    OpType.MUL: OpSupport(_A8_16),
    OpType.AVERAGE_POOL_2D: OpSupport(_A8_16),
    OpType.MAX_POOL_2D: OpSupport(_A8_16),
    OpType.MEAN: OpSupport(_A8_16),
    OpType.RESHAPE: OpSupport(_A8_16),
    OpType.CONCATENATION: OpSupport(_A8_16),
    OpType.PAD: OpSupport(_A8_16),
    OpType.SOFTMAX: OpSupport(_A8_16),
    OpType.LOGISTIC: OpSupport(_A8_16),
    OpType.TANH: OpSupport(_A8_16),
    OpType.QUANTIZE: OpSupport(_A8_16),
    OpType.DEQUANTIZE: OpSupport(_A8_16),
    # Issue 11's ops; int16 rows are verified on the pinned TFLM wheel (tests/_micro_lowbits.py), the
    # others run int8 only here (TFLM itself also runs some of them on int16: LEAKY_RELU, PRELU, RSQRT, ...).
    OpType.SUB: OpSupport(_A8_16),  # int16: ADD's arithmetic with left shift 15, zero points 0
    OpType.MAXIMUM: OpSupport(_A8_16),
    OpType.MINIMUM: OpSupport(_A8_16),
    OpType.TRANSPOSE: OpSupport(_A8_16),
    OpType.STRIDED_SLICE: OpSupport(_A8_16),
    OpType.HARD_SWISH: OpSupport(_A8),
    OpType.LEAKY_RELU: OpSupport(_A8),
    OpType.ABS: OpSupport(_A8),
    OpType.PRELU: OpSupport(_A8),  # the slope is an int8 input, not a weight
    OpType.RESIZE_NEAREST_NEIGHBOR: OpSupport(_A8),
    OpType.RESIZE_BILINEAR: OpSupport(_A8),
    # int8 activations and int8 weights (filter is input 1, the activation input 2: verified by the emulator)
    OpType.TRANSPOSE_CONV: OpSupport(_A8),
    OpType.DEPTH_TO_SPACE: OpSupport(_A8),
    OpType.BATCH_MATMUL: OpSupport(_A8),  # both operands are activations
    OpType.ELU: OpSupport(_A8),  # TFLM's ELU: float32 and int8 only
    OpType.REDUCE_MAX: OpSupport(_A8),
    OpType.RSQRT: OpSupport(_A8),  # TFLM's RSQRT also runs int16; only int8 is verified here
}

# Weighted ops: the bias type each activation type takes.
BIAS_DTYPE = {DType.INT8: DType.INT32, DType.INT16: DType.INT64}
WEIGHTED_OPS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)


def _names(dtypes: frozenset[DType] | set[DType]) -> str:
    return ", ".join(sorted(d.value for d in dtypes)) or "none"


def check_op_precision(op: Op, graph: Graph) -> str | None:
    """The precision rule ``op`` breaks in ``graph`` (one sentence), or None when TFLM runs it.

    >>> from tinyprec.ir import DType, Graph, NoOptions, Op, OpType, QParams, Tensor
    >>> q = QParams.per_tensor(0.1, 0)
    >>> g = Graph({"x": Tensor("x", (1, 4), DType.INT8, q), "y": Tensor("y", (1, 4), DType.INT16, q)}, [], [], [])
    >>> check_op_precision(Op(OpType.QUANTIZE, ("x",), ("y",), NoOptions()), g) is None
    True
    >>> check_op_precision(Op(OpType.LOGISTIC, ("x",), ("y",), NoOptions()), g)
    'activations mix int16, int8; only QUANTIZE converts between precisions'
    """
    support = OP_SUPPORT.get(op.type)
    if support is None:
        return f"{op.type.value} has no row in the precision support table (tinyprec/ir/support.py)"
    tensors = [graph.tensors.get(n) if n is not None else None for n in op.inputs]
    outs = [graph.tensors.get(n) for n in op.outputs]
    ins = [t for t in tensors if t is not None and not t.is_const]
    acts = {t.dtype for t in (*ins, *outs) if t is not None}
    if op.type in (OpType.QUANTIZE, OpType.DEQUANTIZE):
        ints = acts - {DType.FLOAT32}
        if not ints <= support.activations:
            return f"converts {_names(ints - support.activations)} (supported: {_names(support.activations)})"
        if op.type is OpType.DEQUANTIZE and any(t is not None and t.dtype is not DType.FLOAT32 for t in outs):
            return "DEQUANTIZE must output float32"
        return None
    if len(acts) > 1:
        return f"activations mix {_names(acts)}; only QUANTIZE converts between precisions"
    if acts and not acts <= support.activations:
        return (f"{_names(acts)} activations are not supported (TFLM runs {op.type.value} on "
                f"{_names(support.activations)})")
    if op.type not in WEIGHTED_OPS or len(tensors) < 2 or tensors[1] is None:
        return None
    act = next(iter(acts)) if acts else DType.INT8
    w = tensors[1]
    if w.dtype not in support.weights:
        return f"weights '{w.name}' are {w.dtype.value} (supported: {_names(support.weights)})"
    if w.dtype is DType.INT4:
        if act is not DType.INT8:
            return (f"INT4 weights '{w.name}' need int8 activations, not {act.value} "
                    "(TFLM refuses int16 activations with INT4 weights)")
        if not support.int4_per_channel and w.qparams is not None and w.qparams.scale.size > 1:
            return (f"INT4 weights '{w.name}' must be per-tensor for {op.type.value} (TFLM has no per-channel "
                    "INT4 kernel for it; use one scale, or lower the layer as CONV_2D)")
    b = tensors[2] if len(tensors) > 2 else None
    want = BIAS_DTYPE.get(act)
    if b is not None and want is not None and b.dtype is not want:
        return f"bias '{b.name}' is {b.dtype.value}; {act.value} activations take a {want.value} bias"
    return None


def cmsis_nn_rule(op_type: OpType, weights: DType, in_channels: int, depth_multiplier: int) -> str | None:
    """Why TFLM's CMSIS-NN kernels would compute a layer differently from its reference kernels, or None.

    INT4 DEPTHWISE_CONV_2D with an odd number of input channels and a depth multiplier above 1: CMSIS-NN's
    arm_depthwise_conv_s4 (as in ../shared/third_party/tflm) steps through the packed filter by
    ``(in_channels // 2) * depth_multiplier`` bytes per kernel position, half a byte short, so it reads the
    wrong nibbles (on the emulated Cortex-M4, e.g. 11 channels x 3: every output differs, up to 120 LSB).

    >>> cmsis_nn_rule(OpType.DEPTHWISE_CONV_2D, DType.INT4, 11, 3) is not None
    True
    >>> cmsis_nn_rule(OpType.DEPTHWISE_CONV_2D, DType.INT4, 11, 1), cmsis_nn_rule(OpType.DEPTHWISE_CONV_2D, DType.INT8, 11, 3)
    (None, None)
    """
    if op_type is OpType.DEPTHWISE_CONV_2D and weights is DType.INT4 and in_channels % 2 and depth_multiplier > 1:
        return (f"INT4 depthwise with {in_channels} (odd) input channels and depth multiplier {depth_multiplier}: "
                "CMSIS-NN's arm_depthwise_conv_s4 reads the wrong nibbles there (its results differ from TFLM's "
                "reference kernels); keep this layer's weights int8")
    return None
