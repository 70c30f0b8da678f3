"""TFLM's 256-entry sigmoid table (sigmoid(i / 24) in unsigned 0.16 fixed point) behind int16 LOGISTIC/TANH.

The table's entries are tuned values, not a rounding of the formula (they differ from
round(65536 * sigmoid(i / 24)) by up to about one unit), so no formula reproduces TFLM bit for bit. It is
read from the installed TFLM runtime (the ``tflite_micro`` wheel, a dependency of tinyprec): the one
256-entry uint16 array in its binary that starts at 32768, never decreases, and stays within two units of
the formula everywhere. Every copy found must agree. tests/test_emulator_lowbits.py checks the resulting
LOGISTIC and TANH against TFLM on all 65,536 int16 inputs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tinyprec.errors import TinyprecError

_ENTRIES = 256


def _formula() -> np.ndarray:
    i = np.arange(_ENTRIES, dtype=np.float64)
    return np.minimum(65536.0 / (1.0 + np.exp(-i / 24.0)), 65535.0)


def find_sigmoid_table(blob: bytes) -> np.ndarray | None:
    """The sigmoid table in a binary image, or None; raises when two candidates disagree."""
    approx = _formula()
    start = np.uint16(32768).tobytes()
    found: np.ndarray | None = None
    pos = blob.find(start)
    while pos != -1:
        if pos + 2 * _ENTRIES <= len(blob):
            cand = np.frombuffer(blob, dtype="<u2", count=_ENTRIES, offset=pos)
            if np.all(np.diff(cand.astype(np.int64)) >= 0) and np.all(np.abs(cand - approx) < 2.0):
                if found is not None and not np.array_equal(found, cand):
                    raise TinyprecError("the TFLM runtime holds two different sigmoid tables; "
                                        "int16 LOGISTIC/TANH cannot be emulated exactly")
                found = cand.copy()
        pos = blob.find(start, pos + 1)
    return found


@functools.lru_cache(maxsize=1)
def sigmoid_table() -> np.ndarray:
    """uint16[256]: TFLM's sigmoid table, read once from the installed ``tflite_micro`` runtime."""
    try:
        import tflite_micro
    except ImportError as err:  # pragma: no cover - tflite-micro is a dependency
        raise TinyprecError("int16 LOGISTIC/TANH need the tflite-micro package (pip install tflite-micro)") from err
    root = Path(tflite_micro.__file__).parent
    for lib in sorted(root.rglob("_runtime*.so")) + sorted(root.rglob("*.so")):
        table = find_sigmoid_table(lib.read_bytes())
        if table is not None:
            return table
    raise TinyprecError(f"no sigmoid table found in the TFLM runtime under {root}; int16 LOGISTIC/TANH "
                        "cannot be emulated exactly with this tflite-micro build")
