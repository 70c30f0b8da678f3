"""Architectures built from issue 11's activation / normalisation ops (ops-act), through tinyprec.train /
quantize (QAT) / export / validate: TFLM == emulator and TFLM == the TFLM-exact program on 100% of outputs,
TF Lite's reference kernels == TFLM on the exported file (where the file has no ELU, which TF Lite's
reference resolver lacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class InputBNCNN(nn.Module):
    """Raw features normalised by a standalone BatchNorm (no conv before it), a residual add followed by a
    BatchNorm, ELU, x / 2, and global max pooling into the classifier."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1)
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.post = nn.BatchNorm2d(8)
        self.act = nn.ELU()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(self.norm(x)))
        y = self.act(self.post(self.c2(y) + y)) / 2.0
        return self.head(self.pool(y).flatten(1))


class SwishSEBlock(nn.Module):
    """MobileNetV3-style block: SiLU stem, depthwise conv + GELU, squeeze-excite with a Hardsigmoid gate
    written with view/expand_as, residual, a channel mean into a 1x1 conv, global average into the head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.GELU())
        self.se_reduce, self.se_expand = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.mix = nn.Conv2d(1, 8, 1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.dw(s)
        w = y.mean((2, 3))
        w = self.gate(self.se_expand(F.silu(self.se_reduce(w.view(w.shape[0], -1, 1, 1)))))
        y = y * w.expand_as(y) + s
        y = y + self.mix(y.mean(1, keepdim=True))
        return self.head(y.mean((2, 3)))


def _data(shape: tuple[int, ...], n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, *shape)).astype(np.float32) * 2.0 + 1.0 + y.reshape(-1, *([1] * len(shape)))
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["input_bn_cnn", "swish_se_block"])
def test_act_architecture_runs_exact_through_the_api(tmp_path: Path, arch: str) -> None:
    import tinyprec
    from tinyprec.recipe import QuantConfig, TrainConfig, ValidateConfig

    torch.manual_seed(0)
    model = InputBNCNN() if arch == "input_bn_cnn" else SwishSEBlock()
    data = _data((1, 8, 8))
    out = tmp_path / arch
    trained = tinyprec.train(model, data, config=TrainConfig(epochs=3, batch_size=32, precision="fp32"), out_dir=out)
    q = tinyprec.quantize(trained.model, data, out_dir=out,
                          config=QuantConfig(mode="qat", epochs=1, batch_size=32, autocast="fp32"))
    tinyprec.export(q, data, model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, data, model_fp32=trained.model, config=ValidateConfig(max_drop=100.0))
    agreement = result.report["agreement"]
    assert agreement["tflm_vs_emulator"]["identical_outputs"] == 100.0, agreement["tflm_vs_emulator"]
    assert agreement["tflm_vs_fake_quant_tflm"]["identical_outputs"] == 100.0, agreement["tflm_vs_fake_quant_tflm"]
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.runtimes.tflite import run_tflite
    from tinyprec.runtimes.tflm import run_tflm

    blob = (out / "model" / "model_int8.tflite").read_bytes()
    graph = read_tflite(blob)
    types = [op.type.value for op in graph.ops]
    expected = ({"DEPTHWISE_CONV_2D", "ELU", "MAX_POOL_2D", "MUL"} if arch == "input_bn_cnn"
                else {"LOGISTIC", "MUL", "ADD", "MEAN"})
    assert expected <= set(types), types
    if "ELU" in types:
        return  # TF Lite's reference resolver has no ELU (its builtin ELU == TFLM: test_ops_act_micro.py)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    xq = np.random.default_rng(1).integers(-128, 128, (32, *shape)).astype(np.int8)
    np.testing.assert_array_equal(np.asarray(run_tflite(blob, xq, kernels="reference")), np.asarray(run_tflm(blob, xq)))
