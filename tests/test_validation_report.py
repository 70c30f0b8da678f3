"""The validation report's HTML and per-layer references, on hand-made report content."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinyprec.validation.layers import per_layer_errors, record_activations
from tinyprec.validation.report import markdown, write_reports
from tinyprec.validation.runners import quantize, to_ir_layout
from tests.test_validation_layers import _graph, _model


def _report(layers: list[dict], reference: str) -> dict:
    runners = ("fp32", "fake_quant", "fake_quant_tflm", "tflm", "tflite", "onnx_int8", "onnx_fp32", "emulator")
    return {
        "model": {"name": "tiny"}, "metric": "top-1 accuracy (%)", "reference": "fp32",
        "data": {"split": "test", "samples": 10, "task": "classification"},
        "gate": {"passed": True, "checks": [{"passed": True, "message": "drop 0.0 within max_drop 1.0"}]},
        "runners": {r: {"title": r, "seconds": 0.1, "note": ""} for r in runners},
        "accuracy": {r: 90.0 for r in runners}, "drop": {r: 0.0 for r in runners}, "agreement": {},
        "layers": layers, "layers_taps": "emulator", "layers_reference": reference,
        "resources": {"flash_bytes": 1, "model_bytes": 1, "runtime_code_bytes_estimate": 0, "flash_note": "",
                      "ram_bytes": 1, "arena_bytes": 1, "io_buffer_bytes": 0, "resolver": [], "macs": 1,
                      "latency_ms": {}, "latency_label": "", "board": {"summary": "fits"}},
    }


ROW = {"index": 0, "op": "CONV_2D", "module": "0", "precision": "w4a8", "shape": [1, 2, 2, 4], "sqnr_db": 30.0,
       "sqnr_stage1_db": 12.0, "max_err_lsb": 1.0, "mean_err_lsb": 0.2}


def test_html_shows_the_title_and_gate_once(tmp_path: Path) -> None:
    paths = write_reports(_report([ROW], "QAT float weights"), tmp_path)
    page = paths["report_html"].read_text()
    assert page.count("Validation report: tiny") == 1
    assert page.count("drop 0.0 within max_drop 1.0") == 1
    assert len(re.findall(r"data:image/png;base64,", page)) == 2  # accuracy, SQNR


def test_layer_table_labels_both_references_and_the_precision() -> None:
    md = markdown(_report([ROW], "QAT float weights"))
    assert "| SQNR (dB) | SQNR vs stage-1 FP32 (dB) |" in md
    assert "| w4a8 | 1x2x2x4 | 30.00 | 12.00 |" in md
    # PTQ: one reference only, said so.
    md = markdown(_report([{**ROW, "sqnr_stage1_db": None}], "stage-1 FP32 weights (not fine-tuned)"))
    assert "stage-1 FP32" not in md.split("| # |")[1] and "own float weights (stage-1 FP32" in md


def test_layer_error_against_own_weights_excludes_weight_drift() -> None:
    """Taps computed by a fine-tuned network: against its own float weights only rounding remains,
    against the stage-1 model the drift shows up in the stage-1 column."""
    import copy

    import torch

    stage1 = _model()
    tuned = copy.deepcopy(stage1)
    with torch.no_grad():
        tuned[0].weight.mul_(1.3)
    x = np.random.default_rng(1).normal(size=(8, 1, 5, 5)).astype(np.float32)
    own, old = record_activations(tuned, x), record_activations(stage1, x)
    relu = own[2][2]
    conv_qp = _qp(relu.max() / 255.0, -128)
    fc_qp = _qp(np.abs(own[4][2]).max() / 127.0, 0)
    taps = {"conv": quantize(to_ir_layout(relu, "NCHW"), conv_qp), "fc": quantize(own[4][2], fc_qp)}
    rows = per_layer_errors(_graph(conv_qp, fc_qp), taps, own, stage1_log=old)
    conv = rows[0]
    assert conv.max_err_lsb <= 0.5 + 1e-4 and conv.sqnr_db > 35.0
    assert conv.sqnr_stage1_db < conv.sqnr_db - 10.0
    assert conv.precision == "a8"  # the hand-made graph's ops carry no weight tensors


def _qp(scale: float, zp: int):  # type: ignore[no-untyped-def]
    from tinyprec.ir import QParams

    return QParams.per_tensor(float(scale), zp)


@pytest.mark.slow
def test_qat_float_twin_holds_the_fine_tuned_weights() -> None:
    import torch

    from tinyprec.quant.capture import example_like, with_biases, with_output_softmax
    from tinyprec.quant.stage import _prepare, float_twin_state
    from tinyprec.recipe import QuantConfig

    model = _model()
    wrapped = with_output_softmax(model)
    prepared = _prepare(wrapped.train(), example_like((1, 5, 5)), qat=True, cfg=QuantConfig())
    with torch.no_grad():
        dict(prepared.named_parameters())["model.0.weight"].add_(0.25)
    state = float_twin_state(prepared, wrapped)
    assert state is not None and set(state) == set(with_biases(model).state_dict())
    assert torch.allclose(state["0.weight"], model[0].weight + 0.25)
    assert torch.equal(state["1.running_var"], model[1].running_var)


def test_search_section_and_tradeoff_plot(tmp_path: Path) -> None:
    cand = {"assignment": {"0": "int8", "3": "w4a8"}, "kl_bound": 1.0, "kl_proxy": 0.5, "flash_bytes": 9000,
            "arena_bytes": 7000, "int4_scratch_bytes": 2048, "val_accuracy": 98.5, "val_drop": 0.25, "val_cost": 0.0, "fits": True}
    search = {"assignment": {"0": "int8", "3": "w4a8"}, "chosen": 1, "arena_budget": 7500, "int8_arena_bytes": 6000,
              "int8_file_bytes": 12000, "fp32_val_accuracy": 98.75, "max_drop": 0.5, "seconds": 12.5, "notes": [],
              "int8_val_accuracy": 98.5,
              "candidates": [{**cand, "assignment": {"0": "int8", "3": "int8"}, "flash_bytes": 12000,
                              "int4_scratch_bytes": 0}, cand]}
    rep = _report([ROW], "QAT float weights")
    rep["search"] = search
    md = markdown(rep)
    assert "## Precision search" in md and "| 1 | w4a8 | int8 |" not in md
    assert "| 1 | int8 | w4a8 | 9,000 | 7,000 | 2,048 | 98.50 | 0.25 | 0.00 | **chosen** |" in md
    assert "(FP32 98.75, all-int8 PTQ 98.50)" in md
    page = write_reports(rep, tmp_path)["report_html"].read_text()
    assert "Precision search: trade-off" in page and len(re.findall(r"data:image/png;base64,", page)) == 3
