"""Mutation fuzzing of .tflite files, shared by the reader's fuzz tests and the op fuzz tests.

``fuzz_reads(data, cases)`` reads ``cases`` seeded mutations of ``data``: each either reads cleanly (then its
graph is checked for sane shapes and names, and every ``emulate_every``-th clean read goes through the emulator,
which may refuse it with a TinyprecError but must not crash) or raises a one-line ModelFormatError naming the
file. It returns the counts of each outcome and the slowest read, for the caller to assert on.
"""

from __future__ import annotations

import time

import numpy as np

from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError, TinyprecError
from tinyprec.formats.tflite_reader import MAX_TENSOR_ELEMENTS, read_tflite
from tinyprec.ir import Graph

_EXTREMES = np.array([0, 1, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0x10000, 0x7FFF], np.uint64)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
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


def check_emulates(graph: Graph) -> str:
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


def check_clean(graph: Graph) -> None:
    assert graph.inputs and graph.outputs
    for t in graph.tensors.values():
        assert all(d >= 0 for d in t.shape)
        assert int(np.prod(t.shape, dtype=np.int64)) <= MAX_TENSOR_ELEMENTS
        if t.data is not None:
            assert t.data.shape == t.shape
    for op in graph.ops:
        for name in (*op.inputs, *op.outputs):
            assert name is None or name in graph.tensors


def fuzz_reads(data: bytes, cases: int, *, seed: int, emulate_every: int = 1) -> tuple[dict[str, int], float]:
    """(counts of "clean", "error", "ran", "refused"; the slowest read in seconds) over ``cases`` mutations."""
    rng = np.random.default_rng(seed)
    outcomes = {"clean": 0, "error": 0, "ran": 0, "refused": 0}
    slowest = 0.0
    for case in range(cases):
        mutated = mutate(data, rng)
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
        check_clean(graph)
        outcomes["clean"] += 1
        if (outcomes["clean"] - 1) % emulate_every == 0:  # the 1st, then every emulate_every-th clean read
            outcomes[check_emulates(graph)] += 1
    return outcomes, slowest
