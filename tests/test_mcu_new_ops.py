"""Issue 11's ops in the firmware on an emulated Cortex-M4: the bundle built with OP_KERNELS' sources only
(reference and CMSIS-NN sets: CMSIS-NN has its own TRANSPOSE_CONV, BATCH_MATMUL, MAXIMUM/MINIMUM and TRANSPOSE)
runs each chain bit-exact with host TFLM, golden vectors included: the shape ops (RESIZE_NEAREST_NEIGHBOR,
RESIZE_BILINEAR, TRANSPOSE_CONV, DEPTH_TO_SPACE, BATCH_MATMUL), the elementwise ones (HARD_SWISH, LEAKY_RELU,
ABS, SUB, MAXIMUM, MINIMUM, TRANSPOSE, STRIDED_SLICE), PRELU, and the select / stack lowering's
STRIDED_SLICE + RESHAPE + TRANSPOSE + CONCATENATION."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_mcu_firmware import TREE, needs_firmware
from tests.test_ops_fuzz import every_new_op
from tests.test_ops_micro import CASES
from tests.test_ops_select import select_stack_chain
from tests.test_ops_shape_fuzz import every_shape_op

CHAINS = {"shape": (every_shape_op, (2, 3, 4)), "elementwise": (every_new_op, (4, 6, 3)),
          "prelu": (CASES["prelu_per_channel"], (4, 5, 3)), "select_stack": (select_stack_chain, (3, 5, 4))}


@needs_firmware
@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("kernels", ["reference", "cmsis-nn"])
def test_new_ops_on_cortex_m4_match_host_tflm(kernels: str, chain: str, tmp_path: Path) -> None:
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.mcu.emulated import compare_with_host, measure, random_inputs, write_bundle_for_tflite

    build, shape = CHAINS[chain]
    data = write_tflite(build())
    bundle = write_bundle_for_tflite(data, tmp_path / "bundle", golden=2, where=chain)
    x = random_inputs(shape, np.int8, 12, seed=7)
    m = measure(bundle, x, tree=TREE, target="cortex-m4", kernels=kernels, build_dir=tmp_path / kernels)
    assert m.golden_passed
    cmp = compare_with_host(data, x, m.outputs)
    assert cmp.identical_samples == 12 and cmp.max_abs_diff == 0, cmp
