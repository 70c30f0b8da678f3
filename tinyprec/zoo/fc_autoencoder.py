"""fc_autoencoder: the MLPerf Tiny anomaly-detection (ToyADMOS) dense autoencoder.

640 -> 128 x4 -> 8 -> 128 x4 -> 640; every hidden Dense is followed by BatchNorm and ReLU as in the
MLPerf Keras model; the output layer is linear (the reconstruction).
"""

from __future__ import annotations

from typing import Any


def build(input_dim: int = 640, hidden: int = 128, bottleneck: int = 8, depth: int = 4) -> Any:
    """Dense autoencoder; forward returns the reconstruction with the input's shape (N, input_dim).

    >>> import torch
    >>> build()(torch.zeros(2, 640)).shape
    torch.Size([2, 640])
    """
    from torch import nn

    widths = [hidden] * depth + [bottleneck] + [hidden] * depth
    layers: list[nn.Module] = []
    prev = input_dim
    for width in widths:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, input_dim))
    return nn.Sequential(*layers)
