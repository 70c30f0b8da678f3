"""Architectures users bring, built from issue 11's ops, through tinyprec.train / quantize (QAT) / export /
validate: TFLM == emulator and TFLM == the TFLM-exact program on 100% of outputs, TF Lite's reference
kernels == TFLM on the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class MobileNetV3Block(nn.Module):
    """Hardswish stem, depthwise conv + ReLU6, squeeze-excite written with view/expand_as, residual, LeakyReLU."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.se_reduce, self.se_expand = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.project = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.act = nn.LeakyReLU(0.1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.dw(s)
        w = y.mean((2, 3))
        w = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(w.view(w.shape[0], -1, 1, 1)))))
        y = y * w.expand_as(y)
        y = self.act(self.project(y) + s)
        y = torch.clamp(y - y.mean((2, 3), keepdim=True), -2.0, 3.0)  # sub + a clamp TFLite cannot fuse
        return self.head(y.abs().mean((2, 3)))


class PermutedTCN(nn.Module):
    """(N, T, F) sensor input: permute, dilated causal-ish Conv1d stack with a residual, strided slice."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(6, 12, 3, padding=2, dilation=2)
        self.c2 = nn.Conv1d(12, 12, 3, padding="same", dilation=4)
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.hardswish(self.c1(x.permute(0, 2, 1)))
        y = torch.maximum(self.c2(y), y)
        return self.head(y[:, :, ::2].mean(2))


def _data(shape: tuple[int, ...], n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape)))
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v3_block", "permuted_tcn"])
def test_user_architecture_runs_exact_through_the_api(tmp_path: Path, arch: str) -> None:
    import tinyprec
    from tinyprec.recipe import QuantConfig, TrainConfig, ValidateConfig

    torch.manual_seed(0)
    model, shape = (MobileNetV3Block(), (1, 8, 8)) if arch == "mobilenet_v3_block" else (PermutedTCN(), (24, 6))
    data = _data(shape)
    out = tmp_path / arch
    trained = tinyprec.train(model, data, config=TrainConfig(epochs=3, batch_size=32, precision="fp32"), out_dir=out)
    q = tinyprec.quantize(trained.model, data, out_dir=out,
                          config=QuantConfig(mode="qat", epochs=1, batch_size=32, autocast="fp32"))
    tinyprec.export(q, data, model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, data, model_fp32=trained.model, config=ValidateConfig(max_drop=100.0))
    agreement = result.report["agreement"]
    assert agreement["tflm_vs_emulator"]["identical_outputs"] == 100.0, agreement["tflm_vs_emulator"]
    assert agreement["tflm_vs_fake_quant_tflm"]["identical_outputs"] == 100.0, agreement["tflm_vs_fake_quant_tflm"]
    # TF Lite's reference kernels (validation's runner uses its optimized ones, which round some conv1d
    # differently, see docs/DESIGN.md) on random int8 inputs of the exported file.
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.runtimes.tflite import run_tflite
    from tinyprec.runtimes.tflm import run_tflm

    data = (out / "model" / "model_int8.tflite").read_bytes()
    graph = read_tflite(data)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    xq = np.random.default_rng(1).integers(-128, 128, (32, *shape)).astype(np.int8)
    np.testing.assert_array_equal(np.asarray(run_tflite(data, xq, kernels="reference")), np.asarray(run_tflm(data, xq)))
