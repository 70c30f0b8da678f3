"""Issue 11's shape ops in the firmware on an emulated Cortex-M4: the bundle built with OP_KERNELS' sources
(reference and CMSIS-NN sets: CMSIS-NN has its own TRANSPOSE_CONV and BATCH_MATMUL) runs the chain of
RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR, TRANSPOSE_CONV, DEPTH_TO_SPACE and BATCH_MATMUL bit-exact with host
TFLM, golden vectors included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_mcu_firmware import TREE, needs_firmware
from tests.test_ops_shape_fuzz import every_shape_op


@needs_firmware
@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["reference", "cmsis-nn"])
def test_shape_ops_on_cortex_m4_match_host_tflm(kernels: str, tmp_path: Path) -> None:
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.mcu.emulated import compare_with_host, measure, random_inputs, write_bundle_for_tflite

    data = write_tflite(every_shape_op())
    bundle = write_bundle_for_tflite(data, tmp_path / "bundle", golden=2, where="shape_ops")
    x = random_inputs((2, 3, 4), np.int8, 12, seed=7)
    m = measure(bundle, x, tree=TREE, target="cortex-m4", kernels=kernels, build_dir=tmp_path / kernels)
    assert m.golden_passed
    cmp = compare_with_host(data, x, m.outputs)
    assert cmp.identical_samples == 12 and cmp.max_abs_diff == 0, cmp
