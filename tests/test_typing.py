"""mypy stays clean on the torch-free layers (ir, formats, emulator, optable, mcu, runtimes), as docs/DESIGN.md asks."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")
REPO = Path(__file__).resolve().parents[1]


def test_mypy_clean_on_the_torch_free_layers() -> None:
    paths = [str(REPO / "tinyprec" / p) for p in ("ir", "formats", "emulator", "optable", "mcu", "runtimes")]
    out, err, status = api.run([*paths, "--follow-imports=silent",
                                "--config-file", str(REPO / "pyproject.toml")])
    assert status == 0, out + err
