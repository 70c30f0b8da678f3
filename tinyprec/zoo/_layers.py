"""Building blocks shared by the zoo: TF 'SAME' padding that PyTorch cannot express with ``padding=k//2``."""

from __future__ import annotations

import math
from typing import Any


def same_pad_1d(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME split along one axis: (before, after), the extra element goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_pad_2d(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """TF SAME padding as ``nn.ZeroPad2d`` wants it: (left, right, top, bottom)."""
    top, bottom = same_pad_1d(hw[0], kernel[0], stride[0])
    left, right = same_pad_1d(hw[1], kernel[1], stride[1])
    return left, right, top, bottom


def same_out(hw: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Spatial output size of a SAME conv."""
    return math.ceil(hw[0] / stride[0]), math.ceil(hw[1] / stride[1])


def conv_bn_relu(
    in_ch: int,
    out_ch: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    hw: tuple[int, int],
    *,
    groups: int = 1,
    relu: bool = True,
) -> tuple[list[Any], tuple[int, int]]:
    """Conv2d (TF SAME semantics) + BatchNorm2d (+ ReLU) as a module list, and the output size.

    Stride 1 with odd kernels uses symmetric ``padding=k//2`` (identical to SAME); anything else gets an
    explicit ``nn.ZeroPad2d`` with TF's split before a ``padding=0`` conv, which the lowering fuses into a
    SAME conv.
    """
    from torch import nn

    layers: list[Any] = []
    symmetric = stride == (1, 1) and kernel[0] % 2 == 1 and kernel[1] % 2 == 1
    if symmetric:
        padding: tuple[int, int] = (kernel[0] // 2, kernel[1] // 2)
    else:
        pad = same_pad_2d(hw, kernel, stride)
        if any(pad):
            layers.append(nn.ZeroPad2d(pad))
        padding = (0, 0)
    layers.append(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False))
    layers.append(nn.BatchNorm2d(out_ch))
    if relu:
        layers.append(nn.ReLU())
    return layers, same_out(hw, stride)
