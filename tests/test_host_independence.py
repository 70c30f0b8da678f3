"""The emulator's bit-exactness does not depend on the host: thread counts, batch chunking, BLAS blocking.

Its float sums are exact by construction (every partial sum is an integer below 2**24 in float32, 2**53
in float64, whatever order or blocking a BLAS kernel uses), so outputs must be identical however the
work is split. These tests split it differently and compare bit for bit.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_reader import read_tflite


def test_emulator_output_is_independent_of_threads_and_chunking(kws_tflite: bytes) -> None:
    graph = read_tflite(kws_tflite)
    x = np.random.default_rng(0).integers(-128, 128, (37, *graph.tensors[graph.inputs[0]].shape[1:]),
                                          dtype=np.int8)
    reference = Emulator(graph, threads=1).run(x)
    assert np.array_equal(Emulator(graph, threads=2).run(x), reference)
    single = Emulator(graph, threads=1)
    pieces = [single.run(x[s:e]) for s, e in ((0, 1), (1, 6), (6, 19), (19, 37))]
    assert np.array_equal(np.concatenate(pieces), reference)


def test_float32_gemm_at_the_exactness_bound_is_exact_with_any_blas_threads() -> None:
    # The emulator takes float32 sums when 255 * sum|w| < 2**24 per output channel; build weights right
    # at that bound and inputs at |x - zp| = 255, the worst case, and sum with 1 and 2 BLAS threads.
    rng = np.random.default_rng(1)
    k, n = 1024, 64
    w = rng.integers(-127, 128, (k, n)).astype(np.int64)
    limit = (2**24 - 1) // 255
    w = (w * (limit / np.abs(w).sum(axis=0))).astype(np.int64)  # sum|w| just below the limit
    assert (255 * np.abs(w).sum(axis=0)).max() < 2**24
    x = np.where(rng.random((512, k)) < 0.5, -255, 255).astype(np.int64)
    x[:, ::3] = rng.integers(-255, 256, x[:, ::3].shape)
    exact = x @ w
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            got = x.astype(np.float32) @ w.astype(np.float32)
        assert np.array_equal(got.astype(np.int64), exact), threads
