"""Stage 4 on a foreign .tflite (:func:`validate_tflite`), and the helpers every entry point shares.

Run folders are validated by :mod:`tinyprec.validation.artifacts`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec import manifest
from tinyprec.errors import ArtifactError, DataError, ModelFormatError, TinyprecError
from tinyprec.ir import INTEGER_KINDS
from tinyprec.validation.report import write_reports
from tinyprec.validation.runners import LAYOUT_BY_RANK, Feed, Models, dequantize, make_feed
from tinyprec.validation.validate import (
    GateSettings,
    Progress,
    Task,
    ValidationResult,
    evaluate,
    graph_with_sources,
)


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; run `tinyprec {stage}` first (or pass --out with the run folder)")
    return path


def _read_graph(tflite: bytes, where: str) -> Any:
    from tinyprec.formats.tflite_reader import read_tflite

    graph = read_tflite(tflite, where=where)
    kind = graph.metadata.get("kind") or graph.quant_kind()
    if kind not in INTEGER_KINDS:
        raise ModelFormatError(f"{where}: a {kind} model; MCU validation needs a fully integer-quantized .tflite, "
                               "int8 or int16x8 activations (quantize with tinyprec or the TF converter's "
                               "full-integer mode)")
    # The emulator's prepare checks what TFLM's Prepare checks, in Python: an inconsistent file is refused
    # here with a reason instead of aborting the process inside TFLM's native code.
    from tinyprec.emulator import Emulator

    try:
        Emulator(graph)
    except TinyprecError as err:
        raise ModelFormatError(f"{where}: {err}") from err
    return graph


def settings_from(cfg: Any, *, max_drop: float | None = None, board: str | None = None) -> GateSettings:
    """Gate settings from a recipe's ValidateConfig with CLI overrides."""
    return GateSettings(
        max_drop=float(cfg.max_drop if max_drop is None else max_drop),
        board=board or cfg.board,
        target=cfg.target,
        ram_budget=cfg.ram_budget,
        flash_budget=cfg.flash_budget,
        max_samples=cfg.max_samples,
        max_recon_increase=float(getattr(cfg, "max_recon_increase", 10.0)),
    )


def _check_settings(settings: GateSettings) -> None:
    """Fail fast on a bad board or target, before any runner starts."""
    from tinyprec.mcu.boards import get_board, target_for
    from tinyprec.mcu.latency import parse_target

    get_board(settings.board)
    parse_target(target_for(settings.target))
    if not np.isfinite(settings.max_drop):
        raise DataError(f"max_drop = {settings.max_drop} must be a finite number of accuracy points")


def _finish(report: dict[str, Any], checks: list[Any], out_dir: Path) -> ValidationResult:
    paths = write_reports(report, out_dir / "report")
    manifest.record(out_dir, paths, {"validation": {"passed": report["gate"]["passed"]}})
    return ValidationResult(report=json.loads((out_dir / "report" / "report.json").read_text()),
                            checks=tuple(checks), paths=paths)


def load_npz(path: Path, where: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """x (raw inputs), y (labels) and the optional extras (mean, std, task, class_labels) of a .npz."""
    where = where or str(path)
    if not Path(path).is_file():
        raise ArtifactError(f"{where}: no such file; pass a .npz with arrays x (raw inputs) and y (labels)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: not a readable .npz ({str(err).splitlines()[0][:100]})") from err
    for key in ("x", "y"):
        if key not in data:
            raise DataError(f"{where}: missing array '{key}'; the .npz needs x (raw inputs, N x ...) and y (labels, N)")
    x, y = data.pop("x"), data.pop("y").reshape(-1)
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: x has shape {x.shape} and y {y.shape}; both need the same leading sample count")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))[0][0])
        raise DataError(f"{where}: x[{bad}] holds NaN or inf; clean the data")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: y must hold integer labels, got {y.dtype}")
    return x, y.astype(np.int64), data


def validate_tflite(
    tflite_path: Path | str,
    data_path: Path | str,
    *,
    out_dir: Path | str | None = None,
    settings: GateSettings | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """Validate a foreign int8 .tflite on raw data: TFLM, TF Lite and the emulator, resources, report.

    ``data_path`` is a .npz with ``x`` (raw inputs, N x the model's input shape or as many elements;
    int8 data is fed as is, float data is normalized with optional scalars ``mean``/``std`` and quantized
    with the model's input qparams) and ``y`` (labels; anomaly flags for an autoencoder, ``task`` =
    "autoencoder"). Reports go to ``out_dir`` (default export/<model stem>)/report.
    """
    tflite_path = Path(tflite_path)
    settings = settings or GateSettings()
    _check_settings(settings)
    if not tflite_path.is_file():
        raise ArtifactError(f"{tflite_path}: no such file; pass the path of an int8 .tflite model")
    tflite = tflite_path.read_bytes()
    graph = _read_graph(tflite, str(tflite_path))
    x, y, extra = load_npz(Path(data_path))
    if settings.max_samples is not None:
        x, y = x[: settings.max_samples], y[: settings.max_samples]
    out_shape = graph.tensors[graph.outputs[0]].shape
    in_shape = graph.tensors[graph.inputs[0]].shape
    default_task = "autoencoder" if int(np.prod(out_shape)) == int(np.prod(in_shape)) else "classification"
    task_kind = str(extra.get("task", default_task))
    num_classes = int(np.prod(out_shape[1:])) if task_kind == "classification" else 0
    if task_kind == "classification" and (y.min(initial=0) < 0 or y.max(initial=0) >= num_classes):
        raise DataError(f"{data_path}: labels must be in [0, {num_classes}) for this model's {num_classes} outputs")
    models = Models(graph=graph, tflite=tflite, where=str(tflite_path))
    if x.dtype == np.int8:
        shape = (x.shape[0], *in_shape[1:])
        if x[0].size != int(np.prod(in_shape[1:])):
            raise DataError(f"{data_path}: samples have shape {x.shape[1:]}; the model's input is {tuple(in_shape[1:])}")
        q = x.reshape(shape)
        qp = graph.tensors[graph.inputs[0]].qparams
        feed = Feed(None, dequantize(q, qp) if qp is not None else q.astype(np.float32), q, q)
    else:
        mean, std = float(extra.get("mean", 0.0)), float(extra.get("std", 1.0))
        feed = make_feed(models, None, ((x.astype(np.float32) - mean) / std).astype(np.float32))
    labels = tuple(str(s) for s in extra["class_labels"]) if "class_labels" in extra else ()
    task = Task(task_kind, y, num_classes, labels)
    out = Path(out_dir) if out_dir is not None else Path("export") / tflite_path.stem
    report, checks = evaluate(models, feed, task, settings, name=tflite_path.stem, mode="foreign",
                              progress=progress)
    return _finish(report, checks, out)
