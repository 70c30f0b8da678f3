"""Helpers of :mod:`onnx_qdq`: QDQ forms of the low-bit IR types (INT4 weights, int16 activations), and
the boundary shapes.

Opset 21 is the first with INT4 and int16 QuantizeLinear/DequantizeLinear; ONNX Runtime 1.32 runs both
(per-axis INT4 included), so INT4 weights are stored as INT4 initializers, not int8 stand-ins. A graph
without low-bit tensors keeps opset 17 and its bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyprec.errors import UnsupportedOpError
from tinyprec.ir.graph import DType, Graph, Tensor

OPSET, IR_VERSION = 17, 8
OPSET_LOW_BITS, IR_VERSION_LOW_BITS = 21, 10


def opset_for(graph: Graph) -> tuple[int, int]:
    """(opset, ONNX IR version): 21/10 when the graph has INT4 or int16 tensors, else 17/8."""
    if any(t.dtype in (DType.INT4, DType.INT16) for t in graph.tensors.values()):
        return OPSET_LOW_BITS, IR_VERSION_LOW_BITS
    return OPSET, IR_VERSION


def int4_initializer(name: str, arr: np.ndarray) -> Any:
    """An INT4 TensorProto of the values in [-7, 7] (onnx.helper packs them two per byte)."""
    from onnx import TensorProto, helper

    return helper.make_tensor(name, TensorProto.INT4, arr.shape, np.asarray(arr, np.int64).reshape(-1).tolist())


def bias_data(t: Tensor, data: np.ndarray) -> np.ndarray:
    """A 16x8 layer's INT64 bias as int32 (DequantizeLinear takes no int64); refused if a value does not fit."""
    if t.dtype is not DType.INT64:
        return data
    if np.abs(data.astype(np.int64)).max(initial=0) >= 2**31:
        raise UnsupportedOpError("INT64 bias", f"tensor '{t.name}'", "bias values beyond int32 have no ONNX QDQ form")
    return data.astype(np.int32)


def boundary_shape(t: Tensor, layout: str) -> list[int | str]:
    """The ONNX (PyTorch-layout) shape of a graph input/output, batch symbolic."""
    shape: list[int | str] = ["N"]
    if len(t.shape) == 4 and layout == "NCL":
        shape += [t.shape[3], t.shape[2]]
    elif len(t.shape) == 4:
        shape += [t.shape[3], t.shape[1], t.shape[2]]
    else:
        shape += list(t.shape[1:])
    return shape
