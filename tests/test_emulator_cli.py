"""``tinyprec emulate``: writes the emulator's (TFLM-exact) outputs; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyprec.cli import main
from tinyprec.runtimes.tflm import run_tflm


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_emulate_writes_tflm_exact_outputs(tmp_path: Path, mlperf_dir: Path, kws_tflite: bytes,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).integers(-128, 128, size=(6, 49, 10, 1)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    model = mlperf_dir / "kws_ref_model.tflite"
    code, out, _ = _run(["emulate", str(model), "--input", str(tmp_path / "x.npy"),
                         "--output", str(tmp_path / "y.npy"), "--taps", str(tmp_path / "taps.npz")], capsys)
    assert code == 0 and "emulated 6 sample(s)" in out
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and y.shape == (6, 12)
    np.testing.assert_array_equal(y, run_tflm(kws_tflite, x))
    with np.load(tmp_path / "taps.npz") as taps:
        assert len(taps.files) == 14  # input + 13 op outputs
    code, _, _ = _run(["emulate", str(model), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.npy"),
                       "--rounding", "single"], capsys)
    assert code == 0 and np.load(tmp_path / "s.npy").shape == (6, 12)


@pytest.mark.parametrize(("array", "needle"), [
    (np.zeros((2, 49, 10, 1), np.float32), "has dtype float32; the model takes int8 of shape (batch, 49, 10, 1)"),
    (np.zeros((2, 49, 10), np.int8), "has shape (2, 49, 10); the model takes (batch, 49, 10, 1)"),
])
def test_wrong_input_is_one_line_exit_2(tmp_path: Path, mlperf_dir: Path, array: np.ndarray, needle: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", array)
    code, _, err = _run(["emulate", str(mlperf_dir / "kws_ref_model.tflite"), "--input", str(tmp_path / "x.npy"),
                         "--output", str(tmp_path / "y.npy")], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "y.npy").exists()


def test_bad_model_and_options_exit_2(tmp_path: Path, mlperf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 49, 10, 1), np.int8))
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    cases = [
        ([str(tmp_path / "junk.tflite")], "not a TFLite flatbuffer"),
        ([str(tmp_path / "missing.tflite")], "cannot read the model"),
        ([str(mlperf_dir / "kws_ref_model.tflite"), "--rounding", "nearest"], "use double or single"),
    ]
    for extra, needle in cases:
        code, _, err = _run(["emulate", *extra, "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err
    code, _, err = _run(["emulate", str(mlperf_dir / "kws_ref_model.tflite"), "--input",
                         str(tmp_path / "nope.npy"), "--output", str(tmp_path / "y.npy")], capsys)
    assert code == 2 and "no such file" in err
