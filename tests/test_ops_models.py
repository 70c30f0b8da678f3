"""Architectures users bring, built from issue 11's ops, through tinyprec.train / quantize (QAT) / export /
validate: TFLM == emulator and TFLM == the TFLM-exact program on 100% of outputs, TF Lite's reference
kernels == TFLM on the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite

torch = pytest.importorskip("torch")
nn = torch.nn


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 linear projection + BN, and
    the residual when the stride is 1 and the width is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Blocks(nn.Module):
    """A stem conv, two inverted residual blocks (one with the residual, one strided), global pool, classifier."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2))
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


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
@pytest.mark.parametrize("arch", ["mobilenet_v2_blocks", "mobilenet_v3_block", "permuted_tcn"])
def test_user_architecture_runs_exact_through_the_api(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    model, shape = {"mobilenet_v2_blocks": (MobileNetV2Blocks(), (1, 8, 8)),
                    "mobilenet_v3_block": (MobileNetV3Block(), (1, 8, 8)),
                    "permuted_tcn": (PermutedTCN(), (24, 6))}[arch]
    data = _data(shape)
    out = tmp_path / arch
    blob, graph = train_to_tflite(model, data, out)
    if arch == "mobilenet_v2_blocks":  # the residual and the depthwise convs survive as TFLM ops
        kinds = [op.type.value for op in graph.ops]
        assert kinds.count("DEPTHWISE_CONV_2D") == 2 and kinds.count("ADD") == 1, kinds
    assert_tflite_reference_matches_tflm(blob, graph)
