"""Issue 11's activation / arithmetic ops (ops-act) as one-op micro-models: emulator == TFLM == TF Lite
reference kernels, exactly, on every int8 input value: ELU (TFLM's float32 table) across input scales
that reach its saturated and linear parts, MEAN over any axes with and without a rescale, ADD / MUL of
a one-element int8 constant (the form ``x + c``, ``x * c``, ``x / c`` lower to), REDUCE_MAX over any axes."""

from __future__ import annotations

import numpy as np
import pytest

from tests._fuzz import fuzz_reads
from tests._micro import MicroBuilder, run_tf
from tests._one_op import chain_matches_tflm, corner_inputs, emulator_matches_tflm
from tests.test_mcu_firmware import TREE, needs_firmware
from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Activation, DType, ElementwiseOptions, Graph, MeanOptions, NoOptions, OpType, QParams


def _elu(si: float, zi: int, so: float, zo: int) -> Graph:
    b = MicroBuilder(np.random.default_rng(0), "elu")
    x = b.input("x", (1, 16, 16), scale=si, zp=zi)  # 256 elements: every int8 value once
    y = b.act("y", (1, 16, 16), so, zo)
    b.op(OpType.ELU, (x,), (y,), NoOptions())
    return b.graph([y])


def _mean(axes: tuple[int, ...], keep: bool, so: float, zo: int, op_type: OpType = OpType.MEAN) -> Graph:
    b = MicroBuilder(np.random.default_rng(1), op_type.value.lower())
    x = b.input("x", (1, 4, 6, 5), scale=0.03, zp=-7)
    a = b.const("axes", np.array(axes, np.int32), DType.INT32)
    norm = {a % 4 for a in axes}
    shape = tuple(1 if i in norm else d for i, d in enumerate((1, 4, 6, 5)) if keep or i not in norm)
    y = b.act("y", shape, so, zo)
    b.op(op_type, (x, a), (y,), MeanOptions(keep))
    return b.graph([y])


def _with_const(op_type: OpType, q: int, sc: float, so: float, zo: int, act: Activation = Activation.NONE) -> Graph:
    b = MicroBuilder(np.random.default_rng(2), op_type.value.lower())
    x = b.input("x", (1, 16, 16), scale=0.04, zp=9)
    c = b.const("c", np.array([q], np.int8), DType.INT8, QParams.per_tensor(sc, 0))
    y = b.act("y", (1, 16, 16), so, zo)
    b.op(op_type, (x, c), (y,), ElementwiseOptions(act))
    return b.graph([y])


