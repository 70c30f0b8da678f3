"""Stage stamps: a stage counts as finished only when its stamp exists and still matches.

A stamp (``<out>/.stages/<stage>.json``) is written atomically after all of the stage's artifacts, and
records the hash of the stage's inputs (its recipe sections, the upstream stamps, the tinyprec version)
and the sha256 of every artifact. Killing a run at any moment therefore leaves either a complete,
stamped stage or an unstamped one that the next run redoes; an artifact edited or deleted after the
stamp makes the stamp stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyprec._io import atomic_write_text, sha256_file

STAMP_DIR = ".stages"


def inputs_hash(*parts: Any) -> str:
    """A stable hash of JSON-able parts (recipe sections as dicts, upstream hashes, versions)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Stamp:
    stage: str
    inputs: str
    artifacts: Mapping[str, Mapping[str, str]]  # relative path -> {"sha256": ...}
    summary: Mapping[str, Any]

    @property
    def digest(self) -> str:
        """What downstream stages hash: the inputs plus the exact bytes produced."""
        return inputs_hash(self.inputs, {k: v["sha256"] for k, v in sorted(self.artifacts.items())})


def _stamp_path(out_dir: Path, stage: str) -> Path:
    return Path(out_dir) / STAMP_DIR / f"{stage}.json"


def write_stamp(out_dir: Path, stage: str, inputs: str, files: list[Path], summary: Mapping[str, Any]) -> Stamp:
    out_dir = Path(out_dir)
    artifacts = {
        Path(f).resolve().relative_to(out_dir.resolve()).as_posix(): {"sha256": sha256_file(Path(f))} for f in files
    }
    stamp = Stamp(stage, inputs, artifacts, dict(summary))
    payload = {"stage": stage, "inputs": inputs, "artifacts": artifacts, "summary": stamp.summary}
    atomic_write_text(_stamp_path(out_dir, stage), json.dumps(payload, indent=2, sort_keys=True, default=str))
    return stamp


def read_valid_stamp(out_dir: Path, stage: str, inputs: str) -> Stamp | None:
    """The stage's stamp if it matches ``inputs`` and every artifact is present and unchanged, else None."""
    path = _stamp_path(out_dir, stage)
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if payload.get("inputs") != inputs:
        return None
    artifacts = payload.get("artifacts", {})
    for rel, meta in artifacts.items():
        f = Path(out_dir) / rel
        if not f.is_file() or sha256_file(f) != meta.get("sha256"):
            return None
    return Stamp(stage, inputs, artifacts, payload.get("summary", {}))


def clear_stamp(out_dir: Path, stage: str) -> None:
    _stamp_path(out_dir, stage).unlink(missing_ok=True)
