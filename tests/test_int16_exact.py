"""tflm_exact's int16 modules for the ops an int16 recurrent layer adds (SUB, LOGISTIC, TANH) against TFLM.

The micro-models are tests/_micro_lowbits.py's (emulator == TFLM is test_emulator_lowbits.py's check); here the
exact program's module for the same op and qparams runs on the same random int16 inputs and must equal TFLM
on every element.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from tests._micro import random_inputs, run_tflm
from tests._micro_lowbits import LOWBITS_MODELS
from tinyprec.emulator.common import act_range
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import DType, Graph


def _graph(case: str) -> Graph:
    return LOWBITS_MODELS[case](np.random.default_rng(zlib.crc32(case.encode())))


def _qp(graph: Graph, name: str) -> tuple[float, int]:
    q = graph.tensors[name].qparams
    assert q is not None
    return float(np.float32(q.scale[0])), int(q.zero_point[0])


@pytest.mark.parametrize("case", ["a16_sub", "a16_sub_broadcast_relu"])
def test_exact_int16_sub_equals_tflm(case: str) -> None:
    from tinyprec.quant.exact_ops import more_modules

    graph = _graph(case)
    op = graph.ops[0]
    (s1, z1), (s2, z2), (so, zo) = (_qp(graph, n) for n in (*op.inputs, op.outputs[0]))  # type: ignore[arg-type]
    lo, hi = act_range(op, op.options.activation, so, zo, DType.INT16)  # type: ignore[union-attr]
    module = more_modules()["sub"](s1, z1, s2, z2, so, zo, lo, hi, left_shift=15)
    xs = random_inputs(graph, np.random.default_rng(11), 64)
    xs[0][0], xs[1][0] = -32768, 32767  # the widest difference: saturates
    want = run_tflm(write_tflite(graph), xs)
    # the IR is NHWC, the exact program NCHW: SUB is elementwise, so the layout does not matter
    got = module(torch.from_numpy(xs[0]), torch.from_numpy(xs[1])).numpy()
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, want)
    assert want.size == 64 * 48 and len(np.unique(want)) > 1000
