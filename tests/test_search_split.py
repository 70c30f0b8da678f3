"""Splitting an INT4 layer's output channels (tinyprec.lowering.split): bit-identical on TFLM, smaller arena."""

from __future__ import annotations

import numpy as np
import pytest

from tests._micro import MicroBuilder, random_inputs, run_tflm
from tests.test_budget import _fc256
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Activation, Conv2DOptions, OpType, Padding
from tinyprec.mcu import budget
from tinyprec.lowering.split import pieces_for, split_int4_layers
from tinyprec.runtimes.tflm import tflm_arena_report


def _conv_int4():  # type: ignore[no-untyped-def]
    b = MicroBuilder(np.random.default_rng(3), "conv_int4")
    x = b.input("x", (1, 9, 9, 8))
    w = b.weights("w", (32, 3, 3, 8), axis=0, bits=4)
    bb = b.bias("b", x, w, 32, 72)
    y = b.out_for_accumulator("y", (1, 9, 9, 32), x, w, 72)
    b.op(OpType.CONV_2D, (x, w, bb), (y,), Conv2DOptions(1, 1, Padding.SAME, activation=Activation.RELU))
    return b.graph([y])


def test_pieces_divide_channels_and_fit() -> None:
    assert pieces_for(2304, 32, 600) == 4  # 72 per channel: 8 channels = 576 <= 600
    assert pieces_for(2304, 32, 5000) == 1
    assert pieces_for(640, 10, 10) == 10  # one channel per op is the floor
    assert pieces_for(64 * 192, 64, 100) == 8  # at most 10 pieces (TFLM's CONCATENATION inputs)
    assert pieces_for(6400, 10, 1500) == 5


@pytest.mark.parametrize("make,limit,k,cuts", [(_conv_int4, 600, 4, False), (lambda: _fc256(4), 8192, 8, True)])
def test_split_is_bit_exact_on_tflm_and_cuts_the_arena(make, limit: int, k: int, cuts: bool) -> None:  # type: ignore[no-untyped-def]
    """Exact always; the arena shrinks only where the filter outweighs the output activation (the FC):
    for the conv the pieces and the concatenated output (2,592 B each) live together and cost more."""
    graph = make()
    split = split_int4_layers(graph, limit)
    kinds = [op.type for op in split.ops]
    assert kinds == [graph.ops[0].type] * k + [OpType.CONCATENATION]
    whole, parts = write_tflite(graph), write_tflite(split)
    xs = random_inputs(graph, np.random.default_rng(5), n=16)
    assert np.array_equal(run_tflm(whole, xs), run_tflm(parts, xs))
    before, after = tflm_arena_report(whole), tflm_arena_report(parts)
    assert budget.int4_scratch_bytes(split) <= limit
    assert after.head_bytes == budget.plan_head(budget.graph_buffers(split))
    assert (after.arena_bytes < before.arena_bytes - (budget.int4_scratch_bytes(graph) - limit) // 2) is cuts
    assert len(parts) > len(whole)  # the price: more ops and tensors in the file


def test_budget_models_the_split() -> None:
    """assignment_budget with int4_max_scratch predicts the split INT4 file's arena from the int8 twin."""
    from types import SimpleNamespace

    g8 = _fc256(8)
    t8 = write_tflite(g8)
    m8 = tflm_arena_report(t8)
    split = split_int4_layers(_fc256(4), 16384)
    ts = write_tflite(split)
    ms = tflm_arena_report(ts)
    est = budget.assignment_budget(g8, {"fc": SimpleNamespace(weight_bits=4, act_bits=8)}, int4_max_scratch=16384,
                                   rest_bytes=m8.arena_bytes - m8.head_bytes, file_bytes=len(t8))
    assert est.int4_scratch_bytes == 16384 and est.head_bytes == ms.head_bytes
    # Per piece the model charges the largest cost measured (CONV_2D's): at most ~70 B per piece too much.
    assert 0 <= est.arena_bytes - ms.arena_bytes <= 70 * 4 and 0 <= est.flash_bytes - len(ts) <= 70 * 4
