"""`tinyprec qat`: end to end on a tiny recipe in a fresh process with no third-party start-up noise
(torchao's "Failed to load" lines, torch/TensorFlow banners), and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = ("Failed to load", "KernelPreference", "is an Enum subclass", "oneDNN", "cuda", "TF-TRT", "absl")

MODEL_PY = '''
import torch
from torch import nn


def small(act: str = "relu"):
    layer = {"relu": nn.ReLU(), "softplus": nn.Softplus()}[act]
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
autocast = "fp32"
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


def test_import_tinyprec_quant_does_not_load_torch(tmp_path):
    done = _run("-c", "import sys, tinyprec.quant; print('torch' in sys.modules, 'torchao' in sys.modules)",
                cwd=tmp_path)
    assert done.stdout.strip() == "False False", done.stderr


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from tinyprec.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def test_qat_without_stage_one_weights_says_what_to_run(tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(module="mymodels", act="relu"))
    code, _, err = _cli(capsys, "qat", str(recipe), "--out", str(tmp_path / "run"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "model_fp32.pt" in lines[0] and "tinyprec train" in lines[0]


def test_qat_refuses_unsupported_op_in_one_line(tmp_path, capsys):
    recipe, out = _setup(tmp_path, "softplus")  # GELU converts now (tests/test_ops_act.py)
    code, _, err = _cli(capsys, "qat", str(recipe), "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "unsupported op 'softplus'" in lines[0] and "module '2'" in lines[0] and "Hardswish" in lines[0]  # a fix
    assert not (out / "quant").exists()


@pytest.mark.slow
def test_qat_command_end_to_end(tmp_path):
    """A fresh process (so torchao's import-time noise would show) runs the command end to end."""
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
