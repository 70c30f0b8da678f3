"""Smoke test: every script in examples/ runs (quick mode: fewer epochs) and prints its result."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("0*.py"))
EXPECT = {
    "01_train_mixed_precision.py": "parameters stay {'torch.float32'}",
    "02_quantization_aware_training.py": "fake-quant int8",
    "03_export_int8.py": "TFLM int8 accuracy",
    "04_validate_on_mcu.py": "gate passed",
    "05_bring_your_own_model.py": "TFLM",
}


@pytest.fixture(scope="module")
def out_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


def test_every_example_is_covered() -> None:
    assert SCRIPTS == sorted(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, out_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process (runpy, as `python script.py` would) so the heavy imports are paid once per session.
    monkeypatch.setenv("TINYPREC_EXAMPLES_QUICK", "1")
    monkeypatch.setenv("TINYPREC_EXAMPLES_OUT", str(out_base))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "_common", raising=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert EXPECT[script] in printed.getvalue(), printed.getvalue()[-2000:]
