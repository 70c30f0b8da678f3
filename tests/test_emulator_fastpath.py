"""The emulator's float fast paths (tinyprec/emulator/fastpath.py) against TFLM, exact equality.

Depthwise convolutions take one of three summation loops by geometry (3x3 unrolled rows, any window
over rows when stride_w is 1, pixel by pixel otherwise); each is checked on one-op models through
TFLM's reference kernels, with windows, strides and dilations the other op tests do not reach.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._micro import MicroBuilder, random_inputs, run_tflm
from tinyprec.emulator import Emulator, fastpath
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Activation, DepthwiseConv2DOptions, Graph, OpType, Padding


def _out_size(size: int, filt: int, stride: int, dilation: int, padding: Padding) -> int:
    if padding is Padding.SAME:
        return (size + stride - 1) // stride
    return (size - (filt - 1) * dilation - 1) // stride + 1


def _depthwise(rng: np.random.Generator, hw: tuple[int, int], c: int, kernel: tuple[int, int],
               stride: tuple[int, int], dilation: tuple[int, int], padding: Padding) -> Graph:
    b = MicroBuilder(rng, "depthwise_fast")
    x = b.input("x", (1, *hw, c))
    taps = kernel[0] * kernel[1]
    w = b.weights("w", (1, *kernel, c), axis=3)
    bias = b.bias("b", x, w, c, taps)
    oh = _out_size(hw[0], kernel[0], stride[0], dilation[0], padding)
    ow = _out_size(hw[1], kernel[1], stride[1], dilation[1], padding)
    y = b.out_for_accumulator("y", (1, oh, ow, c), x, w, taps)
    b.op(OpType.DEPTHWISE_CONV_2D, (x, w, bias), (y,),
         DepthwiseConv2DOptions(stride[0], stride[1], padding, 1, dilation[0], dilation[1], Activation.RELU))
    return b.graph([y])


CASES = {
    "rows_5x3_same": ((9, 7), 6, (5, 3), (1, 1), (1, 1), Padding.SAME),
    "rows_1x4_stride_h2_valid": ((8, 9), 3, (1, 4), (2, 1), (1, 1), Padding.VALID),
    "rows_2x2_dilated_w": ((7, 8), 5, (2, 2), (1, 1), (1, 3), Padding.SAME),
    "unrolled_3x3_stride_h2_dilated": ((10, 6), 4, (3, 3), (2, 1), (2, 2), Padding.SAME),
    "unrolled_3x3_valid": ((6, 5), 8, (3, 3), (1, 1), (1, 1), Padding.VALID),
    "pixels_3x3_stride_w2": ((7, 9), 5, (3, 3), (1, 2), (1, 1), Padding.SAME),
    "pixels_4x2_stride3_valid": ((11, 10), 2, (4, 2), (3, 3), (1, 1), Padding.VALID),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_depthwise_fast_paths_match_tflm(case: str) -> None:
    graph = _depthwise(np.random.default_rng(abs(hash(case)) % 2**32), *CASES[case])
    xs = random_inputs(graph, np.random.default_rng(11), 9)
    xs[0][0], xs[0][1] = -128, 127  # saturation samples
    expected = run_tflm(write_tflite(graph), xs)
    emu = Emulator(graph, threads=2)
    assert emu.run_all(xs)[0].shape == expected.shape
    np.testing.assert_array_equal(emu.run_all(xs)[0], expected)


def test_im2col_matches_numpy_windows() -> None:
    """Columns (ky, kx, c) of every window, padding taps at the pad value, with strides and dilation."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(3, 9, 8, 3)).astype(np.int8)
    for kh, kw, s, d, pad in ((3, 3, 1, 2, 2), (10, 4, 2, 1, 1), (2, 5, 3, 1, 0)):
        oh = (9 + 2 * pad - (kh - 1) * d - 1) // s + 1
        ow = (8 + 2 * pad - (kw - 1) * d - 1) // s + 1
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-7)
        want = np.stack([xp[:, oy * s + fy * d, ox * s + fx * d, :]
                         for oy in range(oh) for ox in range(ow) for fy in range(kh) for fx in range(kw)], axis=1)
        want = want.reshape(3, oh * ow, kh * kw * 3).reshape(-1, kh * kw * 3).astype(np.float32)
        got = fastpath.im2col_f32(x, kh, kw, s, s, d, d, pad, pad, oh, ow, -7)
        np.testing.assert_array_equal(got, want)
