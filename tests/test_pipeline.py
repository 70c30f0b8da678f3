"""`tinyprec run`: all four stages, caching by input hash, exit codes, --json, kill safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyprec.pipeline import parse_stages, run_recipe, stage_inputs
from tinyprec.recipe import load_recipe
from tinyprec.errors import RecipeError
from tests._cli import run_cli

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains

REPO = Path(__file__).resolve().parents[1]

QUICK_RECIPE = """
name = "digits_quick"
seed = 0
[model]
arch = "digits_cnn"
[data]
name = "digits"
[train]
epochs = {epochs}
precision = "fp32"
[quant]
epochs = 1
[export]
golden_vectors = 2
[validate]
max_drop = {max_drop}
max_samples = 120
"""


def _recipe(folder: Path, *, epochs: int = 6, max_drop: float = 2.0, name: str = "digits_quick.toml") -> Path:
    path = folder / name
    path.write_text(QUICK_RECIPE.format(epochs=epochs, max_drop=max_drop))
    return path


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyprec", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pipeline")
    recipe = _recipe(folder)
    out = folder / "run"
    result = run_recipe(recipe, out_dir=out)
    assert [(o.stage, o.status) for o in result.stages] == [
        ("train", "ran"), ("qat", "ran"), ("export", "ran"), ("validate", "ran")]
    assert result.gate_passed is True
    return recipe, out


def test_run_produces_every_artifact_and_a_passing_gate(finished_run: tuple[Path, Path]) -> None:
    _, out = finished_run
    manifest = json.loads((out / "manifest.json").read_text())
    roles = set(manifest["artifacts"])
    assert {"tflite_int8", "onnx_int8", "onnx_fp32", "c_source", "c_header", "settings_header", "resolver_header",
            "report_json", "report_md", "report_html"} <= roles
    for meta in manifest["artifacts"].values():
        assert (out / meta["path"]).stat().st_size == meta["bytes"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["gate"]["passed"] is True
    assert report["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    assert report["accuracy"]["tflm"] > 80.0


def test_rerun_skips_finished_stages(finished_run: tuple[Path, Path]) -> None:
    recipe, out = finished_run
    proc = _cli("run", str(recipe), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert [s["status"] for s in doc["stages"]] == ["cached"] * 4
    assert doc["summary"]["gate_passed"] is True and doc["summary"]["mcu_accuracy"] is not None


def test_changed_section_reruns_only_downstream(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, out = finished_run
    r = load_recipe(recipe)
    before = {s: stage_inputs(r, out, s) for s in ("train", "qat", "export", "validate")}
    stricter = _recipe(recipe.parent, max_drop=1.5, name="digits_quick_b.toml")
    r2 = load_recipe(stricter)
    after = {s: stage_inputs(r2, out, s) for s in ("train", "qat", "export", "validate")}
    assert [before[s] == after[s] for s in before] == [True, True, True, False]


def test_impossible_gate_exits_1_with_the_reason(finished_run: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe, out = finished_run
    code, _, err = run_cli(["validate", str(recipe), "--out", str(out), "--max-drop", "-50"], capsys)
    assert code == 1
    assert "exceeds max_drop" in err and "Traceback" not in err


def test_bad_recipe_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\narch = "digits_cnn"\n[train]\nepochz = 3\n')
    proc = _cli("run", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.epochz" in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "o" / ".stages").exists()


def test_parse_stages() -> None:
    assert parse_stages("validate,train") == ("train", "validate")
    with pytest.raises(RecipeError, match="bogus"):
        parse_stages("train,bogus")


def test_sigkill_mid_run_leaves_nothing_mistakable_and_next_run_finishes(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, epochs=4)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinyprec", "run", str(recipe), "--out", str(out),
                             "--stages", "train,qat"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    # Kill it once training has written its first checkpoint, i.e. mid-stage.
    while time.monotonic() < deadline and not (out / "train" / "checkpoint.pt").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / ".stages" / "train.json").exists()
    # Whatever a killed writer left is a hidden temp file, never a file under an artifact's name.
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp*"))
    r = run_recipe(recipe, out_dir=out, stages="train,qat", resume=True)
    assert [o.status for o in r.stages] == ["ran", "ran"]
    assert not list(out.rglob(".*.tmp*")), "the next run clears temp files of killed writers"
    assert (out / ".stages" / "qat.json").exists()
    again = run_recipe(recipe, out_dir=out, stages="train,qat")
    assert [o.status for o in again.stages] == ["cached", "cached"]
