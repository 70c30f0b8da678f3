"""Hostile input for issue 11's shape ops: mutations of a .tflite holding RESIZE_NEAREST_NEIGHBOR,
RESIZE_BILINEAR, TRANSPOSE_CONV, DEPTH_TO_SPACE and BATCH_MATMUL read cleanly or raise ModelFormatError, and
every clean read either emulates or is refused with a TinyprecError, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from tests._fuzz import fuzz_reads
from tests._micro import MicroBuilder
from tests._one_op import chain_matches_tflm
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import DType, Graph, OpType, Padding
from tinyprec.ir.ops import BatchMatMulOptions, DepthToSpaceOptions, ResizeOptions, TransposeConvOptions


def every_shape_op() -> Graph:
    b = MicroBuilder(np.random.default_rng(0), "shape_ops")
    x = b.input("x", (1, 2, 3, 4), scale=0.05, zp=-10)
    size = b.const("size1", np.array([4, 6], np.int32), DType.INT32)
    b.op(OpType.RESIZE_NEAREST_NEIGHBOR, (x, size), (b.act("nn", (1, 4, 6, 4), 0.05, -10),), ResizeOptions())
    size2 = b.const("size2", np.array([5, 7], np.int32), DType.INT32)
    b.op(OpType.RESIZE_BILINEAR, ("nn", size2), (b.act("bl", (1, 5, 7, 4), 0.05, -10),), ResizeOptions(False, True))
    w = b.weights("w", (8, 2, 2, 4), axis=0)
    bias = b.bias("bias", "bl", w, 8, 4)
    shape = b.const("out_shape", np.array([1, 10, 14, 8], np.int32), DType.INT32)
    y = b.out_for_accumulator("tc", (1, 10, 14, 8), "bl", w, 4)
    b.op(OpType.TRANSPOSE_CONV, (shape, w, "bl", bias), (y,), TransposeConvOptions(Padding.VALID, 2, 2))
    qp = b.tensors[y].qparams
    b.op(OpType.DEPTH_TO_SPACE, (y,), (b.act("d2s", (1, 20, 28, 2), float(qp.scale[0]), int(qp.zero_point[0])),),
         DepthToSpaceOptions(2))
    b.op(OpType.BATCH_MATMUL, ("d2s", "d2s"), (b.act("y", (1, 20, 28, 28), 0.5, 3),), BatchMatMulOptions(False, True))
    return b.graph(["y"])


def test_chain_of_shape_ops_is_exact() -> None:
    want = chain_matches_tflm(every_shape_op(), 4)
    assert len(np.unique(want)) > 20


@pytest.mark.slow
def test_mutations_of_shape_ops_read_cleanly_or_raise() -> None:
    data = write_tflite(every_shape_op())
    outcomes, _ = fuzz_reads(data, 600, seed=20261130)  # every clean read is emulated
    assert outcomes["error"] > 50 and outcomes["ran"] > 0 and outcomes["refused"] > 0, outcomes
