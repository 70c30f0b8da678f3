"""The IR core: quantize_multiplier as TFLM computes it, and the int8 spec check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinyprec.errors import QuantSpecError
from tinyprec.ir import DType, FullyConnectedOptions, Graph, Op, OpType, QParams, Tensor, quantize_multiplier
from tinyprec.ir.verify import verify_int8


@pytest.mark.parametrize("real", [1e-9, 0.0003, 0.25, 0.4999999, 0.5, 0.75, 0.999999999, 1.0, 3.7, 1 << 20])
def test_quantize_multiplier_reconstructs_real(real: float) -> None:
    q, shift = quantize_multiplier(real)
    assert (1 << 30) <= q < (1 << 31)
    assert math.isclose(q * 2.0 ** (shift - 31), real, rel_tol=2**-30)


def test_quantize_multiplier_rounds_up_to_next_power() -> None:
    # frexp fraction that rounds to 2^31 must renormalise, as TFLM does.
    q, shift = quantize_multiplier(1.0 - 2**-40)
    assert (q, shift) == (1 << 30, 1)


def test_quantize_multiplier_flushes_tiny_to_zero() -> None:
    assert quantize_multiplier(2.0**-40) == (0, 0)
    assert quantize_multiplier(2.0**-40, single_rounding=True) == (0, 0)
    assert quantize_multiplier(2.0**40, single_rounding=True) == ((1 << 31) - 1, 30)


def _fc_graph(weight: np.ndarray, bias_scale: float) -> Graph:
    act = QParams.per_tensor(0.1, -3)
    wq = QParams(np.array([0.02, 0.04], np.float32), np.zeros(2, np.int64), axis=0)
    tensors = {
        "x": Tensor("x", (1, 3), DType.INT8, act),
        "w": Tensor("w", (2, 3), DType.INT8, wq, weight),
        "b": Tensor("b", (2,), DType.INT32, QParams(np.array([0.1 * 0.02, bias_scale], np.float32), np.zeros(2), axis=0),
                    np.zeros(2, np.int32)),
        "y": Tensor("y", (1, 2), DType.INT8, QParams.per_tensor(0.05, 4)),
    }
    op = Op(OpType.FULLY_CONNECTED, ("x", "w", "b"), ("y",), FullyConnectedOptions(), name="fc")
    return Graph(tensors, [op], ["x"], ["y"])


def test_verify_accepts_spec_graph() -> None:
    verify_int8(_fc_graph(np.array([[1, -127, 3], [4, 5, 127]], np.int8), 0.1 * 0.04))


def test_verify_rejects_minus_128_weight() -> None:
    with pytest.raises(QuantSpecError, match="-128"):
        verify_int8(_fc_graph(np.array([[1, -128, 3], [4, 5, 6]], np.int8), 0.1 * 0.04))


def test_verify_rejects_wrong_bias_scale() -> None:
    with pytest.raises(QuantSpecError, match="bias"):
        verify_int8(_fc_graph(np.array([[1, 2, 3], [4, 5, 6]], np.int8), 0.1 * 0.05))
