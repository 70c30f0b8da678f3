"""Zoo architectures, quantized (PTQ) and lowered by our own pipeline, emulated bit-exactly vs TFLM.

Two cheap recipes run here (a 1-D CNN and the DS-CNN); the full set of six
architectures is checked by benchmarks/check_emulator_zoo.py (results in benchmarks/results/).
Both the IR graph from the lowering and the graph read back from the written file are emulated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def export_recipe(name: str) -> tuple[object, bytes]:
    """(IR graph, .tflite bytes) of a recipe's zoo model after one-batch PTQ and lowering."""
    from tinyprec.data import load_dataset
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.capture import example_like
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import build_model_for, load_recipe

    recipe = load_recipe(ROOT / "models" / f"{name}.toml")
    dataset = load_dataset(recipe.data, recipe.seed, ROOT / "models")
    converted = ptq(build_model_for(recipe), dataset, dataclasses.replace(recipe.quant, calibration_batches=1))
    graph = lower_to_ir(converted, example_like(dataset.input_shape), name=name)
    return graph, write_tflite(graph)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mnist1d_cnn", "kws_ds_cnn_quick"])  # quick: same DS-CNN, a small data set
def test_zoo_model_is_bit_exact_with_tflm(recipe: str) -> None:
    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.ir import Graph
    from tinyprec.runtimes.tflm import run_tflm, run_tflm_with_taps

    graph, data = export_recipe(recipe)
    assert isinstance(graph, Graph)
    emu = Emulator(graph)
    shape, dtype = emu.input_spec()
    x = np.random.default_rng(0).integers(-128, 128, size=(8, *shape)).astype(dtype)
    expected = run_tflm(data, x)
    np.testing.assert_array_equal(emu.run(x), expected)
    file_emu = Emulator(read_tflite(data, where=recipe))
    np.testing.assert_array_equal(file_emu.run(x), expected)
    # Intermediate tensors too, and the IR taps name the PyTorch module they came from.
    theirs = run_tflm_with_taps(data, x[:2])
    ours = file_emu.run_with_taps(x[:2])
    assert set(theirs) == set(ours)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    # Taps of our own export name the PyTorch module they came from.
    sources = emu.tap_sources()
    assert set(sources) == set(emu.run_with_taps(x[:1]))
    assert all(sources[op.outputs[0]] for op in graph.ops if op.type.value != "RESHAPE")
