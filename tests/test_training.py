"""Stage 1: precision policy, FP32 master weights, loss scaling, determinism, resume, safe checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tinyprec.data import Dataset
from tinyprec.errors import ArtifactError, ModelFormatError, TinyprecError
from tinyprec.recipe import TrainConfig
from tinyprec.training import (
    ProgressEvent,
    autocast_context,
    cpu_has_native_bf16,
    cpu_flags_have_native_bf16,
    load_checkpoint,
    make_grad_scaler,
    seed_everything,
    select_precision,
    train_model,
    train_step,
)
from tinyprec.training.safety import SafetyMeter
from tinyprec.zoo import build_model

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains

FAST = TrainConfig(epochs=2, batch_size=16, lr=3e-3, precision="fp32")


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(96) % 4
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    return Dataset.from_arrays(x, y, name="tiny", seed=0)


def _model(seed: int = 0, dropout: float = 0.3) -> nn.Module:
    seed_everything(seed)
    return build_model("digits_cnn", {"num_classes": 4, "width": 4, "dropout": dropout})


def test_select_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    # Both branches of the CPU detection, whatever this machine has.
    monkeypatch.setenv("TINYPREC_CPU_BF16", "1")
    assert cpu_has_native_bf16() and select_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("TINYPREC_CPU_BF16", "0")
    assert not cpu_has_native_bf16() and select_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv("TINYPREC_CPU_BF16", "auto")
    assert cpu_has_native_bf16() == cpu_flags_have_native_bf16()
    monkeypatch.setenv("TINYPREC_CPU_BF16", "yes")
    with pytest.raises(TinyprecError, match="TINYPREC_CPU_BF16='yes': use 1"):
        select_precision("auto", "cpu")
    monkeypatch.delenv("TINYPREC_CPU_BF16")
    for forced in ("bf16", "fp16", "fp32"):
        assert select_precision(forced, "cpu") == forced
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert select_precision("auto", torch.device("cuda", 0)) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert select_precision("auto", "cuda") == "fp16"
    with pytest.raises(TinyprecError, match="'fp8' is not one of"):
        select_precision("fp8", "cpu")


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_low_precision_with_fp32_master_weights(precision: str, dtype: torch.dtype) -> None:
    model = _model(dropout=0.0)
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = make_grad_scaler(precision, "cpu", init_scale=256.0)
    assert scaler.is_enabled() == (precision == "fp16")
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    before = [p.detach().clone() for p in model.parameters()]
    out = train_step(model, x, y, lambda o, xb, yb: nn.functional.cross_entropy(o.float(), yb), opt, scaler,
                     precision, "cpu")
    assert seen == [dtype]  # the conv really ran in low precision
    assert not out.skipped
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        assert p.dtype == b.dtype
    states = [s for s in opt.state.values()]
    assert states and all(v.dtype == torch.float32 for s in states for k, v in s.items() if k != "step")
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with autocast_context("fp32", "cpu"):
        assert model(x).dtype == torch.float32


def test_forced_overflow_skips_step_and_backs_off_scale() -> None:
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = make_grad_scaler("fp16", "cpu", init_scale=1024.0)
    meter = SafetyMeter("fp16", 1024.0)
    loss_fn = lambda o, xb, yb: nn.functional.cross_entropy(o.float(), yb)  # noqa: E731
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    handle = model.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = [p.detach().clone() for p in model.parameters()]
    out = train_step(model, x, y, loss_fn, opt, scaler, "fp16", "cpu", meter=meter, global_step=7, observe=True)
    handle.remove()
    assert out.skipped and out.scale == 512.0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # the step was skipped
    assert not opt.state  # and the optimizer never advanced
    assert meter.overflow_steps == 1 and meter.scale_history == [(7, 512.0)]
    out = train_step(model, x, y, loss_fn, opt, scaler, "fp16", "cpu", meter=meter, global_step=8, observe=True)
    assert not out.skipped and out.scale == 512.0
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    rec = meter.record(512.0)
    assert rec["overflow_steps"] == 1 and rec["loss_scale_history"] == [[7, 512.0]]


def test_underflow_fractions_measure_fp16_flush() -> None:
    """Gradients of 1e-8 flush to zero in fp16 unless scaled; 1e-3 never do."""
    p = nn.Parameter(torch.zeros(4))
    scale = 1024.0
    p.grad = torch.tensor([1e-8, 1e-8, 1e-3, 0.0]) * scale
    meter = SafetyMeter("fp16", scale)
    meter.observe_gradients([p], scale)
    rec = meter.record(scale)
    assert rec["grad_underflow_fp16_unscaled"] == pytest.approx(2 / 3)
    assert rec["grad_underflow_fp16_scaled"] == 0.0


def test_fp16_run_records_safety_per_epoch(tiny: Dataset, tmp_path: Path) -> None:
    model = _model()
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 3 else grad

    model[-1].weight.register_hook(poison)
    cfg = dataclasses.replace(FAST, epochs=1, precision="fp16", init_scale=4096.0)
    result = train_model(model, tiny, cfg, tmp_path, seed=0)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["precision"] == "fp16" and metrics["skipped_steps"] == 1 == result.skipped_steps
    safety = metrics["epochs"][0]["safety"]
    assert safety["overflow_steps"] == 1 and safety["loss_scale_history"][0] == [2, 2048.0]
    assert 0.0 <= safety["grad_underflow_fp16_scaled"] <= safety["grad_underflow_fp16_unscaled"] <= 1.0
    assert "loss scaling" in safety["reason"]
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_two_runs_one_seed_identical(tiny: Dataset, tmp_path: Path) -> None:
    a = train_model(_model(), tiny, FAST, tmp_path / "a", seed=1).model.state_dict()
    b = train_model(_model(), tiny, FAST, tmp_path / "b", seed=1).model.state_dict()
    c = train_model(_model(), tiny, FAST, tmp_path / "c", seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_resume_continues_exactly(tiny: Dataset, tmp_path: Path) -> None:
    full = train_model(_model(), tiny, FAST, tmp_path / "full", seed=0)
    def interrupt(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            raise KeyboardInterrupt  # after epoch 1's checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        train_model(_model(), tiny, FAST, tmp_path / "part", seed=0, progress=interrupt)
    assert load_checkpoint(tmp_path / "part" / "train" / "checkpoint.pt")["epoch"] == 1
    resumed = train_model(_model(seed=5), tiny, FAST, tmp_path / "part", seed=0, resume=True)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 1
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads(resumed.metrics_path.read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and metrics["complete"]
    with pytest.raises(ArtifactError, match="made with lr = 0.003, now 0.1"):
        train_model(_model(), tiny, dataclasses.replace(FAST, lr=0.1), tmp_path / "part", seed=0, resume=True)


def test_checkpoint_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "model": Evil()}, path)
    with pytest.raises(ModelFormatError, match="not a loadable tinyprec checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFormatError):
        load_checkpoint(path)


def test_metrics_and_files(tiny: Dataset, tmp_path: Path) -> None:
    result = train_model(_model(), tiny, FAST, tmp_path, seed=0)
    assert result.checkpoint_path == tmp_path / "train" / "checkpoint.pt"
    state = torch.load(result.checkpoint_path, weights_only=True)
    assert state["epoch"] == 2
    weights = torch.load(result.weights_path, weights_only=True)
    model = _model()
    model.load_state_dict(weights)
    m = json.loads(result.metrics_path.read_text())
    for key in ("precision", "device", "seed", "world_size", "preprocess", "test_accuracy", "skipped_steps"):
        assert key in m
    for epoch in m["epochs"]:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "samples_per_s", "lr", "safety"):
            assert key in epoch
    assert m["preprocess"] == tiny.preprocess.to_dict()
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["weights_fp32"]["path"] == "train/model_fp32.pt"


def test_bring_your_own_model_and_autoencoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 6)).astype(np.float32)
    # two features and two classes: the output has the input's shape, and it is still a classifier
    own = Dataset.from_arrays(x[:, :2], (x[:, 0] > 0).astype(np.int64), name="own", seed=0)
    seed_everything(0)
    mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    res = train_model(mlp, own, dataclasses.replace(FAST, epochs=15), tmp_path / "own", seed=0)
    assert res.test_accuracy is not None and res.test_accuracy >= 0.75
    assert json.loads(res.metrics_path.read_text())["epochs"][-1]["train_accuracy"] >= 0.75
    ae = Dataset.from_arrays(x, None, task="autoencoder", seed=0)
    seed_everything(0)
    res = train_model(build_model("fc_autoencoder", {"input_dim": 6, "hidden": 8, "bottleneck": 3, "depth": 1}), ae,
                      FAST, tmp_path / "ae", seed=0)
    assert res.test_accuracy is None and np.isfinite(res.test_loss)


def test_no_validation_split_gives_strict_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ds = Dataset.from_arrays(rng.standard_normal((40, 3)).astype(np.float32), np.arange(40) % 2, val_fraction=0.0)
    assert len(ds.val) == 0
    seed_everything(0)
    res = train_model(nn.Linear(3, 2), ds, dataclasses.replace(FAST, epochs=1), tmp_path, seed=0)
    assert res.val_accuracy is None

    def reject(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    metrics = json.loads(res.metrics_path.read_text(), parse_constant=reject)
    assert metrics["epochs"][0]["val_loss"] is None and metrics["val_accuracy"] is None
