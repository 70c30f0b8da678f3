"""Training checkpoints: written atomically every epoch, loaded with ``weights_only=True``.

A checkpoint holds only tensors and plain containers (state dicts, RNG state, numbers, strings), so
``torch.load(weights_only=True)`` reads it and a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from tinyprec._io import atomic_path
from tinyprec.errors import ArtifactError, ModelFormatError

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus a format tag) to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only); ModelFormatError if it is damaged or of another kind."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; run `tinyprec train` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFormatError(
            f"{path}: not a loadable tinyprec checkpoint ({first[:160]}); delete it and train again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFormatError(f"{path}: not a tinyprec checkpoint (format tag missing); delete it and train again")
    return state


def load_weights(path: Path) -> dict[str, Any]:
    """Load a saved state_dict (model_fp32.pt or a checkpoint's model) with weights_only=True."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: weights not found; run `tinyprec train` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFormatError(f"{path}: not loadable weights ({first[:160]}); train again") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelFormatError(f"{path}: holds {type(state).__name__}, not a state_dict")
    return state
