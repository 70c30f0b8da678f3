"""mobilenet_v1: the MLPerf Tiny visual-wake-words MobileNetV1 (width 0.25, 96x96x3, 2 classes).

Conv3x3 stride 2 then 13 depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU),
average pool over the whole map, flatten, dense. With alpha 0.25 the channels are
8, 16, 32, 32, 64, 64, 128 x6, 256, 256; after BN folding 210,850 parameters.
"""

from __future__ import annotations

from typing import Any

from tinyprec.zoo._layers import conv_bn_relu

# (pointwise filters at alpha 1.0, depthwise stride) for the 13 blocks of MobileNetV1.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def build(
    num_classes: int = 2,
    alpha: float = 0.25,
    in_channels: int = 3,
    input_hw: tuple[int, int] = (96, 96),
    dropout: float = 0.0,
) -> Any:
    """Build MobileNetV1 for inputs (N, in_channels, *input_hw).

    >>> import torch
    >>> build()(torch.zeros(2, 3, 96, 96)).shape
    torch.Size([2, 2])
    """
    from torch import nn

    hw = (int(input_hw[0]), int(input_hw[1]))
    ch = int(32 * alpha)
    layers, hw = conv_bn_relu(in_channels, ch, (3, 3), (2, 2), hw)
    for filters, stride in _BLOCKS:
        out = int(filters * alpha)
        dw, hw = conv_bn_relu(ch, ch, (3, 3), (stride, stride), hw, groups=ch)
        pw, hw = conv_bn_relu(ch, out, (1, 1), (1, 1), hw)
        layers += dw + pw
        ch = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout), nn.Flatten(), nn.Linear(ch, num_classes)]
    return nn.Sequential(*layers)
