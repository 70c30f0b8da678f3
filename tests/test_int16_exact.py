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


class _SliceAfterInt16(torch.nn.Module):
    """Linear (a16w8) -> a slice of its int16 output (STRIDED_SLICE) as the model output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)[:, 1:5]


def test_exact_keeps_minus_32768_through_a_float_kept_op() -> None:
    """TFLM's int16 kernels clamp to [-32768, 32767] and STRIDED_SLICE copies -32768; the fake-quant spec is
    symmetric ([-32767, 32767]). Inputs far outside the calibrated range saturate the Linear, and tflm_exact
    must still give TFLM's -32768 after the slice (measured before the fix: 1 output in 16,000 differed on a
    25-step int16 LSTM)."""
    from tests._ops_e2e import convert
    from tinyprec.ir.layout import to_ir_layout
    from tinyprec.lowering.check import quantize_input, reference_output
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.runtimes.tflm import run_tflm as run_tflm_batch

    torch.manual_seed(0)
    model = _SliceAfterInt16()
    converted, x = convert(model, (8,), overrides=(("fc", "a16w8"),))
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="slice16")
    assert "STRIDED_SLICE" in [op.type.value for op in graph.ops]
    w = model.fc.weight.detach().numpy()[1:5]
    big = np.concatenate([np.sign(w) * 50.0, -np.sign(w) * 50.0]).astype(np.float32)  # beyond calibration
    q = quantize_input(np.concatenate([x, big]), graph.tensors[graph.inputs[0]].qparams)
    want = np.asarray(run_tflm_batch(write_tflite(graph), to_ir_layout(q, "NF"))).reshape(len(q), -1)
    assert (want == -32768).any() and (want == 32767).any()
    got = reference_output(tflm_exact(converted), graph, q).reshape(want.shape)
    np.testing.assert_array_equal(got, want)
