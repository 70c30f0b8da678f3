"""The flash/RAM model of tinyprec.mcu.budget against TFLM's own arena measurement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests._micro import MICRO_MODELS
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.mcu import budget
from tinyprec.mcu.budget import Buffer, plan_head, plan_offsets
from tinyprec.runtimes.tflm import tflm_arena_report


def test_greedy_planner_fills_gaps_like_tflm() -> None:
    # Largest first (100 -> 112 aligned) at 0; equal sizes in reverse order (TFLM fills its sort array
    # from the end): the second 64 at 0, the first above it; the 32 overlaps the 112 and the second 64.
    bufs = [Buffer(64, 0, 1), Buffer(64, 1, 2), Buffer(32, 2, 3), Buffer(100, 3, 4)]
    assert plan_offsets(bufs) == [64, 0, 112, 0]
    assert plan_head(bufs) == 144
    assert plan_head([Buffer(10, 0, 0), Buffer(10, 1, 1)]) == 16  # aligned to 16, reused in time
    assert plan_head([Buffer(10, 0, 1), Buffer(10, 1, 2)]) == 32


@pytest.mark.parametrize("name", ["conv2d", "depthwise_conv2d", "fully_connected", "multi_op", "pool_fc",
                                  "concatenation", "softmax", "mean"])
def test_planned_head_equals_tflm_head(name: str) -> None:
    graph = MICRO_MODELS[name](np.random.default_rng(0))
    measured = tflm_arena_report(write_tflite(graph))
    assert plan_head(budget.graph_buffers(graph)) == measured.head_bytes
    assert measured.arena_bytes >= measured.head_bytes + measured.tail_bytes
    b = budget.graph_budget(graph, rest_bytes=measured.arena_bytes - measured.head_bytes)
    assert b.arena_bytes == measured.arena_bytes and b.int4_scratch_bytes == 0 and b.int16_activation_bytes == 0


def test_assignment_costs_on_a_chain() -> None:
    graph = MICRO_MODELS["multi_op"](np.random.default_rng(0))
    for op in graph.ops:
        op.source = {"CONV_2D": "conv", "FULLY_CONNECTED": "fc"}.get(op.type.value)
    base = budget.assignment_budget(graph, {}, rest_bytes=1000, file_bytes=5000)
    assert base.head_bytes == plan_head(budget.graph_buffers(graph)) and base.flash_bytes == 5000
    w4 = budget.assignment_budget(graph, {"conv": SimpleNamespace(weight_bits=4, act_bits=8)},
                                  rest_bytes=1000, file_bytes=5000)
    assert w4.const_bytes == base.const_bytes - 144 // 2 and w4.flash_bytes == 5000 - 72
    assert w4.int4_scratch_bytes == 144  # 4x3x3x4 weights unpacked at the conv
    assert w4.head_bytes == max(base.head_bytes, 144 + 144 + 144)  # x, a and the scratch at op 1
    a16 = budget.assignment_budget(graph, {"conv": SimpleNamespace(weight_bits=8, act_bits=16)},
                                   rest_bytes=1000, file_bytes=5000)
    assert a16.int16_activation_bytes > 0 and a16.rest_bytes > 1000 and a16.head_bytes > base.head_bytes


def _fc256(bits: int, rng_seed: int = 0):  # type: ignore[no-untyped-def]
    """The issue's measurement: one 256x256 FULLY_CONNECTED, int8 or INT4 (per-tensor) weights."""
    from tests._micro import MicroBuilder
    from tinyprec.ir import FullyConnectedOptions, OpType

    b = MicroBuilder(np.random.default_rng(rng_seed), f"fc256_w{bits}")
    x = b.input("x", (1, 256))
    w = b.weights("w", (256, 256), axis=None, bits=bits)
    bb = b.bias("b", x, w, 256, 256)
    y = b.out_for_accumulator("y", (1, 256), x, w, 256)
    b.op(OpType.FULLY_CONNECTED, (x, w, bb), (y,), FullyConnectedOptions())
    g = b.graph([y])
    for op in g.ops:
        op.source = "fc"
    return g


def test_int4_arena_from_the_int8_twin_matches_tflm() -> None:
    """The int8 file's measured arena + the modelled INT4 unpack scratch = TFLM's INT4 arena (the issue
    measured 1,488 B and 67,024 B for this layer)."""
    g8, g4 = _fc256(8), _fc256(4)
    t8, t4 = write_tflite(g8), write_tflite(g4)
    m8, m4 = tflm_arena_report(t8), tflm_arena_report(t4)
    assert m4.arena_bytes - m8.arena_bytes >= 65536  # the unpack scratch is real
    est = budget.assignment_budget(g8, {"fc": SimpleNamespace(weight_bits=4, act_bits=8)},
                                   rest_bytes=m8.arena_bytes - m8.head_bytes, file_bytes=len(t8))
    assert est.int4_scratch_bytes == 65536
    assert est.arena_bytes == m4.arena_bytes
    assert abs(est.flash_bytes - len(t4)) <= 16
    exact = budget.graph_budget(g4, rest_bytes=m8.arena_bytes - m8.head_bytes, file_bytes=len(t4))
    assert exact.head_bytes == m4.head_bytes and exact.arena_bytes == m4.arena_bytes


def test_cmsis_nn_kernels_plan_no_unpack_scratch() -> None:
    """CMSIS-NN reads INT4 weights packed: the same assignment costs the reference kernels the unpack scratch
    and CMSIS-NN nothing (on the core: tests/test_mcu_lowbits.py); no split is planned for it either."""
    g8, g4 = _fc256(8), _fc256(4)
    t8 = write_tflite(g8)
    m8 = tflm_arena_report(t8)
    four = {"fc": SimpleNamespace(weight_bits=4, act_bits=8)}
    kw = dict(rest_bytes=m8.arena_bytes - m8.head_bytes, file_bytes=len(t8), int4_max_scratch=4096)
    ref = budget.assignment_budget(g8, four, **kw)  # type: ignore[arg-type]
    cmsis = budget.assignment_budget(g8, four, kernels="cmsis-nn", **kw)  # type: ignore[arg-type]
    assert ref.int4_scratch_bytes == 8192 and ref.flash_bytes > cmsis.flash_bytes  # split 8 ways (at most 10)
    assert cmsis.int4_scratch_bytes == 0 and cmsis.arena_bytes == m8.arena_bytes
    assert budget.int4_scratch_bytes(g4, "cmsis-nn") == 0 and budget.int4_scratch_bytes(g4) == 65536
    with pytest.raises(ValueError, match="unknown TFLM kernel set 'cmsis'"):
        budget.unpacks_int4("cmsis")