CASES = {
    "elu": lambda: _elu(0.04, 10, 0.03, -60),
    "elu_wide_input": lambda: _elu(0.12, -20, 0.05, -108),  # exp saturates at -1 on the left
    "elu_narrow": lambda: _elu(0.003, 0, 0.004, 3),
    "mean_channels_keep": lambda: _mean((3,), True, 0.03, -7),
    "mean_width_rescale": lambda: _mean((2,), False, 0.011, 4),
    "mean_hw_channels": lambda: _mean((1, 2, 3), True, 0.02, 0),
    "reduce_max_channels": lambda: _mean((3,), True, 0.03, -7, OpType.REDUCE_MAX),
    "reduce_max_hw_nokeep": lambda: _mean((1, 2), False, 0.03, -7, OpType.REDUCE_MAX),
    "reduce_max_width": lambda: _mean((-2,), True, 0.03, -7, OpType.REDUCE_MAX),
    "add_const_relu6": lambda: _with_const(OpType.ADD, 1, 3.0, 6.0 / 255, -128, Activation.RELU6),
    "add_const_negative": lambda: _with_const(OpType.ADD, -1, 1.5, 0.05, 20),
    "mul_const": lambda: _with_const(OpType.MUL, 1, float(np.float32(1 / 6)), 0.01, -3),
    "mul_const_negative": lambda: _with_const(OpType.MUL, -1, 0.7, 0.03, 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_act_op_matches_tflm_and_tflite_exactly(case: str) -> None:
    graph = CASES[case]()
    data, xs, want, _ = emulator_matches_tflm(graph, case)
    if graph.ops[0].type is OpType.ELU:
        # TF Lite's reference resolver registers no ELU (its builtin one does, version 1): compare with it.
        from tinyprec.runtimes.tflite import run_tflite

        np.testing.assert_array_equal(run_tflite(data, xs[0], kernels="optimized"), want)
        with pytest.raises(Exception, match="ELU"):
            run_tf(data, xs)  # fails when TF Lite's reference kernels gain ELU: then compare with them
        return
    np.testing.assert_array_equal(run_tf(data, xs), want)


def every_act_op() -> Graph:
    """ELU -> ADD of a constant (fused RELU6) -> MUL by a constant -> MEAN over the channels -> REDUCE_MAX over
    the width (keep_dims)."""
    b = MicroBuilder(np.random.default_rng(4), "act_ops")
    x = b.input("x", (1, 4, 6, 3), scale=0.05, zp=-10)
    b.op(OpType.ELU, (x,), (b.act("elu", (1, 4, 6, 3), 0.04, -100),), NoOptions())
    three = b.const("three", np.array([[[[1]]]], np.int8), DType.INT8, QParams.per_tensor(3.0, 0))
    b.op(OpType.ADD, ("elu", three), (b.act("add", (1, 4, 6, 3), 6.0 / 255, -128),),
         ElementwiseOptions(Activation.RELU6))
    sixth = b.const("sixth", np.array([[[[1]]]], np.int8), DType.INT8, QParams.per_tensor(1 / 6, 0))
    b.op(OpType.MUL, ("add", sixth), (b.act("mul", (1, 4, 6, 3), 1.0 / 255, -128),), ElementwiseOptions())
    axes = b.const("axes", np.array([3], np.int32), DType.INT32)
    b.op(OpType.MEAN, ("mul", axes), (b.act("mean", (1, 4, 6, 1), 1.0 / 255, -128),), MeanOptions(True))
    axes2 = b.const("axes2", np.array([2], np.int32), DType.INT32)
    b.op(OpType.REDUCE_MAX, ("mean", axes2), (b.act("y", (1, 4, 1, 1), 1.0 / 255, -128),), MeanOptions(True))
    return b.graph(["y"])


def test_reduce_max_refuses_mismatched_qparams() -> None:
    from tinyprec.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="share scale and zero point"):
        Emulator(_mean((3,), True, 0.02, -7, OpType.REDUCE_MAX))


def test_chain_of_act_ops_is_exact() -> None:
    assert chain_matches_tflm(every_act_op(), 8).shape == (8, 4, 1, 1)


@pytest.mark.slow
def test_mutations_of_act_ops_read_cleanly_or_raise() -> None:
    data = write_tflite(every_act_op())
    outcomes, _ = fuzz_reads(data, 600, seed=20261130)  # every clean read is emulated
    assert outcomes["error"] > 50 and outcomes["ran"] > 0 and outcomes["refused"] > 0, outcomes


@pytest.mark.slow
@needs_firmware
def test_elu_table_on_cortex_m4_matches_host_tflm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """TFLM's ELU table is built on the device with its own libm's expf (newlib on Cortex-M): on every int8
    input value it equals host TFLM's (glibc) table, in qemu-system-arm's Cortex-M4."""
    from tinyprec.mcu.emulated import compare_with_host, measure, write_bundle_for_tflite

    for case in ("elu", "elu_wide_input"):
        graph = CASES[case]()
        data = write_tflite(graph)
        bundle = write_bundle_for_tflite(data, tmp_path / case / "bundle", golden=2, where=case)
        x = corner_inputs(graph, 3)[0]
        m = measure(bundle, x, tree=TREE, target="cortex-m4", kernels="reference", build_dir=tmp_path / case / "b")
        assert compare_with_host(data, x, m.outputs, where=case).differing_elements == 0
