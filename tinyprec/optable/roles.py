"""The quantization roles of exported ops and the spec's fixed output qparams (torch-free enums)."""

from __future__ import annotations

import enum


class Role(enum.Enum):
    """How an op is quantized to the TFLite int8 spec."""

    COMPUTE = "compute"  # conv/linear: per-channel int8 weight, int32 bias, own output (or fused activation)
    ACTIVATION = "activation"  # relu / relu6: fused into a producing COMPUTE or ELEMENTWISE op when possible
    ELEMENTWISE = "elementwise"  # add / mul: inputs as produced, own output observer
    SHARED = "shared"  # pooling, reshape, pad: output keeps the input's qparams
    CONCAT = "concat"  # cat: every input and the output share one set of qparams
    FIXED = "fixed"  # softmax / sigmoid / tanh: output qparams fixed by the spec
    DROP = "drop"  # dropout: identity at inference, removed from the converted graph
    FOLDED = "folded"  # batch norm: folded into the conv/linear before it
    META = "meta"  # shape arithmetic and BN bookkeeping; no tensor data to quantize
    UNARY = "unary"  # hardswish / leaky relu / abs: input as produced, own output observer, never fused
    EXTREMUM = "extremum"  # maximum / minimum: both inputs and the output share one set of qparams
    PARAMETRIC = "parametric"  # prelu: input as produced, its parameter observed on its own, own output
    TRANSPOSED = "transposed"  # conv_transpose: weights per output channel on axis 1, int32 bias, own output
    SCALAR = "scalar"  # x + c, x * c, x / c (c a Python number): input as produced, own output (+ ReLU fused)
    REWRITTEN = "rewritten"  # silu, hardsigmoid, gelu, ...: replaced after export by other rows' ops
    UNBOUNDED = "unbounded"  # rsqrt: as UNARY, its observer sees only finite values (1/sqrt(0) saturates)


class Fixed(enum.Enum):
    """Output qparams fixed by the TFLite int8 spec: (scale, zero point)."""

    SOFTMAX = (1.0 / 256.0, -128)
    SIGMOID = (1.0 / 256.0, -128)
    TANH = (1.0 / 128.0, 0)

    @property
    def scale(self) -> float:
        return float(self.value[0])

    @property
    def zero_point(self) -> int:
        return int(self.value[1])
