"""Stage 4 end to end on a real (small) run folder: train -> PTQ -> export -> `tinyprec validate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests._cli import run_cli as _cli

pytestmark = pytest.mark.slow

RECIPE = """
name = "tiny_cnn"
seed = 0
[model]
arch = "digits_cnn"
args = { width = 4, num_classes = 4 }
[data]
name = "synthetic"
shape = [1, 8, 8]
num_classes = 4
samples = 240
[train]
epochs = 3
batch_size = 32
precision = "fp32"
[quant]
mode = "ptq"
calibration = "minmax"
calibration_batches = 4
[validate]
max_drop = 50.0
board = "rp2040"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tinyprec.data import load_dataset
    from tinyprec.exporting import export_model
    from tinyprec.quant import quantize_model
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.training import train_model
    from tinyprec.training.loop import seed_everything

    root = tmp_path_factory.mktemp("e2e")
    path = root / "tiny.toml"
    path.write_text(RECIPE)
    recipe = load_recipe(path)
    out = root / "run"
    dataset = load_dataset(recipe.data, recipe.seed, base_dir=root)
    seed_everything(recipe.seed)
    trained = train_model(build_model_for(recipe), dataset, recipe.train, out, seed=recipe.seed)
    quant = quantize_model(trained.model, dataset, recipe.quant, out, seed=recipe.seed)
    export_model(recipe, quant, trained.model, dataset, recipe.export, out)
    return path, out


def test_validate_lists_every_runner_and_tflm_equals_emulator(run: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    recipe, out = run
    code, stdout, err = _cli(["validate", str(recipe), "--out", str(out)], capsys)
    assert code == 0, err
    rep = json.loads((out / "report" / "report.json").read_text())
    for runner in ("fp32", "fake_quant", "tflm", "tflite", "onnx_int8", "onnx_fp32", "emulator"):
        assert rep["runners"][runner]["ran"], (runner, rep["runners"][runner])
        assert rep["accuracy"][runner] is not None
        assert runner in stdout
    assert rep["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    assert rep["drop"]["tflm"] == pytest.approx(rep["accuracy"]["fp32"] - rep["accuracy"]["tflm"])
    assert rep["gate"]["passed"] is True
    assert rep["resources"]["board"]["name"] == "rp2040" and "cortex-m0plus@133MHz" in rep["resources"]["latency_ms"]
    assert sum(map(sum, rep["confusion_matrix"]["matrix"])) == rep["data"]["samples"]
    # Per-layer rows carry the PyTorch module names of the zoo's Sequential, in execution order.
    modules = [row["module"] for row in rep["layers"]]
    assert modules and modules[0] == "0" and all(row["sqnr_db"] is None or row["sqnr_db"] > 10 for row in rep["layers"])
    roles = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {"report_json", "report_md", "report_html", "tflite_int8"} <= set(roles)


def test_tflm_accuracy_matches_an_independent_tflm_run(run: tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tinyprec.data import load_dataset
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.recipe import load_recipe
    from tinyprec.runtimes.tflm import run_tflm

    recipe_path, out = run
    rep_path = out / "report" / "report.json"
    if not rep_path.exists():
        assert _cli(["validate", str(recipe_path), "--out", str(out)], capsys)[0] == 0
    rep = json.loads(rep_path.read_text())
    recipe = load_recipe(recipe_path)
    ds = load_dataset(recipe.data, recipe.seed, base_dir=recipe_path.parent)
    tflite = (out / "model" / "model_int8.tflite").read_bytes()
    qp = read_tflite(tflite).tensors[read_tflite(tflite).inputs[0]].qparams
    x = np.transpose(ds.inputs("test"), (0, 2, 3, 1)) / np.float32(qp.scale[0])
    q = np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5) + int(qp.zero_point[0]), -128, 127).astype(np.int8)
    pred = run_tflm(tflite, q).argmax(axis=1)
    assert rep["accuracy"]["tflm"] == pytest.approx(100.0 * np.mean(pred == ds.test.y))


def test_impossible_threshold_exits_1_with_the_shortfall(run: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    recipe, out = run
    code, _, err = _cli(["validate", str(recipe), "--out", str(out), "--max-drop", "-100", "--max-samples", "16"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "exceeds max_drop -100.00 by" in lines[0] and "TFLM accuracy" in lines[0]
    assert json.loads((out / "report" / "report.json").read_text())["gate"]["passed"] is False
