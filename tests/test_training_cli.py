"""`tinyprec train` from the command line: plain progress lines, one-line errors, DDP under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

MLP = """
import torch

def build(features: int = 8, classes: int = 3):
    return torch.nn.Sequential(torch.nn.Linear(features, 16), torch.nn.ReLU(), torch.nn.Linear(16, classes))
"""

RECIPE = """
name = "ddp_tiny"
seed = 0
[model]
module = "mlp.py:build"
[data]
name = "synthetic"
shape = [8]
num_classes = 3
samples = 100
[train]
epochs = 2
batch_size = {batch}
precision = "fp32"
optimizer = "adam"
"""


def _tinyprec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyprec", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def test_bad_recipe_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[model]\narch = "digits_cnn"\n[train]\nepoch = 3\n')
    proc = _tinyprec("train", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.epoch" in lines[0] and str(path) in lines[0], proc.stderr


def test_plain_progress_lines_when_not_a_tty(tmp_path: Path) -> None:
    (tmp_path / "mlp.py").write_text(MLP)
    (tmp_path / "r.toml").write_text(RECIPE.format(batch=10))
    proc = _tinyprec("train", "r.toml", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("train: precision fp32 on cpu, world size 1")
    assert out[1].startswith("epoch 1/1 loss ") and "samples/s skipped 0" in out[1]
    assert out[-1].startswith("train: done, test accuracy")
    assert (tmp_path / "export" / "ddp_tiny" / "train" / "model_fp32.pt").is_file()
    assert "\x1b[" not in proc.stdout  # no terminal control codes in a log


@pytest.mark.slow
def test_torchrun_two_processes_matches_one_process_double_batch(tmp_path: Path) -> None:
    """DDP over 2 gloo processes with batch b each equals one process with batch 2b (no batch norm)."""
    from tinyprec.data import load_dataset
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.training import seed_everything, train_model

    (tmp_path / "mlp.py").write_text(MLP)
    (tmp_path / "r.toml").write_text(RECIPE.format(batch=5))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tinyprec", "train", "r.toml", "--out", "ddp"],
        capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "world size 2" in proc.stdout and proc.stdout.count("train: done") == 1  # rank 0 only
    ddp = torch.load(tmp_path / "ddp" / "train" / "model_fp32.pt", weights_only=True)

    (tmp_path / "single.toml").write_text(RECIPE.format(batch=10))
    recipe = load_recipe(tmp_path / "single.toml")
    dataset = load_dataset(recipe.data, recipe.seed)
    assert len(dataset.train) % 2 == 0  # so DistributedSampler adds no padding sample
    seed_everything(recipe.seed)
    single = train_model(build_model_for(recipe), dataset, recipe.train, tmp_path / "single", seed=0).model.state_dict()
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6)
    initial = build_model_for(recipe).state_dict()
    assert any(not torch.allclose(initial[k], ddp[k]) for k in initial)  # it did train


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import tinyprec.cli.train as cli_train
    from tinyprec.training import ProgressEvent

    buf = io.StringIO()
    monkeypatch.setattr(cli_train, "console", Console(file=buf, force_terminal=True, width=100))
    reporter = cli_train._Reporter(enabled=True)
    assert reporter.tty
    reporter(ProgressEvent("start", 0, 1, steps=2, record={"precision": "bf16", "device": "cpu", "world_size": 1,
                                                           "resumed_from_epoch": None, "train_samples": 4}))
    assert reporter.bar is not None
    reporter(ProgressEvent("step", 1, 1, 1, 2, 0.5))
    safety = {"precision": "bf16", "loss_scale_end": 1.0}
    reporter(ProgressEvent("epoch", 1, 1, 2, 2, 0.5, {"train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9,
                                                     "samples_per_s": 10.0, "skipped_steps": 0, "safety": safety}))
    reporter(ProgressEvent("end", 1, 1, record={}))
    assert reporter.bar is None
    text = buf.getvalue()
    assert "train: precision bf16" in text and "epoch 1/1 loss 0.5000" in text and "\x1b[" in text
