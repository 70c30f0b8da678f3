"""ds_cnn: the MLPerf Tiny keyword-spotting DS-CNN (input 49x10x1 MFCC, 12 classes).

Conv 10x4 stride 2 SAME (64) + BN + ReLU + Dropout(0.2), four depthwise-separable blocks
(depthwise 3x3 + BN + ReLU, pointwise 1x1 (64) + BN + ReLU), Dropout(0.4), average pool over the whole
25x5 map, flatten, dense. After BN folding: 22,604 parameters (the reference .tflite holds 22,606
constants: the same plus the 2-element reshape shape).
"""

from __future__ import annotations

from typing import Any

from tinyprec.zoo._layers import conv_bn_relu


def build(
    num_classes: int = 12,
    in_channels: int = 1,
    filters: int = 64,
    blocks: int = 4,
    input_hw: tuple[int, int] = (49, 10),
) -> Any:
    """Build the DS-CNN for inputs (N, in_channels, *input_hw).

    >>> import torch
    >>> build()(torch.zeros(2, 1, 49, 10)).shape
    torch.Size([2, 12])
    """
    from torch import nn

    hw = (int(input_hw[0]), int(input_hw[1]))
    layers, hw = conv_bn_relu(in_channels, filters, (10, 4), (2, 2), hw)
    layers.append(nn.Dropout(0.2))
    for _ in range(blocks):
        dw, hw = conv_bn_relu(filters, filters, (3, 3), (1, 1), hw, groups=filters)
        pw, hw = conv_bn_relu(filters, filters, (1, 1), (1, 1), hw)
        layers += dw + pw
    layers += [nn.Dropout(0.4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(filters, num_classes)]
    return nn.Sequential(*layers)
