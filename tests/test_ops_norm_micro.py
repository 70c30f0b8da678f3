"""Issue 11 (LayerNorm): RSQRT and the MUL/ADD with a broadcast constant operand that the LayerNorm
decomposition uses, as micro-models: emulator == TFLM exactly on every int8 input value (the written file
and the file read back), TF Lite's reference kernels compared too; the fuzz guarantees on a file holding
RSQRT."""

from __future__ import annotations

import numpy as np
import pytest

from tests._fuzz import fuzz_reads
from tests._micro import MicroBuilder, run_tf, run_tflm
from tests._one_op import emulator_matches_tflm
from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Activation, DType, ElementwiseOptions, Graph, NoOptions, OpType, QParams


def _rsqrt(si: float, zi: int, so: float, zo: int) -> Graph:
    b = MicroBuilder(np.random.default_rng(0), "rsqrt")
    x = b.input("x", (1, 16, 16), scale=si, zp=zi)  # 256 elements: every int8 value once
    y = b.act("y", (1, 16, 16), so, zo)
    b.op(OpType.RSQRT, (x,), (y,), NoOptions())
    return b.graph([y])


def _const_operand(op_type: OpType, sc: float, zc: int) -> Graph:
    """(1, 1, 5, 3) activation times / plus a (1, 1, 5, 1) constant (the LayerNorm affine along IR axis 2)."""
    b = MicroBuilder(np.random.default_rng(1), op_type.value.lower())
    x = b.input("x", (1, 1, 5, 3), scale=0.03, zp=-4)
    data = np.random.default_rng(2).integers(-128, 128, size=(1, 1, 5, 1)).astype(np.int8)
    c = b.const("c", data, DType.INT8, QParams.per_tensor(sc, zc))
    y = b.act("y", (1, 1, 5, 3), 0.05, 6)
    b.op(op_type, (x, c), (y,), ElementwiseOptions(Activation.NONE))
    return b.graph([y])


# Zero points at -128 so every int8 input is >= the zero point (TFLM's RSQRT fails on a negative input).
CASES = {
    "rsqrt": lambda: _rsqrt(0.02, -128, 0.05, -128),
    "rsqrt_wide_input": lambda: _rsqrt(3.0, -128, 0.004, -128),  # large values: small outputs
    "rsqrt_narrow_input": lambda: _rsqrt(1e-4, -128, 0.8, -128),  # tiny values: outputs saturate at 127
    "rsqrt_extreme_scales": lambda: _rsqrt(1e-30, -128, 1e-30, -128),  # multiplier shift far beyond 31
    "mul_constant_broadcast": lambda: _const_operand(OpType.MUL, 0.01, 3),
    "add_constant_broadcast": lambda: _const_operand(OpType.ADD, 0.02, -5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_norm_op_matches_tflm_and_tflite_exactly(case: str) -> None:
    graph = CASES[case]()
    data, xs, want, _ = emulator_matches_tflm(graph, case)
    saturating = ("rsqrt_narrow_input", "rsqrt_extreme_scales")
    assert len(np.unique(want)) > 8 or case in saturating, np.unique(want)  # not a constant output
    np.testing.assert_array_equal(run_tf(data, xs), want)


def test_rsqrt_below_the_zero_point_fails_as_in_tflm() -> None:
    graph = _rsqrt(0.02, 0, 0.05, -128)
    x = np.full((1, 16, 16), 5, np.int8)
    x[0, 0, 0] = -1
    with pytest.raises(RuntimeError):
        run_tflm(write_tflite(graph), [x])
    with pytest.raises(ModelFormatError, match="below the zero point"):
        Emulator(graph).run(x)


def test_rsqrt_file_keeps_the_fuzz_guarantees() -> None:
    """Mutations of a file holding RSQRT read cleanly or raise one-line ModelFormatError; clean reads emulate
    or are refused with a TinyprecError (tests/_fuzz.py)."""
    outcomes, _ = fuzz_reads(write_tflite(_rsqrt(0.02, -128, 0.05, -128)), 400, seed=20261130)
    assert outcomes["error"] > 10 and outcomes["ran"] > 0, outcomes
