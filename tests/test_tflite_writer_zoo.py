"""Issue 4's flash and RAM bound on our own models, measured against the converter's references.

ds_cnn and resnet8 (zoo, seeded trained-looking batch-norm statistics, PTQ on the recipe's synthetic
data, lowered to the IR) written by write_tflite must carry at most half the overhead (file bytes minus
constant bytes) of kws_ref_model.tflite / pretrainedResnet_quant.tflite, and need no larger a TFLM
arena, both measured the same way here. benchmarks/bench_tflite_size_arena.py prints the figures.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(("recipe_name", "fixture"), [("kws_ds_cnn_quick", "kws_tflite"), ("ic_resnet8", "ic_tflite")])
def test_zoo_file_overhead_and_arena_within_the_reference(recipe_name: str, fixture: str,
                                                          request: pytest.FixtureRequest) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_tflite_size_arena import allocates, recorded_arena, trained_looking

    from tinyprec.data import load_dataset
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.capture import example_like
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import build_model_for, load_recipe

    recipe = load_recipe(ROOT / "models" / f"{recipe_name}.toml")
    dataset = load_dataset(recipe.data, recipe.seed, ROOT / "models")
    model = trained_looking(build_model_for(recipe), recipe.seed)
    converted = ptq(model, dataset, dataclasses.replace(recipe.quant, calibration_batches=1))
    graph = lower_to_ir(converted, example_like(dataset.input_shape), name=recipe_name)
    ours = write_tflite(graph)

    reference: bytes = request.getfixturevalue(fixture)
    ref_overhead = len(reference) - read_tflite(reference).const_bytes()
    our_overhead = len(ours) - graph.const_bytes()
    assert 0 < our_overhead <= 0.5 * ref_overhead, (our_overhead, ref_overhead)
    # The reference's smallest arena is its recorded total (one byte less fails), and ours fits in it.
    ref_arena = recorded_arena(reference)
    assert not allocates(reference, ref_arena - 1)
    assert allocates(ours, ref_arena)
