"""PyTorch models whose int16 (a16w8) layers feed the data-movement ops TFLM runs on int16: STRIDED_SLICE
(x[:, i], slices), TRANSPOSE (permute), CONCATENATION (torch.stack), MAXIMUM / MINIMUM and SUB. The ops after an
a16w8 layer keep its int16 (zero point 0); the int8 head reads them through a QUANTIZE int16 -> int8.
TFLM == emulator == re-read emulator == tflm_exact on every output; ONNX Runtime within 1 LSB."""

from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402


class Movers(nn.Module):
    """(N, 4, 6) -> Conv1d (a16w8) -> select, permute, stack, max/min, sub -> int8 Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.conv2 = nn.Conv1d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, z = self.conv(x), self.conv2(x)                                  # (N, 6, 6) int16 each
        top = torch.maximum(y, z) - torch.minimum(y, z)                     # MAXIMUM, MINIMUM, SUB
        pair = torch.stack([y[:, 0], z[:, 5]], 1)                           # STRIDED_SLICE, stack: (N, 2, 6)
        moved = top.permute(0, 2, 1)                                        # TRANSPOSE
        return self.head(moved.mean(1) + top[:, :, 1:3].mean(2) + pair.mean(1))  # MEAN, ADD: int16 too


def _kinds(out: object) -> Counter:
    g = out.graph  # type: ignore[attr-defined]
    return Counter((op.type.value, g.tensors[op.outputs[0]].dtype.value) for op in g.ops)


def test_int16_data_movement_ops_from_pytorch_are_exact() -> None:
    torch.manual_seed(0)
    out = run_everywhere(Movers(), (4, 6), n=320, overrides=(("conv", "a16w8"), ("conv2", "a16w8")))
    assert_exact(out, tflite=False)  # TF Lite refuses QUANTIZE int8 -> int16 (test_emulator_lowbits.py)
    kinds = _kinds(out)
    for op in ("MAXIMUM", "MINIMUM", "SUB", "STRIDED_SLICE", "TRANSPOSE"):
        assert kinds[(op, "int16")] >= 1 and kinds[(op, "int8")] == 0, (op, kinds)
    assert kinds[("CONV_2D", "int16")] >= 2
    assert out.tflm.shape == (64, 3)
