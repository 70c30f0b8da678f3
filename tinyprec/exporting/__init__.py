"""Stage 3: export orchestration (lower, writers, firmware bundle, manifest).

API: :func:`export_model` (recipe or None, QuantResult or converted GraphModule, FP32 model, dataset,
ExportConfig, out_dir) and :func:`export_converted` (no recipe) -> :class:`ExportResult`.
torch, TensorFlow and tflite-micro load only when an export runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyprec.exporting.stage import ExportResult, export_converted, export_model

_LAZY = {"export_model", "export_converted", "ExportResult"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from tinyprec.exporting import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'tinyprec.exporting' has no attribute {name!r}")


__all__ = ["ExportResult", "export_converted", "export_model"]
