"""Architectures built from issue 11's activation / normalisation ops (ops-act), through tinyprec.train /
quantize (QAT) / export / validate: TFLM == emulator and TFLM == the TFLM-exact program on 100% of outputs,
TF Lite's reference kernels == TFLM on the exported file (where the file has no ELU, which TF Lite's
reference resolver lacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite

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
    torch.manual_seed(0)
    model = InputBNCNN() if arch == "input_bn_cnn" else SwishSEBlock()
    data = _data((1, 8, 8))
    out = tmp_path / arch
    blob, graph = train_to_tflite(model, data, out)
    types = [op.type.value for op in graph.ops]
    expected = ({"DEPTHWISE_CONV_2D", "ELU", "MAX_POOL_2D", "MUL"} if arch == "input_bn_cnn"
                else {"LOGISTIC", "MUL", "ADD", "MEAN"})
    assert expected <= set(types), types
    if "ELU" in types:
        return  # TF Lite's reference resolver has no ELU (its builtin ELU == TFLM: test_ops_act_micro.py)
    assert_tflite_reference_matches_tflm(blob, graph)
