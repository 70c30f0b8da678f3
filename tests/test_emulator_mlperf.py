"""Bit-exactness on the foreign MLPerf Tiny models: the emulator against TFLM's interpreter, no tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.emulator import Emulator
from tinyprec.errors import DataError
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.runtimes.tflm import run_tflm, run_tflm_with_taps


def _random_batch(emu: Emulator, n: int, seed: int) -> np.ndarray:
    shape, dtype = emu.input_spec()
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape)).astype(dtype)


@pytest.mark.parametrize(("fixture", "n"), [("kws_tflite", 32), ("ic_tflite", 8)])
def test_outputs_equal_tflm(fixture: str, n: int, request: pytest.FixtureRequest) -> None:
    data: bytes = request.getfixturevalue(fixture)
    emu = Emulator(read_tflite(data))
    x = _random_batch(emu, n, seed=1)
    ours = emu.run(x)
    theirs = run_tflm(data, x)
    assert ours.dtype == np.int8 and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    # The outputs are not degenerate: several classes win across the batch.
    assert len(set(ours.argmax(axis=1).tolist())) > 1


@pytest.mark.parametrize(("fixture", "n"), [("kws_tflite", 4), ("ic_tflite", 2)])
def test_every_intermediate_tensor_equals_tflm(fixture: str, n: int, request: pytest.FixtureRequest) -> None:
    """Every activation TFLM exposes (kPreserveAllTensors) equals the emulator's tap of the same name."""
    data: bytes = request.getfixturevalue(fixture)
    emu = Emulator(read_tflite(data))
    x = _random_batch(emu, n, seed=2)
    ours = emu.run_with_taps(x)
    theirs = run_tflm_with_taps(data, x)
    assert set(theirs) == set(ours)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_batch_split_does_not_change_results(kws_tflite: bytes) -> None:
    emu = Emulator(read_tflite(kws_tflite))
    x = _random_batch(emu, 10, seed=3)
    whole = emu.run(x)
    np.testing.assert_array_equal(np.concatenate([emu.run(x[:3]), emu.run(x[3:])]), whole)


def test_single_rounding_is_a_different_build(kws_tflite: bytes) -> None:
    """Single rounding shifts some values by one step but agrees on most (the TFLITE_SINGLE_ROUNDING build)."""
    graph = read_tflite(kws_tflite)
    double, single = Emulator(graph), Emulator(graph, rounding="single")
    x = _random_batch(double, 16, seed=4)
    a = double.run_with_taps(x)
    b = single.run_with_taps(x)
    name = graph.ops[0].outputs[0]  # same input to both builds, so at most one step apart
    diff = np.abs(a[name].astype(np.int16) - b[name].astype(np.int16))
    assert diff.max() <= 1 and 0 < np.count_nonzero(diff) < diff.size // 4


def test_bad_input_names_expected_shape_and_dtype(kws_tflite: bytes) -> None:
    emu = Emulator(read_tflite(kws_tflite))
    with pytest.raises(DataError, match=r"\(batch, 49, 10, 1\)"):
        emu.run(np.zeros((2, 49, 10), np.int8))
    with pytest.raises(DataError, match="int8"):
        emu.run(np.zeros((2, 49, 10, 1), np.float32))


def test_macs_per_op(kws_tflite: bytes) -> None:
    graph = read_tflite(kws_tflite)
    macs = Emulator(graph).macs()
    assert list(macs) == [op.name for op in graph.ops]
    values = list(macs.values())
    assert values[0] == 25 * 5 * 64 * 10 * 4 and values[1] == 25 * 5 * 64 * 9 and values[-2] == 64 * 12
    assert 2.6e6 < sum(values) < 2.7e6


def test_malformed_graphs_are_refused_with_model_format_error(kws_tflite: bytes) -> None:
    import dataclasses

    from tinyprec.errors import ModelFormatError
    from tinyprec.ir import DType

    graph = read_tflite(kws_tflite)
    first = graph.ops[0]
    broken = dataclasses.replace(first, inputs=(first.inputs[0], None, first.inputs[2]))
    with pytest.raises(ModelFormatError, match="needs 2 input"):
        Emulator(dataclasses.replace(graph, ops=[broken, *graph.ops[1:]]))
    with pytest.raises(ModelFormatError, match="used before any op produces it"):
        Emulator(dataclasses.replace(graph, ops=graph.ops[1:]))
    wide = dict(graph.tensors)
    out = first.outputs[0]
    wide[out] = dataclasses.replace(graph.tensors[out], dtype=DType.INT16)
    with pytest.raises(ModelFormatError, match="int16"):
        Emulator(dataclasses.replace(graph, tensors=wide))
