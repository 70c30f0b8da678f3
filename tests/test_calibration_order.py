"""PTQ calibration draws its batches from a shuffle of the training inputs, so data stored in class or clip order
still calibrates on a mix: with one batch of 16, inputs sorted small-then-large must give the large range."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _input_scale(x: np.ndarray) -> float:
    from tinyprec.quant.capture import example_like
    from tinyprec.quant.loops import calibrate
    from tinyprec.quant.stage import _convert, _prepare, layer_assignment
    from tinyprec.recipe import QuantConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    cfg = QuantConfig(mode="ptq", calibration="minmax", batch_size=16, calibration_batches=1, output_softmax=False)
    example = example_like((4,))
    prepared = _prepare(model, example, qat=False, cfg=cfg, assignment=layer_assignment(model, example, cfg))
    assert calibrate(prepared, x, batch_size=16, num_batches=1) == 16
    converted = _convert(prepared, qat=False)
    first = next(n for n in converted.graph.nodes if n.op == "call_function" and "quantize_per_tensor" in str(n.target))
    return float(first.args[1])


def test_calibration_sees_more_than_the_first_stored_batch() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(-0.1, 0.1, (240, 4)).astype(np.float32)
    large = rng.uniform(-10.0, 10.0, (240, 4)).astype(np.float32)
    scale = _input_scale(np.concatenate([small, large]))  # the first 16 stored samples are all small
    assert scale > 5.0 / 255, scale  # in storage order it would be about 0.2 / 255
