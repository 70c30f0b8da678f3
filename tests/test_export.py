"""The export stage: artifacts, manifest, golden vectors, atomicity, FP32 ONNX, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.test_lower import _convert  # noqa: E402
from tinyprec._io import sha256_file  # noqa: E402
from tinyprec.data import Dataset  # noqa: E402
from tinyprec.errors import ArtifactError  # noqa: E402
from tinyprec.recipe import ExportConfig  # noqa: E402

ROLES = ("tflite_int8", "onnx_int8", "onnx_fp32", "ir_sources", "c_source", "c_header", "settings_header",
         "resolver_header", "golden_header")


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, Dataset]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    raw = (rng.standard_normal((60, 1, 6, 6)) * 3 + 5).astype(np.float32)
    ds = Dataset.from_arrays(raw, np.arange(60) % 3, seed=0, class_labels=("a", "b", "c"))
    model = _Small().eval()
    x = torch.from_numpy(ds.inputs("train"))
    return _convert(model, x), model, ds


def _export(setup: tuple[Any, Any, Dataset], out: Path, cfg: ExportConfig | None = None) -> Any:
    from tinyprec.exporting import export_converted

    converted, model, ds = setup
    return export_converted(converted, model, ds, cfg or ExportConfig(golden_vectors=3), out, name="small")


def test_export_writes_artifacts_and_manifest(setup: tuple[Any, Any, Dataset], tmp_path: Path) -> None:
    from tinyprec.runtimes.tflm import run_tflm

    result = _export(setup, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    for role in ROLES:
        entry = man["artifacts"][role]
        path = tmp_path / entry["path"]
        assert path.is_file() and entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
    assert man["artifacts"]["tflite_int8"]["path"] == "model/model_int8.tflite"
    assert man["artifacts"]["c_source"]["path"] == "firmware/model_data.cc"
    tflite = result.tflite_path.read_bytes()
    graph = result.graph
    in_q = graph.tensors[graph.inputs[0]].qparams
    assert man["input"]["scale"] == float(in_q.scale[0]) and man["input"]["zero_point"] == int(in_q.zero_point[0])
    assert man["input"]["layout"] == "NCHW" and man["output"]["layout"] == "NF"
    _, _, ds = setup
    assert man["preprocess"] == {"mean": ds.preprocess.mean, "std": ds.preprocess.std}
    assert man["ops"] == ["CONV_2D", "MAX_POOL_2D", "RESHAPE"]  # the Linear is a full-window CONV_2D
    assert man["arena_bytes"] == result.arena_bytes > 0
    x_probe = np.zeros((1, *graph.tensors[graph.inputs[0]].shape[1:]), np.int8)
    run_tflm(tflite, x_probe, arena_bytes=result.arena_bytes)  # the measured arena is enough
    assert {"tinyprec", "torch", "torchao", "tensorflow", "tflite-micro", "onnx", "onnxruntime"} <= set(man["versions"])
    check = man["export_check"]
    assert check["max_abs_diff"] <= 1 and check["exact_fraction"] >= 0.95
    sources = json.loads(result.ir_sources_path.read_text())
    assert sources[graph.ops[0].outputs[0]] == "conv" and sources[graph.ops[-1].outputs[0]] == "fc"
    # Golden vectors: the first test samples, quantized, and TFLM's outputs for them.
    header = result.firmware["golden_header"].read_text()
    from tinyprec.lowering.check import quantize_input
    from tinyprec.ir.layout import to_ir_layout

    q = to_ir_layout(quantize_input(ds.inputs("test")[:3], in_q), "NCHW")
    expected = run_tflm(tflite, q)
    for row in expected:
        assert ", ".join(str(int(v)) for v in row.reshape(-1)) in header
    # Deterministic: the same converted model gives a byte-identical file.
    again = _export(setup, tmp_path / "again")
    assert again.tflite_path.read_bytes() == tflite


def test_fp32_onnx_matches_torch(setup: tuple[Any, Any, Dataset], tmp_path: Path) -> None:
    from tinyprec.exporting.fp32_onnx import fp32_onnx_bytes
    from tinyprec.runtimes.ort import run_onnx

    _, model, ds = setup
    x = ds.inputs("test")[:8]
    data = fp32_onnx_bytes(model, torch.from_numpy(x))
    got = run_onnx(data, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_failed_export_leaves_nothing_behind(setup: tuple[Any, Any, Dataset], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import tinyprec.formats.firmware as firmware

    first = _export(setup, tmp_path, ExportConfig(golden_vectors=2, onnx=False))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(firmware, "write_bundle", boom)
    with pytest.raises(OSError, match="disk full"):
        _export(setup, tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # the earlier export is intact, no staging folder or new file is left
    assert first.onnx_int8_path is None and not (tmp_path / "model" / "model_int8.onnx").exists()


def test_reexport_without_onnx_drops_the_stale_onnx_files(setup: tuple[Any, Any, Dataset], tmp_path: Path) -> None:
    _export(setup, tmp_path, ExportConfig(golden_vectors=1))
    assert "onnx_int8" in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    _export(setup, tmp_path, ExportConfig(golden_vectors=1, onnx=False))
    artifacts = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    assert "onnx_int8" not in artifacts and "onnx_fp32" not in artifacts and "tflite_int8" in artifacts
    assert not (tmp_path / "model" / "model_int8.onnx").exists()


def test_unsupported_model_raises_before_writing(tmp_path: Path) -> None:
    from tinyprec.errors import UnsupportedOpError
    from tinyprec.exporting import export_converted

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())  # a flattened map as the output
    rng = np.random.default_rng(0)
    ds = Dataset.from_arrays(rng.standard_normal((20, 1, 5, 5)).astype(np.float32), np.arange(20) % 2, seed=0)
    converted = _convert(model.eval(), torch.from_numpy(ds.inputs("train")))
    with pytest.raises(UnsupportedOpError, match="flatten"):
        export_converted(converted, model, ds, ExportConfig(), tmp_path / "out", name="bad")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_smallest_arena_is_exact_on_the_mlperf_reference(kws_tflite: bytes) -> None:
    from tinyprec.runtimes.arena import _Prober, smallest_arena

    arena = smallest_arena(kws_tflite)
    assert 20_000 < arena < 30_000  # the fixture README: about 24.3 KB on a 64-bit host
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(kws_tflite)
        prober = _Prober(path)
        try:
            assert prober.allocates(arena) and not prober.allocates(arena - 1)
        finally:
            prober.close()


def test_cli_export_names_missing_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tinyprec.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n[model]\narch = "digits_cnn"\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(recipe), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model_fp32.pt is missing" in err and "tinyprec train" in err
    (tmp_path / "run" / "train").mkdir(parents=True)
    (tmp_path / "run" / "train" / "model_fp32.pt").write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["export", str(recipe), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert "converted.pt2 is missing" in err and "tinyprec qat" in err
    assert ArtifactError.exit_code == 2


@pytest.mark.slow
def test_cli_export_after_qat_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tinyprec export` on a run folder whose quant/converted.pt2 went through torch.export save/load."""
    from tinyprec.cli import main
    from tinyprec.data import load_dataset
    from tinyprec.quant.stage import quantize_model
    from tinyprec.recipe import build_model_for, load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n[model]\narch = "digits_cnn"\n[data]\nname = "synthetic"\nshape = [1, 8, 8]\n'
                      'num_classes = 10\nsamples = 64\n[quant]\nmode = "ptq"\ncalibration_batches = 1\n')
    r = load_recipe(recipe)
    torch.manual_seed(0)
    model = build_model_for(r)
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    torch.save(model.state_dict(), out / "train" / "model_fp32.pt")
    quantize_model(model, load_dataset(r.data, r.seed, tmp_path), r.quant, out, seed=0)
    files = []
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(recipe), "--out", str(out)])
        assert exit_info.value.code == 0
        files.append((out / "model" / "model_int8.tflite").read_bytes())
    assert files[0] == files[1]  # deterministic
    printed = capsys.readouterr().out
    assert "TFLM arena" in printed and "exact" in printed
    man = json.loads((out / "manifest.json").read_text())
    assert set(ROLES) | {"quant_program"} <= set(man["artifacts"])
    sources = json.loads((out / "model" / "ir_sources.json").read_text())
    assert sources["0.weight"] == "0"  # the Sequential's first conv


