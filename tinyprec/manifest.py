"""manifest.json: every artifact of a run folder by role, with bytes and sha256, plus run facts.

Stages call :func:`record` after writing their artifacts; the file is rewritten atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinyprec._io import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"


def load(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return {"artifacts": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    data.setdefault("artifacts", {})
    return data


def record(out_dir: Path, artifacts: Mapping[str, Path], facts: Mapping[str, Any] | None = None) -> Path:
    """Add ``artifacts`` (role -> file inside out_dir) and top-level ``facts`` to out_dir/manifest.json."""
    out_dir = Path(out_dir)
    data = load(out_dir)
    for role, path in artifacts.items():
        path = Path(path)
        data["artifacts"][role] = {
            "path": path.resolve().relative_to(out_dir.resolve()).as_posix(),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    for key, value in (facts or {}).items():
        data[key] = value
    return atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(data, indent=2, sort_keys=True) + "\n")
