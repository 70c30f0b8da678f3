"""Bit-exact batched emulation of TFLite Micro's int8 reference kernels (numpy + numba).

>>> from tinyprec.emulator import Emulator   # doctest: +SKIP
>>> Emulator(graph).run(x_int8_batch)        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyprec.emulator.interpreter import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    # numba compiles (or loads from its cache) only when the emulator is first used.
    if name == "Emulator":
        from tinyprec.emulator.interpreter import Emulator

        return Emulator
    raise AttributeError(name)
