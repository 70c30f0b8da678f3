"""INT4 weights and int16 activations on the emulated Cortex-M4 (QEMU), with TFLM's reference and CMSIS-NN kernels.

CMSIS-NN has its own INT4 kernels (arm_convolve_s4, arm_depthwise_conv_s4, arm_fully_connected_s4) that read the
packed weights; TFLM's reference kernels unpack them into arena scratch first. Here every model's outputs on the
core equal host TFLM's exactly, and the arena the core uses is what :mod:`tinyprec.mcu.budget` plans: the INT4
unpack scratch with reference kernels (exactly), at most a small depthwise buffer with CMSIS-NN.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import _micro_lowbits as lb
from tests.test_mcu_firmware import TREE, needs_firmware
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import (Conv2DOptions, DepthwiseConv2DOptions, DType, FullyConnectedOptions, Graph, OpType, Padding,
                         ReshapeOptions)
from tinyprec.ir.support import cmsis_nn_rule
from tinyprec.mcu import budget
from tinyprec.mcu.emulated import McuMeasurement, compare_with_host, measure, random_inputs, write_bundle_for_tflite

SAMPLES = 20
KERNELS = ("reference", "cmsis-nn")


def int4_chain(rng: np.random.Generator) -> Graph:
    """INT4 CONV_2D (per-channel, 4,320 weights) -> INT4 DEPTHWISE_CONV_2D 3x3 (33 channels: 297 weights, a
    padded nibble) -> RESHAPE -> INT4 FULLY_CONNECTED (per-tensor, 33 x 10): every INT4 kernel in one image."""
    b = lb.MicroBuilder(rng, "int4_chain")
    x = b.input("x", (1, 6, 6, 16))
    w1 = b.weights("w1", (30 + 3, 3, 3, 16), axis=0, bits=4)
    c1 = b.out_for_accumulator("c1", (1, 6, 6, 33), x, w1, 144)
    b.op(OpType.CONV_2D, (x, w1, b.bias("b1", x, w1, 33, 144)), (c1,), Conv2DOptions(1, 1, Padding.SAME))
    w2 = b.weights("w2", (1, 3, 3, 33), axis=3, bits=4)
    d2 = b.out_for_accumulator("d2", (1, 1, 1, 33), c1, w2, 9)
    b.op(OpType.DEPTHWISE_CONV_2D, (c1, w2, b.bias("b2", c1, w2, 33, 9)), (d2,),
         DepthwiseConv2DOptions(3, 3, Padding.VALID, 1))
    shape = b.const("shape", np.array([1, 33], np.int32), DType.INT32)
    flat = b.act("flat", (1, 33), 1.0, 0)
    b.tensors[flat].qparams = b.tensors[d2].qparams
    b.op(OpType.RESHAPE, (d2, shape), (flat,), ReshapeOptions((1, 33)))
    w3 = b.weights("w3", (10, 33), axis=None, bits=4)
    y = b.out_for_accumulator("y", (1, 10), flat, w3, 33)
    b.op(OpType.FULLY_CONNECTED, (flat, w3, b.bias("b3", flat, w3, 10, 33)), (y,), FullyConnectedOptions())
    return b.graph([y])


OTHER_MODELS: dict[str, Callable[[np.random.Generator], Graph]] = {
    "mixed_int4_16x8": lb.mixed,
    "int16_moves": lb.moves_chain,  # int16 TRANSPOSE, STRIDED_SLICE, MAXIMUM, MINIMUM, SUB
}


def _run(graph: Graph, kernels: str, folder: Path) -> tuple[McuMeasurement, np.ndarray, bytes]:
    tflite = write_tflite(graph)
    bundle = write_bundle_for_tflite(tflite, folder / "bundle", golden=1)
    x_t = graph.tensors[graph.inputs[0]]
    x = random_inputs(x_t.shape[1:], x_t.dtype.numpy, SAMPLES, seed=3)
    return measure(bundle, x, tree=TREE, target="cortex-m4", kernels=kernels, build_dir=folder / kernels), x, tflite


def _planned_head(graph: Graph, kernels: str) -> int:
    return budget.plan_head(budget.graph_buffers(graph, kernels))


@needs_firmware
def test_int4_on_cortex_m4_exact_and_arena_as_planned(tmp_path: Path) -> None:
    g4 = int4_chain(np.random.default_rng(11))
    g8 = lb.int8_twin(g4)  # the same 4-bit values stored as int8
    largest = max(int(np.prod(t.shape)) for t in g4.tensors.values() if t.dtype is DType.INT4)
    arenas: dict[tuple[int, str], int] = {}
    for bits, g in ((4, g4), (8, g8)):
        for kernels in KERNELS:
            m, x, tflite = _run(g, kernels, tmp_path / f"{bits}_{kernels}")
            cmp = compare_with_host(tflite, x, m.outputs)
            assert m.golden_passed and cmp.samples == SAMPLES and cmp.identical, (bits, kernels, cmp)
            assert [tag for _, tag, _ in m.per_op] == [op.type.value for op in g.ops]
            arenas[bits, kernels] = m.arena_used_bytes
    grew = {k: arenas[4, k] - arenas[8, k] for k in KERNELS}
    assert grew["reference"] >= largest  # the reference kernels unpack INT4 into arena scratch (the conv's here)
    assert grew["cmsis-nn"] <= budget.align(2 * 9 * 33)  # CMSIS-NN reads INT4 packed; at most its s4 depthwise buffer
    # what INT4 adds: planned exactly for the reference kernels; for CMSIS-NN the plan (which leaves out the int8
    # model's own CMSIS-NN buffers, already in its measured arena) errs on the safe side
    assert grew["reference"] == _planned_head(g4, "reference") - _planned_head(g8, "reference")
    assert 0 <= grew["cmsis-nn"] <= _planned_head(g4, "cmsis-nn") - _planned_head(g8, "cmsis-nn")


@needs_firmware
@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
@pytest.mark.parametrize("kernels", KERNELS)
def test_16x8_and_mixed_on_cortex_m4_match_host_tflm(name: str, kernels: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    g = OTHER_MODELS[name](np.random.default_rng(5))
    monkeypatch.chdir(tmp_path)  # a relative build folder, as `tinyprec run` gives it (export/<name>/mcu/...)
    m, x, tflite = _run(g, kernels, Path("run"))
    cmp = compare_with_host(tflite, x, m.outputs)
    assert m.golden_passed and cmp.samples == SAMPLES and cmp.identical, (name, kernels, cmp)


@needs_firmware
def test_the_cmsis_nn_int4_depthwise_rule_is_real(tmp_path: Path) -> None:
    """tinyprec keeps INT4 off depthwise layers with odd input channels and a depth multiplier > 1
    (ir/support.py cmsis_nn_rule) because CMSIS-NN computes them wrong; when a TFLM tree with a fixed
    arm_depthwise_conv_s4 comes, this fails and the rule can go."""
    g = lb.depthwise(np.random.default_rng(11), bits=4, hw=8, cin=5, mult=3)
    assert cmsis_nn_rule(OpType.DEPTHWISE_CONV_2D, DType.INT4, 5, 3) is not None
    m, x, tflite = _run(g, "cmsis-nn", tmp_path)
    assert not compare_with_host(tflite, x, m.outputs).identical
    ref, x, tflite = _run(g, "reference", tmp_path / "ref")
    assert compare_with_host(tflite, x, ref.outputs).identical


@needs_firmware
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_int16_recurrent_layer_on_cortex_m4_matches_host_tflm(kind: str, tmp_path: Path) -> None:
    """An a16w8 GRU / LSTM (int16 gates and state, 6 steps) built for the Cortex-M4 with TFLM's reference and
    CMSIS-NN kernels: every output equals host TFLM (measured: 20 of 20 samples, both kernel sets, both kinds)."""
    torch = pytest.importorskip("torch")
    from tests._ops_e2e import convert
    from tinyprec.lowering.driver import lower_to_ir

    class Keyword(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(6, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    torch.manual_seed(1)
    converted, x = convert(Keyword(), (6, 6), n=64, overrides=(("rnn", "a16w8"),))
    g = lower_to_ir(converted, torch.from_numpy(x[:2]), name=f"{kind.lower()}16")
    assert {t.dtype for t in g.tensors.values()} >= {DType.INT16, DType.INT8}
    for kernels in KERNELS:
        m, xs, tflite = _run(g, kernels, tmp_path / kernels)
        cmp = compare_with_host(tflite, xs, m.outputs)
        assert m.golden_passed and cmp.samples == SAMPLES and cmp.identical, (kind, kernels, cmp)
