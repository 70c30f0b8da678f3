"""The shortened keyword-spotting recipe end to end: spoken_keywords -> DS-CNN -> QAT -> int8 on TFLM, gate on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyprec.pipeline import run_recipe

QUICK = Path(__file__).resolve().parents[1] / "models" / "kws_ds_cnn_quick.toml"


@pytest.mark.slow
def test_quick_kws_recipe_runs_gated_and_records_the_front_end(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYPREC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = run_recipe(QUICK, out_dir=out)
    assert [o.status for o in result.stages] == ["ran"] * 4
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["data"]["samples"] == 6 * 24
    # Twelve training speakers and five epochs learn little (the full recipe: benchmarks/bench_kws.py), but
    # clearly more than chance (8.3%).
    assert report["accuracy"]["fp32"] > 16.7
    assert report["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    assert result.gate_passed is True, report["gate"]
    manifest = json.loads((out / "manifest.json").read_text())
    fe = manifest["preprocess"]["frontend"]
    assert (fe["sample_rate"], fe["window_samples"], fe["stride_samples"], fe["mel_bins"], fe["coefficients"],
            fe["frames"]) == (16000, 480, 320, 40, 10, 49)
    header = (out / "firmware" / "model_settings.h").read_text()
    constants = dict(re.findall(r"constexpr (?:int|float|bool) (kFeature\w+) = ([^;]+);", header))
    assert {k: float(v.rstrip("f")) for k, v in constants.items() if k in (
        "kFeatureSampleRate", "kFeatureWindowSamples", "kFeatureStrideSamples", "kFeatureFftLength",
        "kFeatureMelBins", "kFeatureLowerHz", "kFeatureUpperHz", "kFeatureCoefficients", "kFeatureFrames")} == {
        "kFeatureSampleRate": 16000, "kFeatureWindowSamples": 480, "kFeatureStrideSamples": 320,
        "kFeatureFftLength": 512, "kFeatureMelBins": 40, "kFeatureLowerHz": 20, "kFeatureUpperHz": 4000,
        "kFeatureCoefficients": 10, "kFeatureFrames": 49}
    assert float(constants["kFeatureLogOffset"].rstrip("f")) == pytest.approx(1e-6)
    assert "constexpr bool kHasFeatureFrontEnd = true;" in header
    cxx = shutil.which("g++")
    if cxx is not None:
        src = tmp_path / "use.cc"
        src.write_text('#include "model_settings.h"\nint main() { return kFeatureFrames * kFeatureCoefficients '
                       "== kInputElements ? 0 : 1; }\n")
        subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(out / "firmware"), str(src),
                        "-o", str(tmp_path / "use")], check=True)
        assert subprocess.run([str(tmp_path / "use")]).returncode == 0
    assert os.environ["TINYPREC_CACHE"] == str(tmp_path / "cache")
