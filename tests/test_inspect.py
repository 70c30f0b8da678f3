"""``inspect`` on the MLPerf Tiny models and a float model, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._cli import run_cli as _cli
from tinyprec.mcu.macs import total_macs
from tinyprec.validation.inspect import inspect_file, inspect_tflite


def test_inspect_kws(kws_tflite: bytes) -> None:
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.runtimes.tflm import tflm_arena_bytes

    result = inspect_tflite(kws_tflite, target="cortex-m4@120")
    assert result.kind == "int8" and len(result.ops) == 13
    assert [r.op for r in result.ops].count("DEPTHWISE_CONV_2D") == 4
    assert result.macs == total_macs(read_tflite(kws_tflite))
    assert result.arena_bytes == tflm_arena_bytes(kws_tflite)
    assert result.arena_head_bytes + result.arena_tail_bytes == result.arena_bytes  # type: ignore[operator]
    assert result.file_bytes == 53936
    assert result.latency is not None and result.latency.ms == pytest.approx(181.9, rel=1e-3)
    assert result.ops[0].qparams.startswith("s=") and result.inputs[0].shape == (1, 49, 10, 1)


def test_inspect_board_target_uses_board_clock(ic_tflite: bytes) -> None:
    at_64 = inspect_tflite(ic_tflite, target="nrf52840", measure_arena=False)
    assert at_64.latency is not None and at_64.latency.target == "cortex-m4@64MHz"
    assert at_64.latency.ms == pytest.approx(704.2 * 120 / 64, rel=1e-3)
    assert at_64.arena_bytes is None


def test_float_model_is_named_and_gets_no_latency() -> None:
    import tflite_micro

    sine = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    result = inspect_file(sine, measure_arena=True)
    assert result.kind == "float"
    assert result.latency is None and "float" in result.latency_note
    assert result.arena_bytes is not None and result.arena_bytes > 0


def test_cli_json(mlperf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["inspect", str(mlperf_dir / "kws_ref_model.tflite"), "--json", "--target", "cortex-m7"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["arena_bytes"] == 24272
    assert data["resolver"][:2] == ["AddConv2D", "AddDepthwiseConv2D"]
    assert data["latency"]["target"] == "cortex-m7@280MHz" and "estimate" in data["latency"]["label"]
    assert len(data["ops"]) == 13 and data["ops"][0]["macs"] == 320000


def test_cli_table(mlperf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["inspect", str(mlperf_dir / "pretrainedResnet_quant.tflite")], capsys)
    assert code == 0
    assert "TFLM arena: 55,984 B" in out and "AddAdd()" in out and "estimate" in out


@pytest.mark.parametrize("case", ["missing", "truncated", "not_tflite", "bad_target"])
def test_cli_bad_input_one_line_exit_2(case: str, tmp_path: Path, kws_tflite: bytes,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.tflite"
    extra: list[str] = []
    if case == "truncated":
        path.write_bytes(kws_tflite[:20000])
    elif case == "not_tflite":
        path.write_text("hello, not a model\n" * 4)
    elif case == "bad_target":
        path.write_bytes(kws_tflite)
        extra = ["--target", "z80"]
    code, _, err = _cli(["inspect", str(path), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyprec: error: ")
