"""One model through the public API (tinyprec.train -> quantize (QAT) -> export -> validate), as the
acceptance-architecture tests drive it.

``train_to_tflite(model, data, out)`` asserts that validation found TFLM == emulator and TFLM == the
TFLM-exact program on 100% of outputs, and returns the exported int8 .tflite and its graph as read back
(``overrides``: per-layer precisions, ``QuantConfig.overrides``);
``assert_tflite_reference_matches_tflm(blob, graph)`` runs TF Lite's reference kernels and TFLM on 32 random
int8 inputs of that file and asserts they are equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.ir import Graph


def train_to_tflite(model: Any, data: tuple[np.ndarray, np.ndarray], out: Path, *,
                    epochs: int = 3, overrides: tuple[tuple[str, str], ...] = ()) -> tuple[bytes, Graph]:
    import tinyprec
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.recipe import QuantConfig, TrainConfig, ValidateConfig

    trained = tinyprec.train(model, data, config=TrainConfig(epochs=epochs, batch_size=32, precision="fp32"),
                             out_dir=out)
    q = tinyprec.quantize(trained.model, data, out_dir=out,
                          config=QuantConfig(mode="qat", epochs=1, batch_size=32, autocast="fp32",
                                             overrides=overrides))
    tinyprec.export(q, data, model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, data, model_fp32=trained.model, config=ValidateConfig(max_drop=100.0))
    agreement = result.report["agreement"]
    assert agreement["tflm_vs_emulator"]["identical_outputs"] == 100.0, agreement["tflm_vs_emulator"]
    assert agreement["tflm_vs_fake_quant_tflm"]["identical_outputs"] == 100.0, agreement["tflm_vs_fake_quant_tflm"]
    blob = (out / "model" / "model_int8.tflite").read_bytes()
    return blob, read_tflite(blob)


def assert_tflite_reference_matches_tflm(blob: bytes, graph: Graph) -> None:
    """TF Lite's reference kernels (validation's runner uses its optimized ones, which round some conv1d
    differently, see docs/DESIGN.md) == TFLM on random int8 inputs of the exported file."""
    from tinyprec.runtimes.tflite import run_tflite
    from tinyprec.runtimes.tflm import run_tflm

    shape = graph.tensors[graph.inputs[0]].shape[1:]
    xq = np.random.default_rng(1).integers(-128, 128, (32, *shape)).astype(np.int8)
    np.testing.assert_array_equal(np.asarray(run_tflite(blob, xq, kernels="reference")), np.asarray(run_tflm(blob, xq)))
