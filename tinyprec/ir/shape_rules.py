"""Index and padding rules of TFLM's shape kernels, shared by the emulator, the ONNX writer and the lowering:
nearest-neighbour source pixels (GetNearestNeighbor), bilinear taps (ComputeInterpolationValuesInteger)
and TRANSPOSE_CONV's leading padding (ComputePaddingHeightWidth on the output size). Ours, from reading
tensorflow/lite/kernels/internal/reference/ and tflite-micro's kernels."""

from __future__ import annotations

import numpy as np

from tinyprec.ir.ops import Padding


def nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLM GetNearestNeighbor for every output position, in float32 as on the MCU.

    >>> nearest_indices(3, 6, False, False).tolist()
    [0, 0, 1, 1, 2, 2]
    >>> nearest_indices(2, 5, True, False).tolist()
    [0, 0, 1, 1, 1]
    """
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    pos = (np.arange(out_size).astype(f32) + f32(0.5 if half_pixel else 0.0)) * f32(scale)
    if align_corners:
        idx = (np.sign(pos) * np.floor(np.abs(pos) + f32(0.5))).astype(np.int64)  # TfLiteRound: half away
    else:
        idx = np.floor(pos).astype(np.int64)
    idx = np.minimum(idx, in_size - 1)
    return np.maximum(idx, 0) if half_pixel else idx


def trunc_div(a: np.ndarray, b: int) -> np.ndarray:
    """C integer division (towards zero) of an int64 array by a positive int."""
    return np.sign(a) * (np.abs(a) // b)


def bilinear_taps(in_size: int, out_size: int, align_corners: bool,
                  half_pixel: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper one in units of 2**-10) per output position, as
    TFLM's ComputeInterpolationValuesInteger; the lower index weighs 1024 minus that.

    >>> [t.tolist() for t in bilinear_taps(2, 4, False, True)]
    [[0, 0, 0, 1], [0, 1, 1, 1], [-256, 256, 768, 256]]
    """
    scale_10 = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        scale_10 = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    pos = np.arange(out_size, dtype=np.int64) * scale_10
    if half_pixel:
        pos = pos + scale_10 // 2 - (1 << 9)
    lower = np.maximum(trunc_div(pos, 1 << 10), 0)
    upper = np.minimum(trunc_div(pos + (1 << 10) - 1, 1 << 10), in_size - 1)
    return lower, upper, pos - (1 << 10) * lower


def transpose_conv_pad(out_size: int, filt: int, stride: int, padding: Padding) -> int:
    """The leading padding TFLM's TRANSPOSE_CONV derives from its output size (ComputePaddingHeightWidth
    with the output as the 'input'): the conv that would map the output back, padded SAME or VALID.

    >>> transpose_conv_pad(8, 4, 2, Padding.SAME), transpose_conv_pad(9, 3, 2, Padding.VALID)
    (1, 0)
    """
    if padding is Padding.SAME:
        back = (out_size + stride - 1) // stride
    else:
        back = (out_size + stride - filt) // stride
    return max((back - 1) * stride + filt - out_size, 0) // 2
