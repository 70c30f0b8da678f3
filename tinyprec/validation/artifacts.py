"""Stage 4 on a run folder: the artifacts of stages 1-3 against the FP32 baseline, on held-out data.

:func:`validate_model` works from a recipe (it rebuilds the FP32 model from train/model_fp32.pt and
loads the recipe's data); :func:`validate_artifacts` from a model object and a Dataset (the Python API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import ModelFormatError
from tinyprec.validation.api import _check_settings, _finish, _need, _read_graph, settings_from
from tinyprec.validation.runners import LAYOUT_BY_RANK, Models, make_feed
from tinyprec.validation.validate import Progress, Task, ValidationResult, evaluate, graph_with_sources

if TYPE_CHECKING:  # pragma: no cover
    from tinyprec.data import Dataset
    from tinyprec.recipe import ValidateConfig


def validate_artifacts(
    out_dir: Path,
    model_fp32: Any,
    dataset: "Dataset",
    cfg: "ValidateConfig",
    *,
    name: str = "model",
    max_drop: float | None = None,
    board: str | None = None,
    progress: Progress | None = None,
    mode: str = "api",
) -> ValidationResult:
    """Validate out_dir/model (and out_dir/quant when present) with ``model_fp32`` as the baseline.

    Runs every runner on ``dataset.test`` (at most ``cfg.max_samples`` samples), writes
    out_dir/report/report.{json,md,html}, records them in manifest.json. ``max_drop`` and ``board``
    override the config. Does not raise on a failed gate: call ``result.raise_for_gate()``.
    """
    out = Path(out_dir)
    settings = settings_from(cfg, max_drop=max_drop, board=board)
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
        torch_float=_float_twin(out, model_fp32),
        input_layout=LAYOUT_BY_RANK[len(dataset.input_shape) + 1],
        output_layout=graph.metadata.get("output_layout", "NF"), where=str(tflite_path),
        mcu=_mcu_options(cfg, settings.target, out),
    )
    feed = make_feed(models, dataset.preprocess.apply(split.x[:n]))
    labels = np.zeros(n, np.int64) if split.y is None else np.asarray(split.y[:n])
    task = Task(dataset.task, labels, dataset.num_classes, tuple(dataset.class_labels))
    report, checks = evaluate(models, feed, task, settings, name=name, mode=mode, sources=sources,
                              progress=progress)
    qmetrics = out / "quant" / "metrics.json"
    if qmetrics.is_file():  # the precision search's trade-off curve, when stage 2 ran one
        found = json.loads(qmetrics.read_text()).get("search")
        if found:
            report["search"] = found
    return _finish(report, checks, out)


def _mcu_options(cfg: "ValidateConfig", target: str, out: Path) -> Any:
    """The `mcu` runner's options: the tree from $TINYPREC_TFLM_TREE or [validate] tflm_tree, the run's bundle."""
    from tinyprec.mcu.emulated import options_from_env

    return options_from_env(getattr(cfg, "tflm_tree", None), target=target,
                            kernels=getattr(cfg, "mcu_kernels", "cmsis-nn"), bundle_dir=out / "firmware",
                            build_dir=out / "mcu")


def _float_twin(out: Path, model_fp32: Any) -> Any:
    """The network with its own (QAT-trained) float weights from quant/model_float.pt, or None (PTQ, or
    a run from before the file existed): the per-layer SQNR reference."""
    path = out / "quant" / "model_float.pt"
    if model_fp32 is None or not path.is_file():
        return None
    import torch

    from tinyprec.quant.capture import with_biases

    twin = with_biases(model_fp32)
    try:
        twin.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    except (RuntimeError, OSError, KeyError, EOFError, ValueError) as err:
        raise ModelFormatError(f"{path}: cannot load the QAT float weights ({str(err).splitlines()[0][:120]}); "
                               "re-run `tinyprec qat`") from err
    return twin.eval()


def validate_model(
    recipe: Any,
    out_dir: Path | str | None = None,
    *,
    max_drop: float | None = None,
    board: str | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """Validate the artifacts of a recipe's run folder against the FP32 baseline; write and record the reports.

    ``recipe`` is a :class:`tinyprec.recipe.Recipe` or a recipe path; ``out_dir`` defaults to
    ``export/<recipe name>``. Needs model/model_int8.tflite and train/model_fp32.pt; uses
    quant/converted.pt2, model/model_int8.onnx, model/model_fp32.onnx and model/ir_sources.json when
    present. Does not raise on a failed gate: call ``result.raise_for_gate()``.
    """
    from tinyprec.recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir) if out_dir is not None else Path("export") / recipe.name
    _check_settings(settings_from(recipe.validate, max_drop=max_drop, board=board))
    tflite_path = _need(out / "model" / "model_int8.tflite", "export")
    weights = _need(out / "train" / "model_fp32.pt", "train")
    _read_graph(tflite_path.read_bytes(), str(tflite_path))  # a bad model fails before torch loads

    import torch

    from tinyprec.data import load_dataset
    from tinyprec.recipe import build_model_for

    model = build_model_for(recipe)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    except (RuntimeError, OSError, KeyError, EOFError, ValueError) as err:
        raise ModelFormatError(f"{weights}: cannot load the FP32 weights ({str(err).splitlines()[0][:120]}); "
                               "re-run `tinyprec train`") from err
    base = recipe.path.parent if getattr(recipe, "path", None) else Path(".")
    dataset = load_dataset(recipe.data, recipe.seed, base_dir=base)
    return validate_artifacts(out, model, dataset, recipe.validate, name=recipe.name, max_drop=max_drop,
                              board=board, progress=progress, mode="recipe")
