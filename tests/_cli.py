"""The tinyprec CLI run in the test process (heavy imports are shared across tests)."""

from __future__ import annotations

import pytest

from tinyprec.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``tinyprec ARGV``."""
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
