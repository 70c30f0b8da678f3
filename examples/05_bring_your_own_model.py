"""A user-defined nn.Module on plain numpy arrays through all four stages, with the Python API alone.

    python examples/05_bring_your_own_model.py
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

import tinyprec
from _common import QUICK, out_dir
from tinyprec.recipe import QuantConfig, TrainConfig


class TinyNet(torch.nn.Module):
    """Depthwise-separable CNN for 8x8 images, the kind of block MCU models are made of."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.dw = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16),
                                      torch.nn.ReLU6())
        self.pw = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def main() -> None:
    digits = load_digits()
    x, y = digits.images[:, None].astype(np.float32), digits.target  # raw pixels 0..16, NCHW
    out = out_dir("bring_your_own")
    torch.manual_seed(0)
    trained = tinyprec.train(TinyNet(), (x, y), config=TrainConfig(epochs=4 if QUICK else 25), out_dir=out)
    quantized = tinyprec.quantize(trained.model, (x, y), config=QuantConfig(epochs=1 if QUICK else 3), out_dir=out)
    exported = tinyprec.export(quantized, (x, y), model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, (x, y), model_fp32=trained.model)
    acc = result.report["accuracy"]
    print(f"FP32 {acc['fp32']:.2f}%  fake-quant {acc['fake_quant']:.2f}%  TFLM {acc['tflm']:.2f}%  "
          f"emulator {acc['emulator']:.2f}%")
    print(f".tflite {exported.tflite_bytes:,} B, arena {exported.arena_bytes:,} B, "
          f"gate {'passed' if result.report['gate']['passed'] else 'FAILED'}")


if __name__ == "__main__":
    main()
