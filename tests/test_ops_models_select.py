"""Issue 11's acceptance architecture for indexing and stacking: a multi-branch motion-sensor model (one conv
branch per accelerometer axis, read with ``x.unbind(1)``, per-axis features stacked with ``torch.stack``, a
horizontal-plane branch picked with ``x[:, [0, 1]]`` and an int index ``z[:, :, 0]``) through tinyprec.train /
quantize (QAT) / export / validate, with TFLM == emulator and TFLM == the TFLM-exact program on 100% of
outputs, and TF Lite's reference kernels == TFLM on the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite

torch = pytest.importorskip("torch")
nn = torch.nn


class AxisNet(nn.Module):
    """(N, 3, 32) accelerometer windows -> 4 classes, the way such models are written."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.axes = nn.ModuleList(nn.Sequential(nn.Conv1d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2))
                                  for _ in range(3))
        self.fuse = nn.Conv1d(6, 8, 3)  # across the three stacked axes
        self.plane = nn.Conv1d(2, 6, 3, padding=1)
        self.head = nn.Linear(8 + 6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(a.unsqueeze(1)).mean(2) for branch, a in zip(self.axes, x.unbind(1))]  # 3 x (N, 6)
        z = torch.relu(self.fuse(torch.stack(feats, dim=2)))  # (N, 6, 3) -> (N, 8, 1)
        p = torch.relu(self.plane(x[:, [0, 1]])).amax(2)  # the horizontal plane: (N, 6)
        return self.head(torch.cat([z[:, :, 0], p], dim=1))


def _data(n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Class k < 3: a burst on axis k; class 3: none."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(scale=0.5, size=(n, 3, 32)).astype(np.float32)
    t = np.arange(32, dtype=np.float32)
    for k in range(3):
        x[y == k, k] += 2.0 * np.sin(t / 2.0) * (np.abs(t - 16) < 8)
    return x, y


@pytest.mark.slow
def test_axis_model_with_unbind_stack_and_index_runs_exact_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(0)
    blob, graph = train_to_tflite(AxisNet(), _data(), tmp_path / "axis")
    ops = [op.type.value for op in graph.ops]
    assert ops.count("CONCATENATION") == 2 and ops.count("STRIDED_SLICE") == 4, ops  # unbind 3, [0, 1] 1
    assert_tflite_reference_matches_tflm(blob, graph)
