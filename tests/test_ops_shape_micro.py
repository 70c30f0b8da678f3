"""Issue 11's shape ops as one-op micro-models: emulator == TFLM == TF Lite reference kernels, exactly, on
random and extreme int8 inputs: RESIZE_NEAREST_NEIGHBOR (floor, half-pixel, align_corners; up and down)
and RESIZE_BILINEAR (half-pixel and align_corners; up, down and non-integer ratios)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._micro import MicroBuilder, run_tf, run_tflm
from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Activation, DType, Graph, OpType, Padding
from tinyprec.ir.ops import ResizeOptions, TransposeConvOptions


def _resize(op_type: OpType, in_hw: tuple[int, int], out_hw: tuple[int, int], align: bool, half: bool,
            out_qp: tuple[float, int] = (0.02, -7)) -> Graph:
    b = MicroBuilder(np.random.default_rng(8), op_type.value.lower())
    x = b.input("x", (1, *in_hw, 3), scale=0.02, zp=-7)
    size = b.const("size", np.array(out_hw, np.int32), DType.INT32)
    y = b.act("y", (1, *out_hw, 3), *out_qp)
    b.op(op_type, (x, size), (y,), ResizeOptions(align, half))
    return b.graph([y])


def _transpose_conv(in_hw: tuple[int, int], k: int, stride: int, out_hw: tuple[int, int], padding: Padding,
                    bias: bool = True, act: Activation = Activation.NONE, per_channel: bool = True) -> Graph:
    b = MicroBuilder(np.random.default_rng(9), "transpose_conv")
    x = b.input("x", (1, *in_hw, 3), scale=0.03, zp=5)
    w = b.weights("w", (4, k, k, 3), axis=0 if per_channel else None)
    fan_in = 3 * max(1, (k // stride) ** 2)
    bias_name = b.bias("b", x, w, 4, fan_in) if bias else None
    y = b.out_for_accumulator("y", (1, *out_hw, 4), x, w, fan_in)
    shape = b.const("output_shape", np.array((1, *out_hw, 4), np.int32), DType.INT32)
    b.op(OpType.TRANSPOSE_CONV, (shape, w, x, bias_name), (y,), TransposeConvOptions(padding, stride, stride, act))
    return b.graph([y])


def _depth_to_space(block: int, channels: int) -> Graph:
    from tinyprec.ir.ops import DepthToSpaceOptions

    b = MicroBuilder(np.random.default_rng(10), "depth_to_space")
    x = b.input("x", (1, 3, 4, channels * block * block), scale=0.02, zp=3)
    y = b.act("y", (1, 3 * block, 4 * block, channels), 0.02, 3)
    b.op(OpType.DEPTH_TO_SPACE, (x,), (y,), DepthToSpaceOptions(block))
    return b.graph([y])



_T, _S, _V = OpType.TRANSPOSE_CONV, Padding.SAME, Padding.VALID
_N, _B = OpType.RESIZE_NEAREST_NEIGHBOR, OpType.RESIZE_BILINEAR
CASES = {
    "nearest_x2": lambda: _resize(_N, (4, 5), (8, 10), False, False),
    "nearest_up_odd": lambda: _resize(_N, (3, 5), (7, 12), False, False),
    "nearest_down": lambda: _resize(_N, (9, 8), (4, 3), False, False),
    "nearest_half_pixel": lambda: _resize(_N, (3, 5), (7, 12), False, True),
    "nearest_align_corners": lambda: _resize(_N, (3, 5), (7, 12), True, False),
    "bilinear_half_pixel_x2": lambda: _resize(_B, (4, 5), (8, 10), False, True),
    "bilinear_half_pixel_odd": lambda: _resize(_B, (3, 5), (7, 12), False, True),
    "bilinear_align_corners": lambda: _resize(_B, (3, 5), (7, 12), True, False),
    "bilinear_down": lambda: _resize(_B, (9, 8), (4, 3), False, True),
    "bilinear_asymmetric": lambda: _resize(_B, (3, 5), (7, 9), False, False),
    "transpose_conv_k2s2": lambda: _transpose_conv((3, 4), 2, 2, (6, 8), _V),
    "transpose_conv_k4s2_same": lambda: _transpose_conv((3, 4), 4, 2, (6, 8), _S),
    "transpose_conv_k3s1_same_relu": lambda: _transpose_conv((5, 4), 3, 1, (5, 4), _S, act=Activation.RELU),
    "transpose_conv_k3s2_valid_no_bias": lambda: _transpose_conv((3, 4), 3, 2, (7, 9), _V, bias=False),
    "transpose_conv_k3s2_valid_extra_row": lambda: _transpose_conv((3, 4), 3, 2, (8, 10), _V, per_channel=False),
    "depth_to_space_b2c3": lambda: _depth_to_space(2, 3),
    "depth_to_space_b3c1": lambda: _depth_to_space(3, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_op_matches_tflm_and_tflite_exactly(case: str) -> None:
    graph = CASES[case]()
    data = write_tflite(graph)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    xs = [np.random.default_rng(3).integers(-128, 128, size=(6, *shape)).astype(np.int8)]
    xs[0][1], xs[0][2] = -128, 127
    want = run_tflm(data, xs)
    np.testing.assert_array_equal(Emulator(graph).run_all(xs)[0], want)
    reread = read_tflite(data, where=case)
    assert [op.type for op in reread.ops] == [op.type for op in graph.ops]
    assert reread.ops[0].options == graph.ops[0].options
    np.testing.assert_array_equal(Emulator(reread).run_all(xs)[0], want)
    if case in TFLITE_REFERENCE_LACKS:
        from tinyprec.runtimes.tflite import run_tflite

        np.testing.assert_array_equal(run_tflite(data, xs[0], kernels="optimized"), want)
        return
    np.testing.assert_array_equal(run_tf(data, xs), want)


#: TF Lite's reference resolver (TF 2.21) registers DEPTH_TO_SPACE version 1 only, while op_version.cc
#: (and so our writer) gives int8 version 2: those files run on TF Lite's builtin (optimized) kernels, which
#: for this pure data movement are the reference's copy.
TFLITE_REFERENCE_LACKS = {"depth_to_space_b2c3", "depth_to_space_b3c1"}


def test_resize_refuses_rescaling() -> None:
    graph = _resize(_B, (4, 5), (8, 10), False, True, out_qp=(0.03, -7))
    with pytest.raises(ModelFormatError, match="input's scale and zero point"):
        Emulator(graph)


def test_resize_refuses_both_flags() -> None:
    with pytest.raises(ModelFormatError, match="cannot both be set"):
        Emulator(_resize(_N, (4, 5), (8, 10), True, True))



def _batch_matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  adj: tuple[bool, bool] = (False, False)) -> Graph:
    from tinyprec.ir.ops import BatchMatMulOptions

    b = MicroBuilder(np.random.default_rng(11), "batch_matmul")
    x1 = b.input("x1", a_shape, scale=0.02, zp=-11)
    x2 = b.input("x2", b_shape, scale=0.03, zp=6)
    depth = a_shape[-2] if adj[0] else a_shape[-1]
    y = b.act("y", out_shape, 0.02 * 0.03 * 74 * 74 * float(np.sqrt(depth)) / 60, 4)
    b.op(OpType.BATCH_MATMUL, (x1, x2), (y,), BatchMatMulOptions(*adj))
    return b.graph([y])


MATMUL_CASES = {
    "batch_matmul_4d": lambda: _batch_matmul((1, 1, 5, 7), (1, 1, 7, 6), (1, 1, 5, 6)),
    "batch_matmul_heads_adj_y": lambda: _batch_matmul((1, 2, 5, 7), (1, 2, 6, 7), (1, 2, 5, 6), (False, True)),
    "batch_matmul_3d_adj_x": lambda: _batch_matmul((1, 7, 5), (1, 7, 6), (1, 5, 6), (True, False)),
}


@pytest.mark.parametrize("case", sorted(MATMUL_CASES))
def test_batch_matmul_matches_tflm_and_tflite_exactly(case: str) -> None:
    graph = MATMUL_CASES[case]()
    data = write_tflite(graph)
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, size=(6, *graph.tensors[n].shape[1:])).astype(np.int8) for n in graph.inputs]
    xs[0][1], xs[1][1], xs[0][2], xs[1][2] = -128, -128, 127, -128
    want = run_tflm(data, xs)
    assert len(np.unique(want)) > 20  # the output scale spans the range, not a saturated block
    np.testing.assert_array_equal(Emulator(graph).run_all(xs)[0], want)
    reread = read_tflite(data, where=case)
    assert reread.ops[0].options == graph.ops[0].options
    np.testing.assert_array_equal(Emulator(reread).run_all(xs)[0], want)
    np.testing.assert_array_equal(run_tf(data, xs), want)
