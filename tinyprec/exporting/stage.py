"""Stage 3: lower the converted model to the IR and write every deployable artifact.

Everything is computed in memory first (IR, .tflite, ONNX files, arena, golden vectors, firmware
texts) and written into a staging folder inside ``out_dir``; only when all of it exists are the files
moved into ``model/`` and ``firmware/`` (each move an atomic rename) and ``manifest.json`` updated.
An error therefore leaves the previous export, if any, untouched and no partial files behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec import manifest
from tinyprec._io import atomic_write_bytes, atomic_write_text
from tinyprec.errors import DataError
from tinyprec.ir import Graph

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx

    from tinyprec.data import Dataset
    from tinyprec.recipe import ExportConfig, Recipe

Progress = Callable[[str], None]

MODEL_DIR = "model"
FIRMWARE_DIR = "firmware"
FILES = {
    "tflite_int8": "model_int8.tflite",
    "onnx_int8": "model_int8.onnx",
    "onnx_fp32": "model_fp32.onnx",
    "ir_sources": "ir_sources.json",
}
_VERSIONED = ("torch", "torchao", "tensorflow-cpu", "tflite-micro", "onnx", "onnxruntime", "numpy")
CHECK_SAMPLES = 16


@dataclass(frozen=True)
class ExportResult:
    """What the export stage wrote (absolute paths) and the facts it measured."""

    graph: Graph
    tflite_path: Path
    onnx_int8_path: Path | None
    onnx_fp32_path: Path | None
    ir_sources_path: Path
    firmware: Mapping[str, Path]
    arena_bytes: int
    manifest_path: Path
    tflite_bytes: int
    const_bytes: int
    # converted model vs TFLM on a few test samples (int8 I/O only): exact fraction, max |diff|
    check: Mapping[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    from tinyprec import __version__

    found = {"tinyprec": __version__}
    for dist in _VERSIONED:
        try:
            found[dist.removesuffix("-cpu")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "tensorflow-cpu":
                try:
                    found["tensorflow"] = metadata.version("tensorflow")
                except metadata.PackageNotFoundError:
                    pass
    return found


def _samples(dataset: "Dataset", n: int) -> np.ndarray:
    split = dataset.test if len(dataset.test) else dataset.train
    if len(split) == 0:
        raise DataError(f"dataset '{dataset.name}' has no samples to export golden vectors from")
    return dataset.preprocess.apply(split.x[: max(n, 1)])


def _qparams_fact(graph: Graph, name: str) -> dict[str, Any]:
    t = graph.tensors[name]
    assert t.qparams is not None
    return {"tensor": name, "shape": list(t.shape), "dtype": t.dtype.value,
            "scale": float(t.qparams.scale[0]), "zero_point": int(t.qparams.zero_point[0])}


def export_model(recipe: "Recipe | None", quantized: Any, model_fp32: "torch.nn.Module | None",
                 dataset: "Dataset", cfg: "ExportConfig | None", out_dir: Path, *,
                 name: str | None = None, progress: Progress | None = None) -> ExportResult:
    """Export a quantized model: int8 .tflite, int8 ONNX (QDQ), FP32 ONNX, firmware bundle, manifest.

    ``quantized`` is a QuantResult (its ``converted`` graph is used) or the converted GraphModule
    itself; ``model_fp32`` is the stage-1 model for the FP32 ONNX baseline (None skips that file);
    ``cfg`` defaults to ``recipe.export``; ``name`` to the recipe's name. Files go under
    ``out_dir/model`` and ``out_dir/firmware``; ``out_dir/manifest.json`` records them by role.
    """
    from tinyprec.recipe import ExportConfig

    converted = getattr(quantized, "converted", quantized)
    if cfg is None:
        cfg = recipe.export if recipe is not None else ExportConfig()
    model_name = name or (recipe.name if recipe is not None else "model")
    split = getattr(recipe.quant, "int4_max_scratch", None) if recipe is not None else None
    return export_converted(converted, model_fp32, dataset, cfg, out_dir, name=model_name, progress=progress,
                            int4_max_scratch=split)


def export_converted(converted: "fx.GraphModule", model_fp32: "torch.nn.Module | None", dataset: "Dataset",
                     cfg: "ExportConfig", out_dir: Path, *, name: str = "model",
                     progress: Progress | None = None, int4_max_scratch: int | None = None) -> ExportResult:
    """:func:`export_model` without a recipe: a converted GraphModule, the FP32 model, data, config.
    ``int4_max_scratch``: split larger INT4 layers (:func:`tinyprec.lowering.split.split_int4_layers`)."""
    import torch

    from tinyprec.formats.firmware import write_bundle
    from tinyprec.formats.onnx_qdq import write_onnx_qdq
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.lowering.driver import lower_to_ir, sources_of
    from tinyprec.runtimes.tflm import run_tflm, tflm_arena_bytes

    say = progress or (lambda _msg: None)
    if cfg.golden_vectors < 1:
        raise DataError(f"export.golden_vectors is {cfg.golden_vectors}; use at least 1")
    x = _samples(dataset, max(cfg.golden_vectors, CHECK_SAMPLES))
    say("lowering the converted graph to the int8 IR")
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name=name)
    if int4_max_scratch is not None:
        from tinyprec.lowering.split import split_int4_layers

        graph = split_int4_layers(graph, int4_max_scratch)
    say("writing the int8 .tflite")
    tflite = write_tflite(graph, float_io=cfg.float_io)
    onnx_int8 = onnx_fp32 = None
    if cfg.onnx:
        say("writing the int8 QDQ ONNX and the FP32 ONNX")
        onnx_int8 = write_onnx_qdq(graph)
        if model_fp32 is not None:
            from tinyprec.exporting.fp32_onnx import fp32_onnx_bytes

            onnx_fp32 = fp32_onnx_bytes(model_fp32, torch.from_numpy(x[:1]))
    say("measuring the TFLM arena")
    arena = tflm_arena_bytes(tflite)
    golden_in, golden_out, check = _golden(converted, graph, tflite, x, cfg, run_tflm)
    sources = json.dumps(sources_of(graph), indent=2, sort_keys=True) + "\n"

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        staged: dict[str, Path] = {"tflite_int8": atomic_write_bytes(staging / FILES["tflite_int8"], tflite),
                                   "ir_sources": atomic_write_text(staging / FILES["ir_sources"], sources)}
        if onnx_int8 is not None:
            staged["onnx_int8"] = atomic_write_bytes(staging / FILES["onnx_int8"], onnx_int8)
        if onnx_fp32 is not None:
            staged["onnx_fp32"] = atomic_write_bytes(staging / FILES["onnx_fp32"], onnx_fp32)
        say("writing the firmware bundle")
        fw_staged = write_bundle(
            graph, tflite, staging / FIRMWARE_DIR, arena_bytes=arena, preprocess=dataset.preprocess,
            class_labels=list(dataset.class_labels), golden_inputs=golden_in, golden_outputs=golden_out,
            arena_margin_bytes=cfg.arena_margin_bytes,
        )
        final = {role: _move(p, out_dir / MODEL_DIR / p.name) for role, p in staged.items()}
        firmware = {role: _move(p, out_dir / FIRMWARE_DIR / p.name) for role, p in fw_staged.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for role in ("onnx_int8", "onnx_fp32"):  # an earlier export's file would now be stale
        if role not in final:
            (out_dir / MODEL_DIR / FILES[role]).unlink(missing_ok=True)

    facts = {
        "model": name,
        "input": _qparams_fact(graph, graph.inputs[0]) | {"layout": graph.metadata.get("input_layout")},
        "output": _qparams_fact(graph, graph.outputs[0]) | {"layout": graph.metadata.get("output_layout")},
        "float_io": cfg.float_io,
        "preprocess": dataset.preprocess.to_dict(),
        "class_labels": list(dataset.class_labels),
        "ops": [t.value for t in graph.op_types()],
        "arena_bytes": arena,
        "arena_margin_bytes": cfg.arena_margin_bytes,
        "const_bytes": graph.const_bytes(),
        "export_check": check,
        "versions": _versions(),
    }
    path = manifest.record(out_dir, {**final, **firmware}, facts)
    stale = [role for role in ("onnx_int8", "onnx_fp32") if role not in final]
    data = manifest.load(out_dir)
    if any(role in data["artifacts"] for role in stale):
        for role in stale:
            data["artifacts"].pop(role, None)
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return ExportResult(
        graph=graph, tflite_path=final["tflite_int8"], onnx_int8_path=final.get("onnx_int8"),
        onnx_fp32_path=final.get("onnx_fp32"), ir_sources_path=final["ir_sources"], firmware=firmware,
        arena_bytes=arena, manifest_path=path, tflite_bytes=len(tflite), const_bytes=graph.const_bytes(),
        check=check,
    )


def _move(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)
    return dst


def _golden(converted: "fx.GraphModule", graph: Graph, tflite: bytes, x: np.ndarray, cfg: "ExportConfig",
            run_tflm: Callable[..., np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Golden inputs/outputs in the file's I/O types (IR layout), and the converted-vs-TFLM check."""
    from tinyprec.lowering.check import quantize_input, reference_output
    from tinyprec.ir.layout import from_ir_layout, to_ir_layout

    in_qp = graph.tensors[graph.inputs[0]].qparams
    assert in_qp is not None
    layout_in = graph.metadata.get("input_layout", "NF")
    q = quantize_input(x, in_qp)
    if cfg.float_io:
        x_file = to_ir_layout(x.astype(np.float32), layout_in)
    else:
        x_file = to_ir_layout(q, layout_in)
    out = np.asarray(run_tflm(tflite, x_file))
    check: dict[str, Any] = {}
    if not cfg.float_io:
        ref = reference_output(converted, graph, q)
        got = from_ir_layout(out.reshape((out.shape[0], *graph.tensors[graph.outputs[0]].shape[1:])),
                             graph.metadata.get("output_layout", "NF"))
        diff = np.abs(got.astype(np.int64) - ref.reshape(got.shape).astype(np.int64))
        check = {"samples": int(x.shape[0]), "elements": int(diff.size),
                 "exact_fraction": float((diff == 0).mean()), "max_abs_diff": int(diff.max(initial=0))}
        from tinyprec.quant.exact import tflm_exact  # the same program in TFLM's integer arithmetic

        ref_exact = reference_output(tflm_exact(converted), graph, q)
        diff_exact = np.abs(got.astype(np.int64) - ref_exact.reshape(got.shape).astype(np.int64))
        check["tflm_exact_fraction"] = float((diff_exact == 0).mean())
        check["tflm_exact_max_abs_diff"] = int(diff_exact.max(initial=0))
    n = cfg.golden_vectors
    return x_file[:n], out[:n], check
