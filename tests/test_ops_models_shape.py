"""Issue 11's acceptance architecture for the shape ops: a small U-Net-like model whose decoder uses
ConvTranspose2d and Upsample, through tinyprec.train / quantize (QAT) / export / validate, with TFLM ==
emulator and TFLM == the TFLM-exact program on 100% of outputs, and TF Lite's reference kernels == TFLM on
the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyUNet(nn.Module):
    """Encoder (two stride-2 convs), decoder: ConvTranspose2d + BatchNorm (folded, QAT-simulated) + skip
    concatenation, bilinear Upsample + skip add, then a classification head (the API's validated task)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(16, 12, 2, stride=2, bias=False), nn.BatchNorm2d(12), nn.ReLU())
        self.d2 = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.d1 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.e1(x)
        s2 = self.e2(s1)
        y = self.up2(self.bottom(s2))
        y = self.d2(torch.cat([y, s2], dim=1))
        y = torch.relu(self.d1(self.up1(y)) + s1)
        return self.head(y.mean((2, 3)))


def _data(n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    x[:, :, :4, :4] += (y == 1)[:, None, None, None]
    x[:, :, 4:, 4:] += (y == 2)[:, None, None, None]
    x[:, :, :, :] -= 0.5 * (y == 3)[:, None, None, None]
    return x, y


@pytest.mark.slow
def test_unet_decoder_runs_exact_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = _data()
    out = tmp_path / "unet"
    blob, graph = train_to_tflite(TinyUNet(), data, out)
    ops = [op.type.value for op in graph.ops]
    assert "TRANSPOSE_CONV" in ops and "RESIZE_BILINEAR" in ops and "MUL" not in ops, ops  # BN folded
    assert_tflite_reference_matches_tflm(blob, graph)
