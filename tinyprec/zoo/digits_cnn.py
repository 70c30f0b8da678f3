"""digits_cnn: a small 2-D CNN for scikit-learn's 8x8 handwritten digits."""

from __future__ import annotations

from typing import Any


def build(num_classes: int = 10, in_channels: int = 1, width: int = 16, dropout: float = 0.0) -> Any:
    """conv3x3(w)+BN+ReLU, conv3x3(2w)+BN+ReLU, maxpool2, conv3x3(2w)+BN+ReLU, global avg pool, linear.

    >>> import torch
    >>> build()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