def test_float_io_export_matches_int8_export(setup: tuple[Any, Any, Dataset], tmp_path: Path) -> None:
    from tinyprec.runtimes.tflm import run_tflm

    int8 = _export(setup, tmp_path / "int8", ExportConfig(golden_vectors=2, onnx=False))
    flt = _export(setup, tmp_path / "float", ExportConfig(golden_vectors=2, onnx=False, float_io=True))
    assert json.loads((tmp_path / "float" / "manifest.json").read_text())["float_io"] is True
    assert "float" in flt.firmware["golden_header"].read_text()
    _, _, ds = setup
    from tinyprec.lowering.check import quantize_input
    from tinyprec.ir.layout import to_ir_layout

    g = int8.graph
    x = ds.inputs("test")[:4]
    q = to_ir_layout(quantize_input(x, g.tensors[g.inputs[0]].qparams), "NCHW")
    y_int8 = run_tflm(int8.tflite_path.read_bytes(), q)
    y_float = run_tflm(flt.tflite_path.read_bytes(), to_ir_layout(x, "NCHW"))
    out_q = g.tensors[g.outputs[0]].qparams
    expected = (y_int8.astype(np.float32) - out_q.zero_point[0]) * out_q.scale[0]
    np.testing.assert_allclose(y_float, expected, rtol=0, atol=float(out_q.scale[0]) * 1e-3)
