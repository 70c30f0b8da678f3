"""resnet8: the MLPerf Tiny image-classification ResNet-8 (CIFAR-10, 32x32x3, 10 classes).

Conv3x3(16)+BN+ReLU, then three residual stacks (16, 32, 64 filters; the last two start with stride 2
and a 1x1 stride-2 projection shortcut), average pool over the whole map, flatten, dense. After BN folding:
77,706 parameters (the reference .tflite holds 77,708 constants: the same plus the 2-element reshape shape).
"""

from __future__ import annotations

from typing import Any

from tinyprec.zoo._layers import conv_bn_relu, same_out


def _residual_block(in_ch: int, out_ch: int, stride: int, hw: tuple[int, int]) -> tuple[Any, tuple[int, int]]:
    from torch import nn

    class ResidualBlock(nn.Module):
        """conv-BN-ReLU, conv-BN, plus the (projected) input, then ReLU."""

        def __init__(self) -> None:
            super().__init__()
            first, mid_hw = conv_bn_relu(in_ch, out_ch, (3, 3), (stride, stride), hw)
            second, _ = conv_bn_relu(out_ch, out_ch, (3, 3), (1, 1), mid_hw, relu=False)
            self.body = nn.Sequential(*first, *second)
            if stride != 1 or in_ch != out_ch:
                # A 1x1 stride-2 SAME conv needs no padding on even sizes; keep the TF semantics anyway.
                proj, _ = conv_bn_relu(in_ch, out_ch, (1, 1), (stride, stride), hw, relu=False)
                self.shortcut: nn.Module = nn.Sequential(*proj)
            else:
                self.shortcut = nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.shortcut(x))

    return ResidualBlock(), same_out(hw, (stride, stride))


def build(num_classes: int = 10, in_channels: int = 3, input_hw: tuple[int, int] = (32, 32)) -> Any:
    """Build ResNet-8 for inputs (N, in_channels, *input_hw).

    >>> import torch
    >>> build()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    from torch import nn

    hw = (int(input_hw[0]), int(input_hw[1]))
    stem, hw = conv_bn_relu(in_channels, 16, (3, 3), (1, 1), hw)
    layers: list[nn.Module] = list(stem)
    for in_ch, out_ch, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        block, hw = _residual_block(in_ch, out_ch, stride, hw)
        layers.append(block)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)
