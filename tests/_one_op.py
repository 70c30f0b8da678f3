"""The check the one-op micro-model tests (test_ops_micro.py, test_ops_act_micro.py) share.

``corner_inputs(graph, n)`` gives ``n`` int8 samples per graph input: seeded random values, sample 0 holding
every int8 value once where the input has 256 elements, samples 1 and 2 all -128 and all 127.
``emulator_matches_tflm(graph, where)`` writes the .tflite, runs those inputs through TFLM, asserts that the
emulator on the graph and on the file read back equals TFLM exactly and that the read-back has the same ops,
and returns what the caller compares further: (file, inputs, TFLM's output, graph read back).
``chain_matches_tflm(graph, n)`` does the same for a chain of ops on ``n`` random int8 samples, with the emulator
on the file read back, and returns TFLM's output.
"""

from __future__ import annotations

import numpy as np

from tests._micro import run_tflm
from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Graph


def corner_inputs(graph: Graph, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    xs = []
    for name in graph.inputs:
        shape = graph.tensors[name].shape[1:]
        x = rng.integers(-128, 128, size=(n, *shape)).astype(np.int8)
        if int(np.prod(shape)) == 256:
            x[0] = np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(shape)
        x[1], x[2] = -128, 127
        xs.append(x)
    return xs


def emulator_matches_tflm(graph: Graph, where: str) -> tuple[bytes, list[np.ndarray], np.ndarray, Graph]:
    data = write_tflite(graph)
    xs = corner_inputs(graph, 6)
    want = run_tflm(data, xs)
    np.testing.assert_array_equal(Emulator(graph).run_all(xs)[0], want)
    reread = read_tflite(data, where=where)
    assert [op.type for op in reread.ops] == [op.type for op in graph.ops]
    np.testing.assert_array_equal(Emulator(reread).run_all(xs)[0], want)
    return data, xs, want, reread


def chain_matches_tflm(graph: Graph, n: int) -> np.ndarray:
    data = write_tflite(graph)
    x = np.random.default_rng(1).integers(-128, 128, (n, *graph.tensors[graph.inputs[0]].shape[1:])).astype(np.int8)
    want = run_tflm(data, [x])
    np.testing.assert_array_equal(Emulator(read_tflite(data)).run(x), want)
    return want
