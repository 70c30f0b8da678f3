"""Stage 2 training side: our simulated conv-bn folding equals torchao's, QAT under bf16 autocast keeps
FP32 master weights/scales and accuracy, BN and observer freezing, and the PTQ range setters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import tinyprec.quant._quiet_torchao  # noqa: F401
from tinyprec.data import load_dataset
from tinyprec.recipe import DataConfig, QuantConfig
from tinyprec.zoo import build_model

CFG = QuantConfig(mode="qat", epochs=1, batch_size=32, calibration_batches=4, lr=1e-4, autocast="fp32")


def _prepare_both(model, example):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from tinyprec.quant.capture import export_for_quant, with_biases
    from tinyprec.quant.quantizer import TFLiteInt8Quantizer
    from tinyprec.quant.stage import _prepare_qat

    # with_biases deep-copies: the two programs must not share BN buffers
    ours = _prepare_qat(export_for_quant(with_biases(model), example, train=True), TFLiteInt8Quantizer(qat=True))
    theirs = prepare_qat_pt2e(export_for_quant(with_biases(model), example, train=True),
                              TFLiteInt8Quantizer(qat=True))
    return ours, theirs


@pytest.mark.slow
def test_simulated_conv_bn_matches_torchao():
    """Same outputs, same BN statistics updates, same fake-quant scales as torchao's prepare_qat_pt2e."""
    from tinyprec.quant.bnfold import set_train_mode

    torch.manual_seed(0)
    model = build_model("mnist1d_cnn", {"channels": 4, "dropout": 0.0})  # conv1d + BatchNorm1d
    x = torch.randn(8, 1, 40)
    ours, theirs = _prepare_both(model, x)
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    scales = sorted(tuple(b.tolist()) for n, b in ours.named_buffers() if n.endswith(".scale"))
    assert scales == sorted(tuple(b.tolist()) for n, b in theirs.named_buffers() if n.endswith(".scale"))
    stats = {n: b for n, b in theirs.named_buffers() if n.endswith(("running_mean", "running_var"))}
    assert stats and all(torch.equal(b, stats[n]) for n, b in ours.named_buffers() if n in stats)
    for gm in (ours, theirs):
        set_train_mode(gm, bn_train=False, dropout_train=False)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"), seed=0)


@pytest.fixture(scope="module")
def trained_digits(digits):
    """A small digits_cnn trained in FP32 for a few epochs (the stage-1 stand-in)."""
    torch.manual_seed(0)
    model = build_model("digits_cnn", {"width": 4})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits.inputs("train")), torch.from_numpy(digits.train.y)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_qat_under_bf16_autocast_keeps_fp32_and_accuracy(trained_digits, digits):
    from torchao.quantization.pt2e import FakeQuantizeBase

    from tinyprec.quant.capture import example_like
    from tinyprec.quant.loops import evaluate, run_qat
    from tinyprec.quant.observers import Float32FakeQuantize, Float32FixedQParamsFakeQuantize
    from tinyprec.quant.stage import _convert, _prepare

    x_test, y_test = digits.inputs("test"), digits.test.y
    fp32 = evaluate(trained_digits, x_test, y_test, task="classification")
    cfg = dataclasses.replace(CFG, autocast="bf16", output_softmax=False)
    prepared = _prepare(trained_digits.train(), example_like(digits.input_shape), qat=True, cfg=cfg)
    fqs = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]
    assert fqs and all(isinstance(m, (Float32FakeQuantize, Float32FixedQParamsFakeQuantize)) for m in fqs)
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.add(args[0].dtype)) for m in fqs]
    run_qat(prepared, digits.inputs("train")[:320], digits.train.y[:320], task="classification", epochs=1,
            lr=1e-4, batch_size=32, freeze_bn_epoch=1, freeze_observer_epoch=1, precision="bf16", seed=0)
    for h in hooks:
        h.remove()
    assert torch.bfloat16 in seen  # autocast really ran: activations reached the fake quants in bf16
    assert all(p.dtype == torch.float32 for p in prepared.parameters())
    for m in fqs:
        assert m.scale.dtype == torch.float32
        obs = m.activation_post_process
        assert all(b.dtype in (torch.float32, torch.int32, torch.int64) for b in obs.buffers())
    program = _convert(prepared, qat=True)
    qat = evaluate(program, x_test, y_test, task="classification")
    assert qat >= fp32 - 1.0, (fp32, qat)


