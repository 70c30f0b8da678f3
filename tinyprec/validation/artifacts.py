"""Validate a run folder's artifacts against an FP32 model object (the Python API's path, no recipe).

:func:`tinyprec.validation.validate_model` rebuilds the FP32 model from a recipe; this entry takes the
model and the data directly, so ``tinyprec.validate`` works on a user's own nn.Module and arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.validation.api import _check_settings, _finish, _need, _read_graph, settings_from
from tinyprec.validation.runners import LAYOUT_BY_RANK, Models, make_feed
from tinyprec.validation.validate import Progress, Task, ValidationResult, evaluate, graph_with_sources


def validate_artifacts(out_dir: Path, model_fp32: Any, dataset: Any, cfg: Any, *, name: str = "model",
                       progress: Progress | None = None) -> ValidationResult:
    """Run every runner on ``dataset``'s test split for the files in ``out_dir`` and write out_dir/report.

    ``cfg`` is a :class:`tinyprec.recipe.ValidateConfig`. Needs out_dir/model/model_int8.tflite; uses
    quant/converted.pt2, the ONNX files and ir_sources.json when present.
    """
    out = Path(out_dir)
    settings = settings_from(cfg)
    _check_settings(settings)
    tflite_path = _need(out / "model" / "model_int8.tflite", "export")
    tflite = tflite_path.read_bytes()
    graph = _read_graph(tflite, str(tflite_path))
    sources_path = out / "model" / "ir_sources.json"
    sources = json.loads(sources_path.read_text()) if sources_path.is_file() else {}
    graph_with_sources(graph, sources)
    fake_quant = None
    if (out / "quant" / "converted.pt2").is_file():
        from tinyprec.quant import load_converted

        fake_quant = load_converted(out)
    split = dataset.test
    n = len(split) if settings.max_samples is None else min(len(split), settings.max_samples)
    onnx_int8, onnx_fp32 = out / "model" / "model_int8.onnx", out / "model" / "model_fp32.onnx"
    models = Models(
        graph=graph, tflite=tflite,
        onnx_int8=onnx_int8.read_bytes() if onnx_int8.is_file() else None,
        onnx_fp32=onnx_fp32.read_bytes() if onnx_fp32.is_file() else None,
        torch_fp32=model_fp32.eval() if model_fp32 is not None else None, fake_quant=fake_quant,
        input_layout=LAYOUT_BY_RANK[len(dataset.input_shape) + 1],
        output_layout=graph.metadata.get("output_layout", "NF"), where=str(tflite_path),
    )
    feed = make_feed(models, dataset.preprocess.apply(split.x[:n]))
    labels = np.zeros(n, np.int64) if split.y is None else np.asarray(split.y[:n])
    task = Task(dataset.task, labels, dataset.num_classes, tuple(dataset.class_labels))
    report, checks = evaluate(models, feed, task, settings, name=name, mode="api", sources=sources,
                              progress=progress)
    return _finish(report, checks, out)
