"""Hostile input: mutated .tflite files must read cleanly or raise ModelFormatError, never anything else.

Every twentieth clean read also goes through the emulator (prepare and one sample): it may refuse the
graph with a TinyprecError, but must not crash.

A few thousand seeded mutations of the MLPerf Tiny fixtures: bit flips, byte overwrites, truncation and
corruption of 32-bit words (the flatbuffer's offsets and lengths) with extreme values.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._fuzz import fuzz_reads


def _fuzz(data: bytes, cases: int) -> None:
    outcomes, slowest = fuzz_reads(data, cases, seed=20261129, emulate_every=20)
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
