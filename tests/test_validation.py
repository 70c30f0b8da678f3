"""Stage 4 on a foreign model (MLPerf KWS) and the CLI contract: gate exit 1, bad input exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests._cli import run_cli as _cli
from tinyprec.errors import ArtifactError, DataError, ModelFormatError
from tinyprec.validation.api import validate_tflite
from tinyprec.validation.validate import GateSettings

N = 24


@pytest.fixture(scope="module")
def kws_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "kws.npz"
    x = (rng.normal(size=(N, 49, 10)) * 20 + 5).astype(np.float32)
    np.savez(path, x=x, y=rng.integers(0, 12, N), mean=np.float32(5.0), std=np.float32(2.0))
    return path


@pytest.fixture(scope="module")
def foreign(mlperf_dir: Path, kws_npz: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("run")
    seen: list[str] = []
    result = validate_tflite(mlperf_dir / "kws_ref_model.tflite", kws_npz, out_dir=out,
                             settings=GateSettings(board="stm32l4r5"), progress=lambda s, d, t: seen.append(s))
    return result, out, seen


def test_foreign_report_keys_and_files(foreign) -> None:  # type: ignore[no-untyped-def]
    result, out, seen = foreign
    rep = json.loads((out / "report" / "report.json").read_text())
    for key in ("fp32", "fake_quant", "tflm", "tflite", "onnx_int8", "emulator"):
        assert key in rep["accuracy"]
    assert rep["accuracy"]["fp32"] is None and rep["runners"]["fp32"]["note"].startswith("skipped")
    assert "tflm_vs_emulator" in rep["agreement"]
    assert rep["resources"]["arena_bytes"] == 24272 and rep["resources"]["flash_bytes"] > 53936
    assert rep["gate"]["passed"] is True and result.passed
    assert rep["resources"]["latency_ms"]["cortex-m4@120MHz"] == pytest.approx(181.9, rel=1e-3)
    html = (out / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<script" not in html
    roles = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {"report_json", "report_md", "report_html"} <= set(roles)
    assert "tflm" in seen and "resources" in seen


def test_foreign_accuracy_is_what_tflm_computes(foreign, mlperf_dir: Path, kws_npz: Path) -> None:  # type: ignore[no-untyped-def]
    from tinyprec.runtimes.tflm import run_tflm

    result, _, _ = foreign
    z = np.load(kws_npz)
    scaled = ((z["x"] - 5.0) / 2.0).astype(np.float32) / np.float32(0.5847029)
    q = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + 83, -128, 127).astype(np.int8)
    pred = run_tflm((mlperf_dir / "kws_ref_model.tflite").read_bytes(), q.reshape(N, 49, 10, 1)).argmax(axis=1)
    assert result.report["accuracy"]["tflm"] == pytest.approx(100.0 * np.mean(pred == z["y"]))


def test_emulator_and_tf_lite_agree_with_tflm_on_kws(foreign) -> None:  # type: ignore[no-untyped-def]
    agreement = foreign[0].report["agreement"]
    assert agreement["tflm_vs_emulator"]["identical_outputs"] == 100.0
    assert agreement["tflm_vs_tflite"]["identical_outputs"] == 100.0


def test_gate_budget_failure_exit_1(mlperf_dir: Path, kws_npz: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(["validate", "--tflite", str(mlperf_dir / "kws_ref_model.tflite"), "--data", str(kws_npz),
                           "--out", str(tmp_path), "--ram-budget", "1000", "--max-samples", "4"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert f"RAM {24272 + 4 * (49 * 10 + 12):,} B exceeds budget 1,000 B by" in lines[0]
    assert json.loads((tmp_path / "report" / "report.json").read_text())["gate"]["passed"] is False


def test_board_that_does_not_fit_fails(mlperf_dir: Path, kws_npz: Path, tmp_path: Path) -> None:
    from tinyprec.errors import ValidationGateError
    from tinyprec.mcu import boards

    tiny = boards.Board("tiny", "test MCU", "cortex-m0plus", 48.0, 16 * 1024, 32 * 1024)
    boards.BOARDS["tiny"] = tiny
    try:
        result = validate_tflite(mlperf_dir / "kws_ref_model.tflite", kws_npz, out_dir=tmp_path,
                                 settings=GateSettings(board="tiny", max_samples=2))
    finally:
        del boards.BOARDS["tiny"]
    assert not result.passed
    with pytest.raises(ValidationGateError, match="does NOT fit"):
        result.raise_for_gate()


@pytest.mark.parametrize("case", ["missing_model", "corrupt_model", "wrong_shape", "no_labels", "float_model",
                                  "bad_board", "missing_run", "corrupt_run"])
def test_bad_input_exit_2_one_line(case: str, mlperf_dir: Path, kws_npz: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = mlperf_dir / "kws_ref_model.tflite"
    data = kws_npz
    argv_extra: list[str] = []
    if case == "missing_model":
        model = tmp_path / "nope.tflite"
    elif case == "corrupt_model":
        model = tmp_path / "bad.tflite"
        raw = bytearray((mlperf_dir / "kws_ref_model.tflite").read_bytes()[:30000])
        model.write_bytes(bytes(raw))
    elif case == "wrong_shape":
        data = tmp_path / "d.npz"
        np.savez(data, x=np.zeros((3, 10, 10), np.float32), y=np.zeros(3, np.int64))
    elif case == "no_labels":
        data = tmp_path / "d.npz"
        np.savez(data, x=np.zeros((3, 49, 10), np.float32))
    elif case == "float_model":
        import tflite_micro

        model = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    elif case == "bad_board":
        argv_extra = ["--board", "commodore64"]
    argv = ["validate", "--tflite", str(model), "--data", str(data), "--out", str(tmp_path / "o"), *argv_extra]
    if case in ("missing_run", "corrupt_run"):
        recipe = tmp_path / "r.toml"
        recipe.write_text('name = "r"\n[model]\narch = "digits_cnn"\n[data]\nname = "digits"\n')
        run = tmp_path / "run"
        if case == "corrupt_run":
            (run / "model").mkdir(parents=True)
            (run / "train").mkdir()
            (run / "model" / "model_int8.tflite").write_bytes((mlperf_dir / "kws_ref_model.tflite").read_bytes()[:9000])
            (run / "train" / "model_fp32.pt").write_bytes(b"not used: the model file is checked first")
        argv = ["validate", str(recipe), "--out", str(run)]
    code, _, err = _cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyprec: error: "), err


def test_library_errors_are_typed(mlperf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        validate_tflite(tmp_path / "none.tflite", tmp_path / "none.npz")
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00\x00\x00\x00TFL3" + b"\xff" * 64)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 49, 10), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(ModelFormatError):
        validate_tflite(bad, data)
    np.savez(data, x=np.zeros((2, 49, 10), np.float32), y=np.full(2, 40, np.int64))
    with pytest.raises(DataError, match="labels"):
        validate_tflite(mlperf_dir / "kws_ref_model.tflite", data, out_dir=tmp_path)
