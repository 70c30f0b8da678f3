"""Hostile input: mutated .tflite files must read cleanly or raise ModelFormatError, never anything else.

Every twentieth clean read also goes through the emulator (prepare and one sample): it may refuse the
graph with a TinyprecError, but must not crash.

A few thousand seeded mutations of the MLPerf Tiny fixtures: bit flips, byte overwrites, truncation and
corruption of 32-bit words (the flatbuffer's offsets and lengths) with extreme values.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError, TinyprecError
from tinyprec.formats.tflite_reader import MAX_TENSOR_ELEMENTS, read_tflite
from tinyprec.ir import Graph

_EXTREMES = np.array([0, 1, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0x10000, 0x7FFF], np.uint64)


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:  # bit flips
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        return bytes(buf[: int(rng.integers(len(buf)))])
    elif kind == 2:  # an aligned 32-bit word (offset, length, index) set to an extreme or random value
        pos = int(rng.integers(len(buf) // 4)) * 4
        value = int(rng.choice(_EXTREMES)) if rng.random() < 0.6 else int(rng.integers(1 << 32))
        if rng.random() < 0.3:
            value = len(buf) - pos + int(rng.integers(-8, 8))  # points just around the end of the file
        buf[pos:pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    elif kind == 3:  # the header: root offset, identifier, first vtable
        pos = int(rng.integers(0, 64))
        buf[pos] = int(rng.integers(256))
    else:  # a run of random bytes
        pos = int(rng.integers(len(buf)))
        n = int(rng.integers(1, 32))
        buf[pos:pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()[: len(buf) - pos]
    return bytes(buf)


def _check_emulates(graph: Graph) -> str:
    try:
        emulator = Emulator(graph, threads=1)
    except TinyprecError:
        return "refused"
    shape, dtype = emulator.input_spec()
    try:
        y = emulator.run(np.zeros((1, *shape), dtype))
    except TinyprecError:
        return "refused"
    assert y.shape[0] == 1
    return "ran"


def _check_clean(graph: Graph) -> None:
    assert graph.inputs and graph.outputs
    for t in graph.tensors.values():
        assert all(d >= 0 for d in t.shape)
        assert int(np.prod(t.shape, dtype=np.int64)) <= MAX_TENSOR_ELEMENTS
        if t.data is not None:
            assert t.data.shape == t.shape
    for op in graph.ops:
        for name in (*op.inputs, *op.outputs):
            assert name is None or name in graph.tensors


def _fuzz(data: bytes, cases: int) -> None:
    rng = np.random.default_rng(20261129)
    outcomes = {"clean": 0, "error": 0, "ran": 0, "refused": 0}
    slowest = 0.0
    for case in range(cases):
        mutated = _mutate(data, rng)
        start = time.perf_counter()
        try:
            graph = read_tflite(mutated, where="fuzz.tflite")
        except ModelFormatError as err:
            slowest = max(slowest, time.perf_counter() - start)
            message = str(err)
            assert message.startswith("fuzz.tflite: ") and "\n" not in message, (case, message)
            outcomes["error"] += 1
            continue
        slowest = max(slowest, time.perf_counter() - start)
        _check_clean(graph)
        outcomes["clean"] += 1
        if outcomes["clean"] % 20 == 1:
            outcomes[_check_emulates(graph)] += 1
    # Both outcomes must occur, or the mutations are not reaching the parser.
    assert outcomes["error"] > cases // 5 and outcomes["clean"] > 0 and outcomes["ran"] > 0, outcomes
    assert slowest < 1.0, f"one read took {slowest:.2f} s (a hang in the making)"


@pytest.mark.slow
@pytest.mark.parametrize(("fixture", "cases"), [("kws_tflite", 1200), ("ic_tflite", 800)])
def test_mutations_read_cleanly_or_raise_model_format_error(fixture: str, cases: int,
                                                           request: pytest.FixtureRequest) -> None:
    _fuzz(request.getfixturevalue(fixture), cases)


@pytest.mark.slow
def test_mutations_of_an_int4_int16_model_read_cleanly_or_raise() -> None:
    """Our own mixed file (INT4 weights, int16 activations, int64 bias, QUANTIZE int8 <-> int16)."""
    from tests._micro_lowbits import mixed
    from tinyprec.formats.tflite_writer import write_tflite

    _fuzz(write_tflite(mixed(np.random.default_rng(1))), 1500)
