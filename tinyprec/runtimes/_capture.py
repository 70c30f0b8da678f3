"""Capture what native code writes to the process's stdout/stderr file descriptors.

TFLM's C++ runtime prints allocation failures and the recording allocator's report with
``printf``; Python's ``sys.stdout`` never sees them. Library code must not print, so the
runners send those lines into a temporary file and return them instead.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def _flush_native() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - libc without fflush symbol
        pass


@contextmanager
def captured_native_output() -> Iterator[list[str]]:
    """Redirect fds 1 and 2 into a temp file for the block; the yielded list receives the text.

    >>> with captured_native_output() as out:
    ...     _ = os.write(1, b"hello\\n")
    >>> out[0]
    'hello\\n'
    """
    sink: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    _flush_native()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            _flush_native()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", errors="replace"))
