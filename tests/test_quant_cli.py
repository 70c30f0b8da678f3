"""`tinyprec qat`: end to end on a tiny recipe, one-line errors with exit code 2, and no third-party
start-up noise (torchao's "Failed to load" lines, torch/TensorFlow banners) from importing stage 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = ("Failed to load", "KernelPreference", "is an Enum subclass", "oneDNN", "cuda", "TF-TRT", "absl")

MODEL_PY = '''
import torch
from torch import nn


def small(act: str = "relu"):
    layer = {"relu": nn.ReLU(), "gelu": nn.GELU()}[act]
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), layer, nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))
'''

RECIPE = '''
name = "tiny"
[model]
module = "{module}:small"
[model.args]
act = "{act}"
[data]
name = "synthetic"
shape = [1, 6, 6]
num_classes = 3
samples = 60
[quant]
mode = "qat"
epochs = 1
batch_size = 8
calibration_batches = 2
precision = "fp32"
'''


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TORCHAO"))}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _setup(tmp_path: Path, act: str) -> tuple[Path, Path]:
    import torch

    module = tmp_path / "mymodels.py"
    module.write_text(MODEL_PY)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(module=module.as_posix(), act=act))
    out = tmp_path / "run"
    sys.path.insert(0, str(tmp_path))
    try:
        import mymodels  # noqa: PLC0415

        weights = mymodels.small(act).state_dict()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mymodels", None)
    (out / "train").mkdir(parents=True)
    torch.save(weights, out / "train" / "model_fp32.pt")
    return recipe, out


def test_importing_stage_two_is_quiet(tmp_path):
    code = textwrap.dedent("""
        import tinyprec, tinyprec.quant
        from tinyprec.quant.stage import quantize_model
        from tinyprec.quant.quantizer import TFLiteInt8Quantizer
        from tinyprec.quant import load_converted
        import tinyprec.cli.qat
        print("ok")
    """)
    done = _run("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert not [word for word in NOISE if word in done.stderr], done.stderr


def test_import_tinyprec_quant_does_not_load_torch(tmp_path):
    done = _run("-c", "import sys, tinyprec.quant; print('torch' in sys.modules, 'torchao' in sys.modules)",
                cwd=tmp_path)
    assert done.stdout.strip() == "False False", done.stderr


def test_qat_without_stage_one_weights_says_what_to_run(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(module="mymodels", act="relu"))
    done = _run("-m", "tinyprec", "qat", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_fp32.pt" in lines[0] and "tinyprec train" in lines[0]


def test_qat_refuses_unsupported_op_in_one_line(tmp_path):
    recipe, out = _setup(tmp_path, "gelu")
    done = _run("-m", "tinyprec", "qat", str(recipe), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "unsupported op 'gelu'" in lines[0] and "module '2'" in lines[0] and "Conv2d" in lines[0]
    assert not (out / "quant").exists()


@pytest.mark.slow
def test_qat_command_end_to_end(tmp_path):
    recipe, out = _setup(tmp_path, "relu")
    done = _run("-m", "tinyprec", "qat", str(recipe), "--out", str(out), "--mode", "ptq", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ptq" in done.stdout and "int8 fake-quant" in done.stdout
    assert not [word for word in NOISE if word in done.stderr + done.stdout], done.stderr
    metrics = json.loads((out / "quant" / "metrics.json").read_text())
    assert metrics["mode"] == "ptq" and metrics["epochs"] == 0 and metrics["ptq"] == metrics["fake_quant"]
    assert (out / "quant" / "converted.pt2").stat().st_size > 0
    tensors = json.loads((out / "quant" / "qparams.json").read_text())["tensors"]
    assert {t["kind"] for t in tensors} == {"input", "activation", "weight", "bias"}
