"""Import torchao without its start-up noise.

torchao's ``__init__`` logs "Failed to load .../_C_*.so" warnings for CUDA-only extensions it cannot load on
a CPU machine, and registering its enums with torch's pytree logs a deprecation warning. Both go through
``logging``; we raise those loggers' levels while torchao is first imported and restore them afterwards,
so later warnings from either library still reach the user.
"""

from __future__ import annotations

import logging
import sys

_NOISY = ("torchao", "torch.utils._pytree")


def import_torchao() -> None:
    """Import torchao (and its PT2E package) once, silencing only the import-time log records."""
    if "torchao.quantization.pt2e" in sys.modules:
        return
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        import torchao.quantization.pt2e  # noqa: F401
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


import_torchao()
