"""Models without labels (autoencoders, MLPerf Tiny AD): reconstruction error per runner, its increase over
FP32 gated, and ROC AUC when anomaly flags are given (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyprec.validation.recon import reconstruction_check, reconstruction_summary


def test_summary_and_check_arithmetic() -> None:
    s = reconstruction_summary({"fp32": 0.20, "tflm": 0.25, "emulator": 0.25, "onnx_int8": None})
    assert s["reference"] == "fp32" and s["increase_pct"]["tflm"] == pytest.approx(25.0)
    assert s["increase_pct"]["onnx_int8"] is None
    name, ok, msg, value, limit = reconstruction_check(s, 10.0)  # type: ignore[misc]
    assert name == "reconstruction_error" and not ok and value == pytest.approx(25.0) and limit == 10.0
    assert "exceeds max_recon_increase 10.00% by 15.00 points" in msg
    assert reconstruction_check(s, 30.0)[1]  # type: ignore[index]
    assert reconstruction_check(reconstruction_summary({"tflm": 0.3}), 10.0) is None  # nothing to compare with


def _data(n: int, rng: np.random.Generator, anomalous: bool = False) -> np.ndarray:
    """Smooth 32-sample curves (a low-dimensional family an autoencoder learns); anomalies are noisy."""
    t = np.linspace(0, 1, 32, dtype=np.float32)
    a, f = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(1, 3, (n, 1))
    x = a * np.sin(2 * np.pi * f * t)
    if anomalous:
        x = x + rng.normal(0, 0.8, x.shape)
    return x.astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [False, True])
def test_autoencoder_is_gated_on_reconstruction(tmp_path: Path, flags: bool) -> None:
    torch = pytest.importorskip("torch")
    import tinyprec
    from tinyprec.data import Dataset
    from tinyprec.recipe import QuantConfig, TrainConfig, ValidateConfig
    from tinyprec.zoo.fc_autoencoder import build

    rng = np.random.default_rng(0)
    x = _data(400, rng)
    if flags:
        xt = np.concatenate([_data(40, rng), _data(40, rng, anomalous=True)])
        data = Dataset.from_arrays(x, None, x_test=xt, y_test=np.repeat([0, 1], 40), task="autoencoder")
    else:
        data = (x, None)  # the Python API: no labels means an autoencoder
    torch.manual_seed(0)
    model = build(input_dim=32, hidden=32, bottleneck=4, depth=1)
    out = tmp_path / "ae"
    trained = tinyprec.train(model, data, config=TrainConfig(epochs=30, batch_size=32, lr=3e-3, precision="fp32"),
                             out_dir=out)
    q = tinyprec.quantize(trained.model, data, config=QuantConfig(mode="ptq", autocast="fp32"), out_dir=out)
    tinyprec.export(q, data, model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, data, model_fp32=trained.model, config=ValidateConfig(max_recon_increase=50.0, max_samples=80))
    report = result.report
    recon = report["reconstruction"]
    mse = recon["mse"]
    assert mse["fp32"] is not None and mse["tflm"] is not None and mse["emulator"] == mse["tflm"]
    check = next(c for c in result.checks if c.name == "reconstruction_error")
    assert check.value == pytest.approx(100.0 * (mse["tflm"] - mse["fp32"]) / mse["fp32"])
    assert check.passed == (check.value <= 50.0)
    assert abs(check.value) < 50.0  # int8 adds little error to a trained autoencoder
    if flags:
        assert report["accuracy"]["fp32"] > 80.0 and report["accuracy"]["tflm"] > 80.0  # AUC x100
        assert any(c.name == "accuracy_drop" for c in result.checks)
    else:
        assert report["accuracy"]["tflm"] is None
        assert not any(c.name == "accuracy_drop" for c in result.checks)
        strict = tinyprec.validate(out, data, model_fp32=trained.model,
                                   config=ValidateConfig(max_recon_increase=check.value - 1.0, max_samples=80))
        assert not strict.passed and "reconstruction MSE" in strict.checks[0].message
