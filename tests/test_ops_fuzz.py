"""Hostile input for issue 11's ops: mutations of a .tflite holding every new op read cleanly or raise
ModelFormatError, and every clean read either emulates or is refused with a TinyprecError, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from tests._fuzz import fuzz_reads
from tests._micro import MicroBuilder
from tests._one_op import chain_matches_tflm
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import (
    DType,
    ElementwiseOptions,
    Graph,
    NoOptions,
    OpType,
    QParams,
)
from tinyprec.ir.ops import LeakyReluOptions, StridedSliceOptions


def every_new_op() -> Graph:
    b = MicroBuilder(np.random.default_rng(0), "new_ops")
    x = b.input("x", (1, 4, 6, 3), scale=0.05, zp=-10)
    qp = (0.04, -20)
    b.op(OpType.HARD_SWISH, (x,), (b.act("hs", (1, 4, 6, 3), *qp),), NoOptions())
    b.op(OpType.LEAKY_RELU, ("hs",), (b.act("lr", (1, 4, 6, 3), *qp),), LeakyReluOptions(0.2))
    b.op(OpType.ABS, ("lr",), (b.act("ab", (1, 4, 6, 3), 0.03, -128),), NoOptions())
    c = b.const("c", np.array([[[[5, -7, 9]]]], np.int8), DType.INT8, QParams.per_tensor(0.03, -128))
    b.op(OpType.SUB, ("ab", c), (b.act("sb", (1, 4, 6, 3), 0.05, 0),), ElementwiseOptions())
    lo = b.const("lo", np.array([-20], np.int8), DType.INT8, QParams.per_tensor(0.05, 0))
    b.op(OpType.MAXIMUM, ("sb", lo), (b.act("mx", (1, 4, 6, 3), 0.05, 0),), NoOptions())
    hi = b.const("hi", np.array([60], np.int8), DType.INT8, QParams.per_tensor(0.05, 0))
    b.op(OpType.MINIMUM, ("mx", hi), (b.act("mn", (1, 4, 6, 3), 0.05, 0),), NoOptions())
    perm = b.const("perm", np.array([0, 2, 1, 3], np.int32), DType.INT32)
    b.op(OpType.TRANSPOSE, ("mn", perm), (b.act("tr", (1, 6, 4, 3), 0.05, 0),), NoOptions())
    ins = [b.const(k, np.array(v, np.int32), DType.INT32)
           for k, v in (("b", (0, 1, 0, 0)), ("e", (1, 6, 4, 3)), ("s", (1, 2, 1, 1)))]
    b.op(OpType.STRIDED_SLICE, ("tr", *ins), (b.act("y", (1, 3, 4, 3), 0.05, 0),), StridedSliceOptions(1, 1, 0))
    return b.graph(["y"])


def test_chain_of_new_ops_is_exact() -> None:
    assert chain_matches_tflm(every_new_op(), 8).shape == (8, 3, 4, 3)


@pytest.mark.slow
def test_mutations_of_new_ops_read_cleanly_or_raise() -> None:
    data = write_tflite(every_new_op())
    outcomes, _ = fuzz_reads(data, 800, seed=20261130)  # every clean read is emulated
    assert outcomes["error"] > 100 and outcomes["ran"] > 0 and outcomes["refused"] > 0, outcomes
