"""The Python API, one function per stage, for a user's own nn.Module and data (no recipe needed).

``data`` is a :class:`tinyprec.data.Dataset`, a tuple ``(x, y)`` of numpy arrays (raw inputs in torch
layout and integer labels; split and normalized for you, seeded), or a torch DataLoader yielding
``(x, y)`` batches. Every stage writes its files under ``out_dir`` exactly as ``tinyprec run`` does.

A whole pipeline on scikit-learn's digits with a small model of one's own (tests/test_api.py executes
this very block, so it stays true)::

    import numpy as np, torch
    from sklearn.datasets import load_digits
    import tinyprec
    from tinyprec.recipe import QuantConfig, TrainConfig

    digits = load_digits()
    x, y = digits.images[:, None].astype(np.float32), digits.target   # raw 0..16 pixels, NCHW
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))
    out = "export/my_digits"
    trained = tinyprec.train(model, (x, y), config=TrainConfig(epochs=8), out_dir=out)
    quantized = tinyprec.quantize(trained.model, (x, y), config=QuantConfig(epochs=1), out_dir=out)
    exported = tinyprec.export(quantized, (x, y), model_fp32=trained.model, out_dir=out)
    result = tinyprec.validate(out, (x, y), model_fp32=trained.model)
    print(result.report["accuracy"]["tflm"], result.report["gate"]["passed"])

"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    import torch

    from tinyprec.data import Dataset
    from tinyprec.exporting.stage import ExportResult
    from tinyprec.pipeline import RunResult
    from tinyprec.quant.bits import LayerPrecision
    from tinyprec.quant.stage import QuantResult
    from tinyprec.recipe import ExportConfig, QuantConfig, TrainConfig, ValidateConfig
    from tinyprec.training import TrainResult
    from tinyprec.validation import ValidationResult

DEFAULT_OUT = Path("export") / "model"


def as_dataset(data: Any, *, seed: int = 0, name: str = "arrays") -> "Dataset":
    """A Dataset from a Dataset, an ``(x, y)`` tuple of arrays, or a DataLoader of ``(x, y)`` batches."""
    from tinyprec.data import Dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        if y is None:  # no labels: an autoencoder, validated on its reconstruction error
            return Dataset.from_arrays(np.asarray(x), None, name=name, seed=seed, task="autoencoder")
        return Dataset.from_arrays(np.asarray(x), np.asarray(y), name=name, seed=seed)
    try:
        from torch.utils.data import DataLoader
    except ImportError:  # pragma: no cover
        DataLoader = ()  # type: ignore[assignment,misc]
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for i, batch in enumerate(data):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise DataError(f"DataLoader batch {i}: expected (x, y) pairs, got {type(batch).__name__}")
            xs.append(np.asarray(batch[0].cpu() if hasattr(batch[0], "cpu") else batch[0], dtype=np.float32))
            ys.append(np.asarray(batch[1].cpu() if hasattr(batch[1], "cpu") else batch[1]))
        if not xs:
            raise DataError("DataLoader yielded no batches; give it a non-empty dataset")
        return Dataset.from_arrays(np.concatenate(xs), np.concatenate(ys), name=name, seed=seed)
    raise DataError(f"data: got {type(data).__name__}; pass a tinyprec Dataset, an (x, y) tuple of arrays "
                    "or a DataLoader of (x, y) batches")


def train(model: "torch.nn.Module", data: Any, *, config: "TrainConfig | None" = None,
          out_dir: str | Path = DEFAULT_OUT, seed: int = 0, resume: bool = False,
          progress: Callable[[Any], None] | None = None, check_ops: bool = True) -> "TrainResult":
    """Stage 1: mixed-precision training of ``model`` (FP32 master weights; bf16/fp16 autocast per policy).

    Writes out_dir/train/ (checkpoint.pt, model_fp32.pt, metrics.json). See :mod:`tinyprec.api`.
    First (``check_ops``) it exports the model on an example batch and raises one
    :class:`~tinyprec.errors.UnsupportedOpsError` naming every op stage 2 cannot convert, before training.
    """
    from tinyprec.recipe import TrainConfig
    from tinyprec.training import train_model

    dataset = as_dataset(data, seed=seed)
    if check_ops:
        from tinyprec.quant.opcheck import check_before_training

        check_before_training(model, dataset)
    return train_model(model, dataset, config or TrainConfig(), Path(out_dir), seed=seed,
                       resume=resume, progress=progress)


def quantize(model: "torch.nn.Module", data: Any, *, config: "QuantConfig | None" = None,
             out_dir: str | Path = DEFAULT_OUT, seed: int = 0, mode: str | None = None,
             progress: Callable[[str], None] | None = None,
             assignment: "Mapping[str, LayerPrecision] | None" = None) -> "QuantResult":
    """Stage 2: QAT (or PTQ with ``mode="ptq"``) of a trained FP32 model to the TFLite int8 spec.

    Writes out_dir/quant/ (converted.pt2, qparams.json, metrics.json). Per-layer precision: ``config.bits``
    and ``config.overrides``, or ``assignment`` (module path -> :class:`tinyprec.quant.bits.LayerPrecision`).
    """
    from tinyprec.quant import quantize_model
    from tinyprec.recipe import QuantConfig

    return quantize_model(model, as_dataset(data, seed=seed), config or QuantConfig(), Path(out_dir), seed=seed,
                          mode=mode, progress=progress, assignment=assignment)


def export(quantized: Any, data: Any, *, model_fp32: "torch.nn.Module | None" = None,
           config: "ExportConfig | None" = None, out_dir: str | Path = DEFAULT_OUT, name: str = "model",
           seed: int = 0, progress: Callable[[str], None] | None = None) -> "ExportResult":
    """Stage 3: int8 .tflite, int8 QDQ ONNX, FP32 ONNX (when ``model_fp32`` is given), firmware bundle, manifest.

    ``quantized`` is the QuantResult of :func:`quantize` or a converted GraphModule; ``data`` gives the
    preprocessing record and the golden vectors.
    """
    from tinyprec.exporting.stage import export_model

    return export_model(None, quantized, model_fp32, as_dataset(data, seed=seed), config, Path(out_dir),
                        name=name, progress=progress)


def validate(out_dir: str | Path, data: Any, *, model_fp32: "torch.nn.Module", config: "ValidateConfig | None" = None,
             name: str = "model", seed: int = 0,
             progress: Callable[[str, int, int], None] | None = None) -> "ValidationResult":
    """Stage 4: every runner (FP32, fake-quant, TFLM, TF Lite, ONNX Runtime, emulator) on the held-out split.

    Reads out_dir/model and out_dir/quant, writes out_dir/report; a failed gate is in the result
    (``result.raise_for_gate()`` raises it).
    """
    from tinyprec.recipe import ValidateConfig
    from tinyprec.validation.artifacts import validate_artifacts

    return validate_artifacts(Path(out_dir), model_fp32, as_dataset(data, seed=seed), config or ValidateConfig(),
                              name=name, progress=progress)


def run(recipe: str | Path, *, out_dir: str | Path | None = None, stages: str | None = None,
        resume: bool = False, force: bool = False) -> "RunResult":
    """All four stages of a recipe, skipping those already finished (see :mod:`tinyprec.pipeline`).

    >>> import tinyprec
    >>> tinyprec.run  # doctest: +ELLIPSIS
    <function run at ...>
    """
    from tinyprec.pipeline import run_recipe

    return run_recipe(recipe, out_dir=out_dir, stages=stages, resume=resume, force=force)
