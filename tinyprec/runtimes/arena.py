"""The firmware's arena: the smallest ``arena_size`` with which TFLM's interpreter allocates the model.

TFLM's Python interpreter sometimes crashes (SIGSEGV) instead of failing cleanly when an arena is too
small, so every probe runs in a helper process that answers "does N allocate?" line by line; when it
dies, the probe counts as a failure and a fresh helper continues the search.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tinyprec.errors import ModelFormatError

_MAX_ARENA = 256 << 20
_GENEROUS = 64 << 20  # first probe: a model that fails here is broken, not short of arena
_HELPER = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
devnull = os.open(os.devnull, os.O_WRONLY)
out = os.dup(1)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
for line in sys.stdin:
    try:
        runtime.Interpreter.from_bytes(data, arena_size=int(line))
        ok = b"1\n"
    except RuntimeError:
        ok = b"0\n"
    os.write(out, ok)
"""


class _Prober:
    """Asks a helper process whether TFLM allocates the model with a given arena size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0
        self.last_signal = 0

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", _HELPER, str(self.path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def allocates(self, arena: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{arena}\n".encode())
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except BrokenPipeError:
            answer = b""
        if answer not in (b"0\n", b"1\n"):  # the helper crashed on this (too small) arena
            self.crashes += 1
            self.last_signal = -(self.proc.wait() or 0)
            self.proc = None
            if self.crashes > 64:
                raise ModelFormatError("TFLM's interpreter keeps crashing while allocating the model")
            return False
        return answer == b"1\n"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()


def smallest_arena(tflite_bytes: bytes, *, start: int = 4096, where: str = "<bytes>") -> int:
    """The smallest arena_size (bytes) that allocates ``tflite_bytes`` in TFLM, exact to the byte."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        prober = _Prober(path)
        try:
            if not prober.allocates(_GENEROUS):
                if prober.crashes:
                    raise ModelFormatError(
                        f"{where}: TFLM crashed (signal {prober.last_signal}) while loading the model even with "
                        f"{_GENEROUS} bytes of arena; the file is inconsistent, re-export it")
                raise ModelFormatError(
                    f"{where}: TFLM does not allocate the model even with {_GENEROUS} bytes of arena; "
                    "run `tinyprec inspect` on the .tflite for TFLM's reason")
            lo, hi = 0, start
            while not prober.allocates(hi):
                if hi >= _MAX_ARENA:
                    raise ModelFormatError(
                        f"{where}: TFLM does not allocate the model even with {_MAX_ARENA} bytes of arena; "
                        "run `tinyprec inspect` on the .tflite for TFLM's reason"
                    )
                lo, hi = hi, hi * 2
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if prober.allocates(mid) else (mid, hi)
        finally:
            prober.close()
    return hi
