"""Stage 2 end to end: export, quantize (QAT or PTQ) with the TFLite int8 quantizer, convert, write artifacts."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyprec import _io
from tinyprec.errors import RecipeError
from tinyprec.quant.loops import Progress

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from torch import fx

    from tinyprec.data import Dataset
    from tinyprec.quant.bits import LayerPrecision
    from tinyprec.recipe import QuantConfig

MODES = ("qat", "ptq")
FLOAT_NAME = "model_float.pt"  # the QAT-trained float weights (the per-layer SQNR reference)


@dataclass(frozen=True)
class QuantResult:
    """What stage 2 produced. Accuracies are top-1 percent on the test split (for an autoencoder:
    reconstruction MSE, see ``metric``). ``fake_quant_accuracy`` is the converted Q/DQ program's,
    the numbers the int8 files must reproduce; ``ptq_accuracy`` is the PTQ baseline beside QAT."""

    converted: fx.GraphModule
    program_path: Path
    qparams_path: Path
    metrics_path: Path
    fp32_accuracy: float
    fake_quant_accuracy: float
    ptq_accuracy: float | None
    mode: str
    precision: str
    input_qparams: tuple[float, int]
    output_qparams: tuple[float, int]
    example_shape: tuple[int, ...]
    metric: str = "accuracy"
    epochs_run: int = 0
    selected: str = ""  # the program kept: "qat", or "ptq" when QAT did not beat PTQ on the validation split


def _prepare(model: torch.nn.Module, example: torch.Tensor, *, qat: bool, cfg: QuantConfig,
             assignment: Mapping[str, LayerPrecision] | None = None) -> fx.GraphModule:
    import tinyprec.quant._quiet_torchao  # noqa: F401
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from tinyprec.quant.capture import export_for_quant, with_biases
    from tinyprec.quant.observers import Calibration
    from tinyprec.quant.quantizer import TFLiteInt8Quantizer

    gm = export_for_quant(with_biases(model), example, train=qat)
    quantizer = TFLiteInt8Quantizer(qat=qat, per_channel=cfg.per_channel,
                                    calibration=Calibration(cfg.calibration), percentile=cfg.percentile,
                                    assignment=assignment, weight_scales=cfg.weight_scales,
                                    learn_scales=cfg.learn_scales)
    return _prepare_qat(gm, quantizer) if qat else prepare_pt2e(gm, quantizer)


def _prepare_qat(gm: fx.GraphModule, quantizer: Any) -> fx.GraphModule:
    """prepare_qat_pt2e's steps, with our simulated conv-bn folding in place of torchao's pattern matcher."""
    from torchao.quantization.pt2e.prepare import prepare

    from tinyprec.quant.bnfold import simulate_conv_bn

    meta = dict(gm.meta)
    scopes = {}
    for node in gm.graph.nodes:  # what torchao's prepare records per node: (module name, module type)
        stack = node.meta.get("nn_module_stack")
        last = list(stack.values())[-1] if stack else ("", type(None))
        scopes[node.name] = (str(last[0]).split(".")[-1], last[1])
    gm = quantizer.transform_for_annotation(gm)
    quantizer.annotate(gm)
    quantizer.validate(gm)
    simulate_conv_bn(gm)
    gm = prepare(gm, scopes, is_qat=True, obs_or_fq_callback=quantizer.prepare_obs_or_fq_callback)
    gm.meta.update(meta)
    return gm


def _convert(prepared: fx.GraphModule, *, qat: bool) -> fx.GraphModule:
    import tinyprec.quant._quiet_torchao  # noqa: F401
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from tinyprec.quant.bnfold import fold_bn_qat
    from tinyprec.quant.converted import tidy

    if qat:
        fold_bn_qat(prepared)  # before convert_pt2e, whose own QAT fold is very slow (see bnfold)
    return tidy(convert_pt2e(prepared, fold_quantize=True))


def float_twin_state(prepared: fx.GraphModule, model: torch.nn.Module) -> dict[str, Any] | None:
    """The QAT-trained float weights and BN statistics of a prepared program, keyed as the state dict of
    ``with_biases(model)`` without an output-softmax wrapper (None if a key is missing). Call before convert,
    which folds BN into the weights."""
    from tinyprec.quant.capture import _output_softmax_class, with_biases

    inner = model.model if isinstance(model, _output_softmax_class()) else model
    have = prepared.state_dict()
    out: dict[str, Any] = {}
    for key, value in with_biases(inner).state_dict().items():
        found = next((have[c] for c in (key, "model." + key) if c in have and have[c].shape == value.shape), None)
        if found is None:
            return None
        out[key] = found.detach().clone()
    return out


def layer_assignment(model: torch.nn.Module, example: torch.Tensor, cfg: QuantConfig,
                     assignment: Mapping[str, LayerPrecision] | None = None, *, exported: fx.GraphModule | None = None,
                     dataset: Dataset | None = None, progress: Progress | None = None) -> dict[str, LayerPrecision]:
    """Every conv/linear layer's precision: ``assignment`` (missing layers int8), else ``cfg.bits`` with
    ``cfg.overrides`` ("mixed": the search's choice when tinyprec.quant.search provides ``choose_assignment``).
    Refuses a precision TFLM cannot run on a layer (QuantSpecError naming the layer and the rule)."""
    from tinyprec.quant import bits as b
    from tinyprec.quant.capture import export_for_quant
    from tinyprec.quant.quantizer import check_layer, layer_nodes

    gm = exported if exported is not None else export_for_quant(model, example, train=False)
    nodes = layer_nodes(gm)
    if assignment is None and cfg.bits == "mixed" and dataset is not None:
        import importlib

        try:
            search = importlib.import_module("tinyprec.quant.search")
        except ImportError:
            search = None
        if search is not None and hasattr(search, "choose_assignment"):
            assignment = search.choose_assignment(model, dataset, cfg, progress=progress)
    if assignment is not None:
        result = b.check_assignment(assignment, nodes)
    else:
        result = b.resolve_assignment(nodes, cfg.bits, cfg.overrides)
    for path, node in nodes.items():
        if result[path] != b.PRESETS["int8"]:
            check_layer(node, result[path], per_channel=cfg.per_channel)
    return result


def _check_cfg(cfg: QuantConfig, mode: str) -> None:
    if mode not in MODES:
        raise RecipeError(f"quant.mode: '{mode}' is not one of {', '.join(MODES)}")
    if cfg.calibration not in ("minmax", "moving_average", "percentile", "mse"):
        raise RecipeError(f"quant.calibration: '{cfg.calibration}' is not one of minmax, moving_average, "
                          "percentile, mse")
    if not 50.0 < cfg.percentile <= 100.0:
        raise RecipeError(f"quant.percentile: {cfg.percentile} must be in (50, 100]")
    if cfg.epochs < 0 or cfg.batch_size < 2 or cfg.calibration_batches < 1 or cfg.lr <= 0:
        raise RecipeError("quant: epochs >= 0, batch_size >= 2, calibration_batches >= 1 and lr > 0 are required")


def ptq(model: torch.nn.Module, dataset: Dataset, cfg: QuantConfig, *, progress: Progress | None = None,
        assignment: Mapping[str, LayerPrecision] | None = None) -> fx.GraphModule:
    """Post-training quantization: calibrate on training inputs, return the converted program.

    ``assignment``: per-layer precision (module path -> LayerPrecision); None: ``cfg.bits`` + ``cfg.overrides``.
    """
    from tinyprec.quant.capture import example_like
    from tinyprec.quant.loops import calibrate

    example = example_like(dataset.input_shape)
    if assignment is None:
        assignment = layer_assignment(model, example, cfg)
    prepared = _prepare(copy.deepcopy(model).eval(), example, qat=False, cfg=cfg, assignment=assignment)
    calibrate(prepared, dataset.inputs("train"), batch_size=cfg.batch_size,
              num_batches=cfg.calibration_batches, progress=progress)
    return _convert(prepared, qat=False)


def quantize_model(model_fp32: torch.nn.Module, dataset: Dataset, cfg: QuantConfig, out_dir: Path, *,
                   seed: int = 0, mode: str | None = None, max_steps: int | None = None,
                   progress: Progress | None = None,
                   assignment: Mapping[str, LayerPrecision] | None = None) -> QuantResult:
    """Quantize a trained FP32 model to the TFLite int8 spec and write ``out_dir/quant/``.

    ``mode`` overrides ``cfg.mode`` ("qat" fine-tunes from the given weights under the mixed-precision
    policy; "ptq" only calibrates). QAT also runs PTQ, reported as ``ptq_accuracy``. ``max_steps`` caps
    QAT optimizer steps (smoke tests). Raises UnsupportedOpError before any training when the model has
    an op the int8 pipeline cannot express.

    Per-layer precision (:mod:`tinyprec.quant.bits`): ``assignment`` (module path -> LayerPrecision, e.g.
    from the search) or else ``cfg.bits`` with ``cfg.overrides``; a combination TFLM cannot run is refused
    (QuantSpecError naming the layer and the rule) before any training.
    """
    import torch

    from tinyprec import manifest
    from tinyprec.quant import converted as conv
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant, with_output_softmax
    from tinyprec.quant.loops import evaluate

    mode = mode or cfg.mode
    _check_cfg(cfg, mode)
    out_dir = Path(out_dir)
    qdir = out_dir / "quant"
    model = copy.deepcopy(model_fp32).float().cpu()
    if cfg.output_softmax and dataset.task == "classification":
        model = with_output_softmax(model)
    example = example_like(dataset.input_shape)
    exported = export_for_quant(model, example, train=False)
    check_graph(exported)  # refuse unsupported ops (and precisions, below) before training
    search = None
    if assignment is None and cfg.bits == "mixed":  # search once, then QAT once on the chosen assignment
        from tinyprec.quant.search import search_assignment

        search = search_assignment(model, dataset, cfg, progress=progress)
        assignment = search.assignment
    layers = layer_assignment(model, example, cfg, assignment, exported=exported, dataset=dataset, progress=progress)

    task = dataset.task
    x_test, y_test = dataset.inputs("test"), dataset.test.y
    model.eval()
    fp32_acc = evaluate(model, x_test, y_test, task=task)
    t0 = time.perf_counter()
    ptq_program = ptq(model, dataset, cfg, progress=progress, assignment=layers)
    ptq_acc = evaluate(ptq_program, x_test, y_test, task=task)
    facts: dict[str, Any] = {"ptq_seconds": round(time.perf_counter() - t0, 3)}
    precision = "fp32"
    epochs_run = 0
    selected = mode
    if mode == "qat":
        program, precision, epochs_run, selected, qat_facts = _qat(model, dataset, cfg, example, ptq_program,
                                                                  seed=seed, max_steps=max_steps,
                                                                  progress=progress, assignment=layers)
        facts.update(qat_facts)
        facts["qat_test"] = evaluate(program, x_test, y_test, task=task) if selected == "qat" else None
        fq_acc = ptq_acc if selected == "ptq" else facts["qat_test"]
    else:
        program, fq_acc = ptq_program, ptq_acc

    float_state = facts.pop("_float_state", None)
    float_path = qdir / FLOAT_NAME
    if float_state is not None and selected == "qat":
        with _io.atomic_path(float_path) as tmp:
            torch.save({"model": float_state}, tmp)
        manifest.record(out_dir, {"quant_float": float_path})
    else:
        float_path.unlink(missing_ok=True)  # PTQ: the network's own float weights are stage 1's
    program_path = conv.save_program(program, example, qdir / conv.PROGRAM_NAME)
    table = conv.qparams_table(program)
    qparams_path = conv.write_json(qdir / conv.QPARAMS_NAME, {"tensors": table})
    in_q, out_q = conv.io_qparams(program)
    metric = "mse" if task == "autoencoder" else "accuracy"
    metrics = {
        "mode": mode, "selected": selected, "precision": precision, "metric": metric, "fp32": fp32_acc, "fake_quant": fq_acc,
        "ptq": ptq_acc, "drop": fp32_acc - fq_acc if metric == "accuracy" else fq_acc - fp32_acc,
        "epochs": epochs_run, "calibration": cfg.calibration, "per_channel": cfg.per_channel,
        "input_qparams": list(in_q), "output_qparams": list(out_q), "test_samples": int(len(y_test)),
        "config": asdict(cfg), "layer_precision": {k: v.name for k, v in layers.items()}, **facts,
    }
    if search is not None:
        metrics["search"] = search.to_dict()
    metrics_path = conv.write_json(qdir / conv.METRICS_NAME, metrics)
    manifest.record(out_dir, {"quant_program": program_path, "quant_qparams": qparams_path,
                              "quant_metrics": metrics_path})
    return QuantResult(
        converted=program, program_path=program_path, qparams_path=qparams_path, metrics_path=metrics_path,
        fp32_accuracy=fp32_acc, fake_quant_accuracy=fq_acc, ptq_accuracy=ptq_acc, mode=mode,
        precision=precision, input_qparams=in_q, output_qparams=out_q,
        example_shape=(1, *dataset.input_shape), metric=metric, epochs_run=epochs_run, selected=selected,
    )


def _qat(model: torch.nn.Module, dataset: Dataset, cfg: QuantConfig, example: torch.Tensor,
         ptq_program: fx.GraphModule, *, seed: int, max_steps: int | None, progress: Progress | None,
         assignment: Mapping[str, LayerPrecision] | None = None) -> tuple[fx.GraphModule, str, int, str, dict[str, Any]]:
    """QAT from the FP32 weights; the converted program, or the PTQ one if QAT does not beat it on the
    validation split (PTQ is the baseline QAT must equal or beat). Returns (program, precision, epochs,
    "qat"|"ptq", facts for metrics.json)."""
    import torch

    from tinyprec.quant.loops import better, evaluate, run_qat, select_precision

    task = dataset.task
    precision = select_precision(cfg.autocast, "cpu")
    torch.manual_seed(seed)
    prepared = _prepare(model.train(), example, qat=True, cfg=cfg, assignment=assignment)
    x_val, y_val = dataset.inputs("val"), dataset.val.y
    val = (x_val, y_val) if len(y_val) else None
    t0 = time.perf_counter()
    log = run_qat(prepared, dataset.inputs("train"), dataset.train.y, task=task, epochs=cfg.epochs, lr=cfg.lr,
                  batch_size=cfg.batch_size, freeze_bn_epoch=cfg.freeze_bn_epoch,
                  freeze_observer_epoch=cfg.freeze_observer_epoch, precision=precision, seed=seed,
                  max_steps=max_steps, val=val, warmup_batches=cfg.calibration_batches, progress=progress)
    facts: dict[str, Any] = {
        "qat_seconds": round(time.perf_counter() - t0, 3), "qat_losses": list(log.losses), "qat_steps": log.steps,
        "qat_val_scores": list(log.val_scores), "qat_kept_epoch": log.best_epoch,
        "bn_frozen_at_epoch": log.bn_frozen_at, "observers_frozen_at_epoch": log.observers_frozen_at,
    }
    facts["_float_state"] = float_twin_state(prepared, model)
    program = _convert(prepared, qat=True)
    if val is None:
        return program, precision, len(log.losses), "qat", facts
    facts["val_qat"] = evaluate(program, x_val, y_val, task=task)
    facts["val_ptq"] = evaluate(ptq_program, x_val, y_val, task=task)
    if better(task, facts["val_ptq"], facts["val_qat"]):
        facts["qat_test_rejected"] = evaluate(program, dataset.inputs("test"), dataset.test.y, task=task)
        if progress:
            progress(f"QAT ({facts['val_qat']:.4g}) did not beat PTQ ({facts['val_ptq']:.4g}) on the validation "
                     "split: keeping the PTQ program")
        return ptq_program, precision, len(log.losses), "ptq", facts
    return program, precision, len(log.losses), "qat", facts
