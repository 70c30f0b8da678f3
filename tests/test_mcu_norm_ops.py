"""Issue 11's LayerNorm ops in the firmware on an emulated Cortex-M4: the bundle built with OP_KERNELS' sources
(RSQRT from elementwise.cc; MUL/ADD with a broadcast constant operand) runs bit-exact with host TFLM, golden
vectors included, with the reference and the CMSIS-NN kernel sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._micro import MicroBuilder
from tests.test_mcu_firmware import TREE, needs_firmware
from tinyprec.ir import Activation, DType, ElementwiseOptions, Graph, NoOptions, OpType, QParams


def norm_chain() -> Graph:
    """RSQRT of a (1, 1, 16, 4) input at zero point -128, then MUL and ADD by (1, 1, 16, 1) int8 constants."""
    b = MicroBuilder(np.random.default_rng(0), "norm_ops")
    x = b.input("x", (1, 1, 16, 4), scale=0.02, zp=-128)
    b.op(OpType.RSQRT, (x,), (b.act("r", (1, 1, 16, 4), 0.05, -128),), NoOptions())
    rng = np.random.default_rng(1)
    g = b.const("g", rng.integers(-128, 128, (1, 1, 16, 1)).astype(np.int8), DType.INT8, QParams.per_tensor(0.01, 4))
    b.op(OpType.MUL, ("r", g), (b.act("m", (1, 1, 16, 4), 0.06, 3),), ElementwiseOptions(Activation.NONE))
    c = b.const("c", rng.integers(-128, 128, (1, 1, 16, 1)).astype(np.int8), DType.INT8, QParams.per_tensor(0.02, -7))
    b.op(OpType.ADD, ("m", c), (b.act("y", (1, 1, 16, 4), 0.08, 0),), ElementwiseOptions(Activation.NONE))
    return b.graph(["y"])


@needs_firmware
@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["reference", "cmsis-nn"])
def test_norm_ops_on_cortex_m4_match_host_tflm(kernels: str, tmp_path: Path) -> None:
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.mcu.emulated import compare_with_host, measure, random_inputs, write_bundle_for_tflite

    data = write_tflite(norm_chain())
    bundle = write_bundle_for_tflite(data, tmp_path / "bundle", golden=2, where="norm_ops")
    x = random_inputs((1, 16, 4), np.int8, 12, seed=7)
    m = measure(bundle, x, tree=TREE, target="cortex-m4", kernels=kernels, build_dir=tmp_path / kernels)
    assert m.golden_passed
    cmp = compare_with_host(data, x, m.outputs)
    assert cmp.identical_samples == 12 and cmp.max_abs_diff == 0, cmp
