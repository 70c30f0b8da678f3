"""The precision search: the MILP on hand-made sensitivities, and a small search end to end against TFLM."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.quant.bits import PRESETS
from tinyprec.quant.search_milp import LayerSensitivity, solve


def _sens(name: str, weights: int, kl_w4: float, *, a16: bool = True) -> LayerSensitivity:
    return LayerSensitivity(name, "CONV_2D", weights, 8, 0.01, kl_w4, 0.05, True, a16)


SENS = [_sens("a", 100, 5.0), _sens("b", 4000, 0.2), _sens("c", 8000, 0.3), _sens("d", 600, 0.1)]


def test_unbounded_takes_int4_everywhere_and_zero_bound_none() -> None:
    every = solve(SENS, kl_bound=np.inf, head_budget=None, profile=None)
    assert every == {s.layer: PRESETS["w4a8"] for s in SENS}
    none = solve(SENS, kl_bound=0.0, head_budget=None, profile=None)
    assert none == {s.layer: PRESETS["int8"] for s in SENS}


def test_kl_bound_keeps_the_sensitive_layer_int8() -> None:
    got = solve(SENS, kl_bound=1.0, head_budget=None, profile=None)
    assert got is not None and got["a"] == PRESETS["int8"]
    assert {k for k, v in got.items() if v.weight_bits == 4} == {"b", "c", "d"}


def test_ram_budget_excludes_the_layer_whose_unpack_scratch_does_not_fit() -> None:
    # One op per layer, 1,000 B live everywhere; the INT4 scratch is the layer's weight count at its op.
    live = [1000] * 5
    extra = [{} for _ in range(5)]
    scratch = [{}, {"a": 112}, {"b": 4000}, {"c": 8000}, {"d": 608}]
    got = solve(SENS, kl_bound=np.inf, head_budget=6000, profile=(live, extra, scratch))
    assert got is not None and got["c"] == PRESETS["int8"]  # 1,000 + 8,000 > 6,000
    assert got["b"].weight_bits == 4 and got["d"].weight_bits == 4


@pytest.mark.slow
def test_search_end_to_end_and_the_chosen_arena_on_tflm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A small trained model: the chosen assignment meets the budget by the model, and TFLM's measured arena
    of the exported, split file is what the budget model said (within 2%)."""
    import torch

    from tinyprec.data import load_dataset
    from tinyprec.exporting.stage import export_converted
    from tinyprec.quant import quantize_model
    from tinyprec.quant.search import search_assignment
    from tinyprec.recipe import DataConfig, ExportConfig, QuantConfig, TrainConfig
    from tinyprec.zoo import build_model
    from tinyprec.training import train_model
    from tinyprec.training.loop import seed_everything

    ds = load_dataset(DataConfig(name="digits", val_fraction=0.1, test_fraction=0.2), 0)
    seed_everything(0)
    model = build_model("digits_cnn", {"width": 8})
    model = train_model(model, ds, TrainConfig(epochs=4, batch_size=64, lr=0.005, precision="fp32"), tmp_path,
                        seed=0).model.eval()
    cfg = QuantConfig(mode="ptq", autocast="fp32", bits="mixed", search_max_drop=1.0, arena_budget_ratio=1.25,
                      int4_max_scratch=1024, calibration_batches=4)
    found = search_assignment(model, ds, cfg)
    assert found.candidates and found.candidates[found.chosen].assignment == {k: v.name for k, v in found.assignment.items()}
    chosen = found.candidates[found.chosen]
    assert chosen.fits and chosen.arena_bytes <= found.arena_budget and chosen.val_cost <= 1.0
    assert found.int8_val_accuracy is not None  # the cost is what the bits below int8 lose on top of int8 PTQ
    for c in found.candidates:
        assert abs(c.val_cost - (found.int8_val_accuracy - c.val_accuracy)) < 1e-9
        assert abs(c.val_drop - (found.fp32_val_accuracy - c.val_accuracy)) < 1e-9
    cheaper = [c for c in found.candidates if c.flash_bytes < chosen.flash_bytes and c.fits]
    assert all(c.val_cost > 1.0 for c in cheaper)  # the least flash within the bound
    assert any(v.weight_bits == 4 for v in found.assignment.values())
    flashes = [c.flash_bytes for c in found.candidates]
    assert flashes == sorted(flashes) and chosen.flash_bytes < found.int8_file_bytes
    q = quantize_model(model, ds, cfg, tmp_path, mode="ptq", assignment=found.assignment)
    e = export_converted(q.converted, None, ds, ExportConfig(onnx=False, golden_vectors=1), tmp_path,
                         int4_max_scratch=cfg.int4_max_scratch)
    assert e.arena_bytes <= found.arena_budget  # the search confirmed its choice on TFLM
    assert (e.arena_bytes, e.tflite_bytes) == (chosen.measured_arena_bytes, chosen.measured_file_bytes)
    assert abs(e.arena_bytes - chosen.arena_bytes) <= 0.05 * chosen.arena_bytes  # the budget model's estimate
    assert abs(e.tflite_bytes - chosen.flash_bytes) <= 0.05 * chosen.flash_bytes
    del torch
