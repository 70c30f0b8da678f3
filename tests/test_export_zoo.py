"""Every zoo architecture, after a short QAT on synthetic data, through lowering and the real runtimes.

Checked per architecture:
* TFLM's interpreter and TensorFlow Lite's (reference kernels) give identical int8 outputs;
* each IR op, fed TFLM's own input values, reproduces the converted PyTorch graph's int8 output within
  1 LSB. That bound holds by construction (the plain converted program rounds its requantization once,
  half to even, TFLM twice, half away from zero; both start from the same integer accumulator), so it
  holds for any weights, whatever precision the short QAT trained in; a lowering bug (layout, weights,
  padding) breaks it. How often the 1-LSB ties occur depends on the weights, so the mismatch fraction is
  reported (``record_property``), not asserted. Exact equality is the TFLM-exact program's job
  (tests/test_quant_exact.py: 100% of elements).
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinyprec.zoo import ARCHITECTURES  # noqa: E402

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains

FAST = ["digits_cnn", "mnist1d_cnn", "ds_cnn", "fc_autoencoder"]
SLOW = ["resnet8", "mobilenet_v1"]


@functools.lru_cache(maxsize=None)  # shared with tests/test_quant_exact.py: one short QAT per architecture
def short_qat(arch: str, *, samples: int = 48, steps: int = 2, batch_size: int = 8) -> tuple[Any, Any]:
    """(converted GraphModule, dataset) after ``steps`` QAT steps of the zoo model on synthetic data."""
    from tinyprec.data import load_dataset
    from tinyprec.quant.stage import quantize_model
    from tinyprec.recipe import DataConfig, QuantConfig
    from tinyprec.zoo import build_model

    spec = ARCHITECTURES[arch]
    autoencoder = spec.task == "autoencoder"
    ds = load_dataset(DataConfig(name="synthetic", shape=spec.input_shape, samples=samples, task=spec.task,
                                 num_classes=None if autoencoder else spec.num_classes), seed=0)
    torch.manual_seed(0)
    cfg = QuantConfig(mode="qat", epochs=1, batch_size=batch_size, calibration_batches=1)
    with tempfile.TemporaryDirectory() as tmp:
        result = quantize_model(build_model(arch, {}), ds, cfg, tmp, seed=0, max_steps=steps)
    return result.converted, ds


def _check(arch: str, record_property: Any) -> None:
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.lowering.driver import lower_with_trace
    from tinyprec.lowering.check import compare_with_converted, per_op_agreement

    heavy = arch == "mobilenet_v1"  # 96x96x3: fewer samples and a smaller batch keep it to seconds
    converted, ds = short_qat(arch, samples=20 if heavy else 48, batch_size=4 if heavy else 8)
    x = ds.inputs("test")[: 2 if heavy else 8]
    lowered = lower_with_trace(converted, torch.from_numpy(x[:2]), name=arch)
    graph = lowered.graph
    assert all(t.source for t in graph.tensors.values() if t.data is not None and t.dtype.value == "int8")
    data = write_tflite(graph)
    end_to_end = compare_with_converted(converted, graph, data, x)
    assert end_to_end.tflm_equals_tflite, end_to_end
    record_property("end_to_end_max_abs_diff", end_to_end.max_abs_diff)
    ops = per_op_agreement(converted, lowered, data, x)
    assert len(ops) >= len([op for op in graph.ops if op.type.value != "RESHAPE"]) - 1
    for op in ops:
        record_property(f"mismatch_fraction[{op.tensor}:{op.op}]", op.mismatch_fraction)
        assert op.max_abs_diff <= 1, op


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAST)
def test_zoo_lowers_and_runs_like_the_converted_model(arch: str, record_property: Any) -> None:
    _check(arch, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_zoo_large_lowers_and_runs_like_the_converted_model(arch: str, record_property: Any) -> None:
    _check(arch, record_property)


def test_every_zoo_architecture_is_covered() -> None:
    assert sorted(FAST + SLOW) == sorted(ARCHITECTURES)
    assert np.all([a in ARCHITECTURES for a in FAST + SLOW])
