"""mnist1d_cnn: a small 1-D CNN for MNIST-1D (input 1x40, 10 classes); exercises the conv1d path."""

from __future__ import annotations

from typing import Any


def build(num_classes: int = 10, in_channels: int = 1, channels: int = 32, length: int = 40, dropout: float = 0.1) -> Any:
    """conv5(c)+BN+ReLU, conv5(c)+BN+ReLU, maxpool2, conv3(2c)+BN+ReLU, maxpool2, conv3(2c)+BN+ReLU,
    flatten, linear (the flatten keeps position, which MNIST-1D's digits need).

    >>> import torch
    >>> build()(torch.zeros(2, 1, 40)).shape
    torch.Size([2, 10])
    """
    from torch import nn

    c = channels
    return nn.Sequential(
        nn.Conv1d(in_channels, c, 5, padding=2, bias=False),
        nn.BatchNorm1d(c),
        nn.ReLU(),
        nn.Conv1d(c, c, 5, padding=2, bias=False),
        nn.BatchNorm1d(c),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(c, 2 * c, 3, padding=1, bias=False),
        nn.BatchNorm1d(2 * c),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(2 * c, 2 * c, 3, padding=1, bias=False),
        nn.BatchNorm1d(2 * c),
        nn.ReLU(),
        nn.Dropout(dropout),  # before the flatten, so the flatten feeds the Linear directly (NHWC lowering)
        nn.Flatten(),
        nn.Linear(2 * c * (length // 4), num_classes),
    )
