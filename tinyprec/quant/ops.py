"""Which exported aten ops stage 2 quantizes, and how (torch-free tables).

Each supported op of the exported graph (its ``str(node.target)``, e.g. ``"aten.conv2d.default"``)
maps to a :class:`Role` that says how the TFLite int8 quantizer annotates it. Adding an op means one
row here, the annotator for its role in quantizer.py already exists, and one test.
"""

from __future__ import annotations

import enum
from types import MappingProxyType


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


OP_ROLES: MappingProxyType[str, Role] = MappingProxyType({
    "aten.conv1d.default": Role.COMPUTE,
    "aten.conv2d.default": Role.COMPUTE,
    "aten.linear.default": Role.COMPUTE,
    "aten.relu.default": Role.ACTIVATION,
    "aten.relu_.default": Role.ACTIVATION,
    "aten.hardtanh.default": Role.ACTIVATION,  # only as ReLU6 (0, 6); checked in check_supported
    "aten.hardtanh_.default": Role.ACTIVATION,
    "aten.add.Tensor": Role.ELEMENTWISE,
    "aten.add_.Tensor": Role.ELEMENTWISE,
    "aten.mul.Tensor": Role.ELEMENTWISE,
    "aten.mul_.Tensor": Role.ELEMENTWISE,
    "aten.max_pool1d.default": Role.SHARED,
    "aten.max_pool2d.default": Role.SHARED,
    "aten.avg_pool1d.default": Role.SHARED,
    "aten.avg_pool2d.default": Role.SHARED,
    "aten.adaptive_avg_pool1d.default": Role.SHARED,  # output size 1 only
    "aten.adaptive_avg_pool2d.default": Role.SHARED,  # output size 1x1 only
    "aten.mean.dim": Role.SHARED,  # global average pooling written as x.mean((2, 3))
    "aten.flatten.using_ints": Role.SHARED,
    "aten.view.default": Role.SHARED,
    "aten.reshape.default": Role.SHARED,
    "aten.pad.default": Role.SHARED,  # constant zero padding only
    "aten.constant_pad_nd.default": Role.SHARED,
    "aten.cat.default": Role.CONCAT,
    "aten.softmax.int": Role.FIXED,
    "aten._softmax.default": Role.FIXED,
    "aten.sigmoid.default": Role.FIXED,
    "aten.tanh.default": Role.FIXED,
    "aten.dropout.default": Role.DROP,
    "aten.dropout_.default": Role.DROP,
    "aten.batch_norm.default": Role.FOLDED,
    "aten._native_batch_norm_legit_no_training.default": Role.FOLDED,
    "aten.sym_size.int": Role.META,
    "<built-in function getitem>": Role.META,
})

FIXED_QPARAMS: MappingProxyType[str, Fixed] = MappingProxyType({
    "aten.softmax.int": Fixed.SOFTMAX,
    "aten._softmax.default": Fixed.SOFTMAX,
    "aten.sigmoid.default": Fixed.SIGMOID,
    "aten.tanh.default": Fixed.TANH,
})

#: What a user may put in a model, for error messages (PyTorch spelling).
SUPPORTED_SUMMARY = (
    "Conv1d, Conv2d (incl. depthwise), Linear, ReLU, ReLU6/Hardtanh(0,6), add, mul, MaxPool1d/2d, "
    "AvgPool1d/2d, AdaptiveAvgPool to 1 (or mean over spatial dims), flatten/reshape/view, cat, "
    "constant zero pad, softmax, sigmoid, tanh, Dropout, BatchNorm after a conv/linear"
)


def role_of(target_name: str) -> Role | None:
    """The role of an exported op by its target name, or None if stage 2 cannot quantize it."""
    return OP_ROLES.get(target_name)
