"""INT4 weights and int16 activations on the emulated Cortex-M4 (QEMU), with TFLM's reference and CMSIS-NN kernels.

CMSIS-NN has its own INT4 kernels (arm_convolve_s4, arm_depthwise_conv_s4, arm_fully_connected_s4) that read the
packed weights; TFLM's reference kernels unpack them into arena scratch first. Here every model's outputs on the
core equal host TFLM's exactly, and the arena the core uses is what :mod:`tinyprec.mcu.budget` plans for each
kernel set: the INT4 unpack scratch with reference kernels, nothing with CMSIS-NN.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import _micro_lowbits as lb
from tests.test_mcu_firmware import TREE, needs_firmware
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import DType, Graph, OpType
from tinyprec.ir.support import cmsis_nn_rule
from tinyprec.mcu import budget
from tinyprec.mcu.emulated import McuMeasurement, compare_with_host, measure, random_inputs, write_bundle_for_tflite

SAMPLES = 20
KERNELS = ("reference", "cmsis-nn")
INT4_MODELS: dict[str, Callable[[np.random.Generator], Graph]] = {
    "conv_per_channel": lambda rng: lb.conv(rng, bits=4, hw=12, cin=16, cout=32, stride=1),
    "depthwise_odd_count": lambda rng: lb.depthwise(rng, bits=4, hw=10, cin=33, mult=1),  # 297 weights: padded nibble
    "fully_connected_per_tensor": lambda rng: lb.fully_connected(rng, bits=4, depth=256, cout=64),
}
OTHER_MODELS: dict[str, Callable[[np.random.Generator], Graph]] = {
    "mixed_int4_16x8": lb.mixed,
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
@pytest.mark.parametrize("name", sorted(INT4_MODELS))
def test_int4_on_cortex_m4_exact_and_arena_as_planned(name: str, tmp_path: Path) -> None:
    g4 = INT4_MODELS[name](np.random.default_rng(11))
    g8 = lb.int8_twin(g4)  # the same 4-bit values stored as int8
    weights = max(int(np.prod(t.shape)) for t in g4.tensors.values() if t.dtype is DType.INT4)
    arenas: dict[tuple[int, str], int] = {}
    for bits, g in ((4, g4), (8, g8)):
        for kernels in KERNELS:
            m, x, tflite = _run(g, kernels, tmp_path / f"{bits}_{kernels}")
            cmp = compare_with_host(tflite, x, m.outputs)
            assert m.golden_passed and cmp.samples == SAMPLES and cmp.identical, (name, bits, kernels, cmp)
            arenas[bits, kernels] = m.arena_used_bytes
    grew = {k: arenas[4, k] - arenas[8, k] for k in KERNELS}
    assert grew["reference"] >= weights  # the reference kernels unpack INT4 into arena scratch
    if g4.ops[0].type is not OpType.DEPTHWISE_CONV_2D:  # CMSIS-NN reads INT4 packed: nothing more
        assert grew["cmsis-nn"] <= 0  # (its INT4 FULLY_CONNECTED even skips the s8 kernel-sums buffer)
    for kernels in KERNELS:  # what INT4 adds is what the budget model plans for each kernel set
        assert grew[kernels] == _planned_head(g4, kernels) - _planned_head(g8, kernels), (kernels, grew)


@needs_firmware
@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
@pytest.mark.parametrize("kernels", KERNELS)
def test_16x8_and_mixed_on_cortex_m4_match_host_tflm(name: str, kernels: str, tmp_path: Path) -> None:
    g = OTHER_MODELS[name](np.random.default_rng(5))
    m, x, tflite = _run(g, kernels, tmp_path)
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
