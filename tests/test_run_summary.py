"""The `tinyprec run` summary names the score it shows: accuracy for a classifier; for an autoencoder stage 2's
reconstruction MSE and validation's AUC (not "accuracy" for both)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console


def _printed(summary: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> str:
    from tinyprec.cli import run as run_cli

    console = Console(record=True, width=200)
    monkeypatch.setattr(run_cli, "console", console)
    result = SimpleNamespace(summary=summary, stages=[], recipe="r", out_dir=Path("/tmp"))
    run_cli._print_table(result)
    return " ".join(console.export_text().replace("│", " ").split())  # one line, no table rules


def test_autoencoder_rows_say_mse_and_auc(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _printed({"quant_metric": "mse", "fake_quant_accuracy": 0.19823, "ptq_accuracy": 0.2,
                     "metric": "ROC AUC x100 (reconstruction error)", "fp32_accuracy": 79.58, "mcu_accuracy": 79.56},
                    monkeypatch)
    assert "fake-quant reconstruction MSE (PyTorch) 0.1982" in text
    assert "int8 on MCU (TFLM) AUC x100 79.56" in text
    assert "accuracy" not in text


def test_classifier_rows_say_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _printed({"quant_metric": "accuracy", "fake_quant_accuracy": 97.5, "metric": "top-1 accuracy (%)",
                     "fp32_accuracy": 98.0, "mcu_accuracy": 97.5}, monkeypatch)
    assert "FP32 accuracy (PyTorch) 98.00" in text and "fake-quant accuracy (PyTorch) 97.50" in text