def test_float32_fake_quant_is_on_the_int8_grid_under_bf16():
    """Our fake quant under bf16 autocast gives exactly the float32 fake-quant of the bf16 activations."""
    from torchao.quantization.pt2e import FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver

    from tinyprec.quant.observers import Float32FakeQuantize

    kwargs = dict(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.int8)
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16)
    fused = FusedMovingAvgObsFakeQuantize(**kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="BFloat16"):
        fused(lin(x))  # the upstream failure this class exists for
    ours = Float32FakeQuantize(**kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        act = lin(x)
        out = ours(act)
    assert act.dtype == torch.bfloat16 and out.dtype == torch.float32
    scale, zp = float(ours.scale), int(ours.zero_point)
    expected = torch.fake_quantize_per_tensor_affine(act.float(), scale, zp, -128, 127)
    assert torch.equal(out, expected)
    q = torch.round(out / scale) + zp
    torch.testing.assert_close(out, (q - zp) * scale, rtol=0, atol=0)


def test_freezing_bn_and_observers(digits):
    from tinyprec.quant.capture import example_like
    from tinyprec.quant.loops import run_qat
    from tinyprec.quant.stage import _prepare

    torch.manual_seed(0)
    model = build_model("digits_cnn", {"width": 4}).train()
    prepared = _prepare(model, example_like(digits.input_shape), qat=True, cfg=CFG)
    x, y = digits.inputs("train")[:64], digits.train.y[:64]
    run_qat(prepared, x, y, task="classification", epochs=1, lr=1e-3, batch_size=16, freeze_bn_epoch=5,
            freeze_observer_epoch=5, precision="fp32", seed=0)
    before = {k: v.clone() for k, v in prepared.named_buffers() if k.endswith(("running_mean", "scale"))}
    log = run_qat(prepared, x, y, task="classification", epochs=1, lr=1e-3, batch_size=16, freeze_bn_epoch=0,
                  freeze_observer_epoch=0, precision="fp32", seed=1)
    assert log.bn_frozen_at == 0 and log.observers_frozen_at == 0 and log.steps == 4
    after = dict(prepared.named_buffers())
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    weights = [p for n, p in prepared.named_parameters() if n.endswith("weight")]
    assert weights  # and the weights did train: the frozen run still took optimizer steps
    assert [bool(n.args[5]) for n in prepared.graph.nodes if str(n.target) == "aten.batch_norm.default"] == \
        [False] * 3


def _observe(cls, values: torch.Tensor, **kwargs):
    obs = cls(dtype=torch.int8, quant_min=-128, quant_max=127, **kwargs)
    for chunk in values.split(1000):
        obs(chunk)
    scale, zp = obs.calculate_qparams()
    lo = (-128 - int(zp)) * float(scale)
    hi = (127 - int(zp)) * float(scale)
    return lo, hi


def _fq_mse(values: torch.Tensor, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    zp = int(-128 - round(lo / scale))
    return float(torch.mean((torch.fake_quantize_per_tensor_affine(values, scale, zp, -128, 127) - values) ** 2))


def test_ptq_range_setters_clip_heavy_tails():
    from torchao.quantization.pt2e import MinMaxObserver

    from tinyprec.quant.observers import MSEObserver, PercentileObserver

    torch.manual_seed(0)
    values = torch.distributions.StudentT(2.0).sample((20000,))  # heavy tails: clipping pays off
    mm_lo, mm_hi = _observe(MinMaxObserver, values)
    p_lo, p_hi = _observe(PercentileObserver, values, percentile=99.9)
    e_lo, e_hi = _observe(MSEObserver, values)
    assert mm_lo == pytest.approx(float(values.min()), rel=0.02) and mm_hi == pytest.approx(float(values.max()), rel=0.02)
    exact = np.quantile(values.numpy().astype(np.float64), [0.001, 0.999])
    assert p_lo == pytest.approx(exact[0], rel=0.05) and p_hi == pytest.approx(exact[1], rel=0.05)
    assert e_hi < mm_hi and e_lo > mm_lo
    # an independent brute-force search over clipping ratios finds no range with a smaller error
    lo0, hi0 = float(values.min()), float(values.max())
    brute = min(_fq_mse(values, lo0 * r, hi0 * r) for r in np.geomspace(1.0, 1e-3, 400))
    assert _fq_mse(values, e_lo, e_hi) <= brute * 1.01
    assert _fq_mse(values, e_lo, e_hi) < _fq_mse(values, mm_lo, mm_hi)
    assert _fq_mse(values, e_lo, e_hi) < _fq_mse(values, p_lo, p_hi)


@pytest.mark.parametrize("calibration", ["minmax", "moving_average", "percentile", "mse"])
def test_ptq_every_calibration_converts(trained_digits, digits, calibration):
    from tinyprec.quant.loops import evaluate
    from tinyprec.quant.stage import ptq

    cfg = dataclasses.replace(CFG, mode="ptq", calibration=calibration, calibration_batches=2)
    program = ptq(trained_digits, digits, cfg)
    fp32 = evaluate(trained_digits, digits.inputs("test"), digits.test.y, task="classification")
    acc = evaluate(program, digits.inputs("test"), digits.test.y, task="classification")
    assert acc >= fp32 - 5.0, (calibration, fp32, acc)  # a small, briefly trained model; 64 calibration samples


def test_qat_that_loses_to_ptq_on_validation_keeps_ptq(trained_digits, digits, tmp_path):
    """PTQ is the baseline: a QAT run that does worse on the validation split does not replace it."""
    import json

    from tinyprec.quant import quantize_model

    from tinyprec.data import Split

    small = dataclasses.replace(digits, train=Split(digits.train.x[:512], digits.train.y[:512]))
    cfg = dataclasses.replace(CFG, lr=0.05, batch_size=64, freeze_bn_epoch=5, freeze_observer_epoch=5)
    result = quantize_model(trained_digits, small, cfg, tmp_path, seed=0)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["val_qat"] < metrics["val_ptq"], metrics  # lr 0.05 wrecks the fine-tuning
    assert result.selected == "ptq" and metrics["selected"] == "ptq" and metrics["mode"] == "qat"
    assert result.fake_quant_accuracy == result.ptq_accuracy == metrics["fake_quant"]
    assert len(metrics["qat_val_scores"]) == 1 and metrics["qat_kept_epoch"] == 0
