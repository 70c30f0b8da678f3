"""Round trip of TensorFlow's converter output: read_tflite -> write_tflite must run identically.

Also the flash bound of issue 4: our file carries at most half of the converter's overhead
(file bytes minus constant bytes), and TFLM needs no larger an arena for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests._micro import random_inputs, run_tf, run_tflm
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_tflite_size_arena import allocates, recorded_arena  # noqa: E402  (probes in child processes)


def _opcodes(data: bytes) -> list[tuple[int, int]]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    return sorted((max(c.builtinCode, c.deprecatedBuiltinCode), c.version) for c in m.operatorCodes)


def _used_opcodes(data: bytes) -> list[tuple[int, int]]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    used = {op.opcodeIndex for op in m.subgraphs[0].operators}
    codes = m.operatorCodes
    return sorted((max(codes[i].builtinCode, codes[i].deprecatedBuiltinCode), codes[i].version) for i in used)


@pytest.mark.parametrize("fixture", ["kws_tflite", "ic_tflite"])
def test_round_trip_runs_identically(fixture: str, request: pytest.FixtureRequest) -> None:
    reference: bytes = request.getfixturevalue(fixture)
    graph = read_tflite(reference, where=fixture)
    ours = write_tflite(graph)

    xs = random_inputs(graph, np.random.default_rng(7), 8)
    y_ref = run_tflm(reference, xs)
    y_ours = run_tflm(ours, xs)
    assert len(np.unique(y_ref)) > 4
    np.testing.assert_array_equal(y_ours, y_ref)
    y_tf = run_tf(ours, xs)
    np.testing.assert_array_equal(y_tf, run_tf(reference, xs))
    if fixture == "kws_tflite":
        np.testing.assert_array_equal(y_tf, y_ours)
    else:
        # The IC model's FULLY_CONNECTED is per-tensor: TFLM forms its multiplier from the float32
        # product input_scale * weight_scale, TF Lite from the double product, so a few logits
        # round 1 LSB apart (softmax then spreads it). Measured on the converter's own file too.
        assert np.mean(y_tf != y_ours) < 0.1

    # Same builtin ops at the converter's versions, and no QUANTIZE/DEQUANTIZE added.
    assert _opcodes(ours) == _used_opcodes(reference)
    # Deterministic and stable: reading our file back and writing it again gives the same bytes.
    assert write_tflite(graph) == ours
    assert write_tflite(read_tflite(ours)) == ours

    const = graph.const_bytes()
    overhead_ref = len(reference) - const
    overhead_ours = len(ours) - const
    assert overhead_ours <= 0.5 * overhead_ref, (overhead_ours, overhead_ref)
    # The reference's smallest arena is its recorded total (one byte less fails), and ours fits in it.
    ref_arena = recorded_arena(reference)
    assert not allocates(reference, ref_arena - 1)
    assert allocates(ours, ref_arena)
