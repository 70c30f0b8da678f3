"""Stage 4: validate the int8 model against the FP32 baseline on emulated MCU inference, and gate it.

:func:`validate_run` works from a run folder (model/, quant/, train/) and its recipe;
:func:`validate_tflite` validates a foreign .tflite on a .npz of raw inputs and labels, without PyTorch.
Both write report/report.{json,md,html}, record them in manifest.json and return a
:class:`ValidationResult`; ``result.raise_for_gate()`` raises :class:`ValidationGateError` (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.errors import ValidationGateError
from tinyprec.ir import Graph
from tinyprec.mcu.boards import check_fit, get_board, target_for
from tinyprec.mcu.flash import FLASH_LABEL, resources
from tinyprec.mcu.latency import LABEL as LATENCY_LABEL
from tinyprec.mcu.latency import estimate_latency
from tinyprec.mcu.macs import total_macs
from tinyprec.validation import metrics
from tinyprec.validation.runners import RUNNER_TITLES, Feed, Models, Runner, RunnerOutput, run_all

Progress = Callable[[str, int, int], None]

# Samples used for the per-layer comparison (taps of every tensor are kept in memory).
LAYER_SAMPLES = 64
# Pairs whose agreement the report lists (the first of each pair is the reference).
AGREEMENT_PAIRS: tuple[tuple[Runner, Runner], ...] = (
    (Runner.TFLM, Runner.EMULATOR),
    (Runner.TFLM, Runner.TFLITE),
    (Runner.TFLM, Runner.ONNX_INT8),
    (Runner.TFLM, Runner.FAKE_QUANT),
    (Runner.TFLM, Runner.FAKE_QUANT_TFLM),
    (Runner.FP32, Runner.ONNX_FP32),
    (Runner.FP32, Runner.TFLM),
    (Runner.TFLM, Runner.MCU),
    (Runner.EMULATOR, Runner.MCU),
)


@dataclass(frozen=True)
class GateSettings:
    """What the gate checks: allowed drop (points) and optional budgets (bytes); the board to fit."""

    max_drop: float = 1.0
    board: str = "nrf52840"
    target: str = "cortex-m4"
    ram_budget: int | None = None
    flash_budget: int | None = None
    max_samples: int | None = None
    max_recon_increase: float = 10.0  # autoencoders: TFLM's reconstruction MSE over FP32's, percent


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    message: str
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class ValidationResult:
    """The outcome: the report content, the gate checks and the files written."""

    report: dict[str, Any]
    checks: tuple[GateCheck, ...]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def accuracy(self) -> dict[str, float | None]:
        return dict(self.report["accuracy"])

    def failure_message(self) -> str:
        """One line naming each failed check and by how much."""
        return "; ".join(c.message for c in self.checks if not c.passed)

    def raise_for_gate(self) -> None:
        """Raise :class:`ValidationGateError` (exit code 1) when a check failed."""
        if not self.passed:
            raise ValidationGateError(f"validation gate failed: {self.failure_message()}")


@dataclass(frozen=True)
class Task:
    """What is measured on the held-out data."""

    kind: str  # "classification" | "autoencoder"
    labels: np.ndarray
    num_classes: int
    class_labels: tuple[str, ...]


def _score(task: Task, out: RunnerOutput, feed: Feed) -> dict[str, Any]:
    assert out.scores is not None
    if task.kind == "autoencoder":
        err = metrics.reconstruction_error(feed.float_ir, out.scores)
        auc = metrics.roc_auc(err, task.labels != 0)
        return {"metric": None if auc is None else 100.0 * auc, "recon_mse": float(err.mean()), "errors": err}
    pred = np.argmax(out.scores, axis=1)
    if out.q is not None:
        pred = np.argmax(out.q, axis=1)  # ties resolve as firmware's argmax over the int8 scores does
    return {"metric": metrics.top1_percent(pred, task.labels), "pred": pred}


def _needs(res: Any, measured: dict[str, Any] | None) -> tuple[int, int, str]:
    """RAM and flash the gate checks, and where they come from: the firmware image measured on the
    emulated core when the `mcu` runner built one (.data + .bss + stack; text + data), else the estimate."""
    if measured is None:
        return res.ram_bytes, res.flash_bytes, "estimated"
    return (int(measured["ram"]["total_bytes"]), int(measured["flash"]["total_bytes"]),
            f"measured: firmware image on the emulated {measured['target']}, {measured['kernels']} kernels")


def _gate(settings: GateSettings, acc: dict[str, float | None], needs: tuple[int, int, str], verdict: Any,
          metric: str) -> list[GateCheck]:
    checks = []
    base, mcu = acc.get("fp32"), acc.get("tflm")
    if base is not None and mcu is not None:
        drop = base - mcu
        ok = drop <= settings.max_drop + 1e-9
        detail = f"TFLM {metric} {mcu:.2f} vs FP32 {base:.2f}: drop {drop:.2f} points"
        msg = (f"{detail} within max_drop {settings.max_drop:.2f}" if ok else
               f"{detail} exceeds max_drop {settings.max_drop:.2f} by {drop - settings.max_drop:.2f} points")
        checks.append(GateCheck("accuracy_drop", ok, msg, drop, settings.max_drop))
    ram, flash, source = needs
    for name, need, budget in (("ram_budget", ram, settings.ram_budget), ("flash_budget", flash, settings.flash_budget)):
        if budget is None:
            continue
        ok = need <= budget
        what = name.split("_")[0].upper() if name.startswith("ram") else "flash"
        msg = (f"{what} {need:,} B within budget {budget:,} B" if ok else
               f"{what} {need:,} B exceeds budget {budget:,} B by {need - budget:,} B") + f" ({source})"
        checks.append(GateCheck(name, ok, msg, float(need), float(budget)))
    checks.append(GateCheck("board_fit", verdict.fits, f"{verdict.summary()} ({source})"))
    return checks


def evaluate(
    models: Models,
    feed: Feed,
    task: Task,
    settings: GateSettings,
    *,
    name: str,
    mode: str,
    sources: dict[str, str | None] | None = None,
    progress: Progress | None = None,
    runners: tuple[Runner, ...] = tuple(Runner),
) -> tuple[dict[str, Any], list[GateCheck]]:
    """Run every runner, score them, compare per layer, measure resources, apply the gate: the report dict."""
    if models.mcu is None and Runner.MCU in runners:
        from dataclasses import replace as _replace

        from tinyprec.mcu.emulated import options_from_env

        models = _replace(models, mcu=options_from_env(target=settings.target))
    outputs = run_all(models, feed, runners=runners, progress=progress)
    scored = {r: _score(task, o, feed) for r, o in outputs.items() if o.ran}
    acc: dict[str, float | None] = {r.value: (scored[r]["metric"] if r in scored else None) for r in Runner}
    reference = "fp32" if acc.get("fp32") is not None else "tflm"
    base = acc.get(reference)
    drop = {k: (None if v is None or base is None else base - v) for k, v in acc.items()}
    agreement = {}
    for a, b in AGREEMENT_PAIRS:
        oa, ob = outputs.get(a), outputs.get(b)
        if oa is None or ob is None or not (oa.ran and ob.ran):
            agreement[f"{a.value}_vs_{b.value}"] = metrics.Agreement(a.value, b.value, None, None, None).to_dict()
            continue
        pa, pb = scored[a].get("pred"), scored[b].get("pred")
        agreement[f"{a.value}_vs_{b.value}"] = metrics.agreement(a.value, b.value, oa.q, ob.q, pa, pb).to_dict()

    if progress is not None:
        progress("resources", 0, 1)
    from tinyprec.runtimes.tflm import tflm_arena_bytes

    arena = tflm_arena_bytes(models.tflite, where=models.where)
    res = resources(models.graph, len(models.tflite), arena)
    board = get_board(settings.board)
    from tinyprec.mcu.emulated import measured_resources

    measured = measured_resources(models.mcu)
    needs = _needs(res, measured)
    verdict = check_fit(board, needs[0], needs[1])
    latency = {}
    for spec in dict.fromkeys((board.target, target_for(settings.target))):
        est = estimate_latency(models.graph, spec)
        latency[est.target] = est.ms
    metric_name = "top-1 accuracy (%)" if task.kind == "classification" else "ROC AUC x100 (reconstruction error)"
    checks = _gate(settings, acc, needs, verdict, "accuracy" if task.kind == "classification" else "AUC")
    recon = None
    if task.kind == "autoencoder":
        from tinyprec.validation.recon import reconstruction_check, reconstruction_summary

        recon = reconstruction_summary({r.value: (scored[r]["recon_mse"] if r in scored else None) for r in Runner})
        found = reconstruction_check(recon, settings.max_recon_increase)
        if found is not None:
            checks.insert(0, GateCheck(*found))

    layers, layer_taps, layer_ref = _layers(models, feed, sources, outputs, progress)
    report: dict[str, Any] = {
        "model": {"name": name, "mode": mode, "file": models.where, "bytes": len(models.tflite),
                  "kind": models.graph.metadata.get("kind") or models.graph.quant_kind()},
        "data": {"split": "test", "samples": int(feed.model_input.shape[0]), "task": task.kind,
                 "num_classes": task.num_classes},
        "metric": metric_name,
        "reference": reference,
        "runners": {r.value: {"title": RUNNER_TITLES[r], "ran": o.ran, "note": o.note, "seconds": round(o.seconds, 3)}
                    for r, o in outputs.items()},
        "accuracy": acc,
        "drop": drop,
        "agreement": agreement,
        "layers": [row.to_dict() for row in layers],
        "layers_taps": layer_taps,
        "layers_reference": layer_ref,
        "resources": {
            "flash_bytes": res.flash_bytes, "model_bytes": res.model_bytes,
            "runtime_code_bytes_estimate": res.runtime_code_bytes_estimate, "flash_note": FLASH_LABEL,
            "arena_bytes": res.arena_bytes, "io_buffer_bytes": res.io_buffer_bytes, "ram_bytes": res.ram_bytes,
            "resolver": list(res.resolver), "macs": total_macs(models.graph),
            "latency_ms": latency, "latency_label": LATENCY_LABEL,
            "board": {"name": board.name, "mcu": board.mcu, "ram_bytes": board.ram_bytes, "flash_bytes": board.flash_bytes,
                      "fits": verdict.fits, "ram_fits": verdict.ram_fits, "flash_fits": verdict.flash_fits,
                      "summary": verdict.summary()},
        },
        "gate": {"passed": all(c.passed for c in checks), "max_drop": settings.max_drop,
                 "ram_budget": settings.ram_budget, "flash_budget": settings.flash_budget,
                 "checks": [c.__dict__ for c in checks]},
    }
    report["resources"]["gate_source"] = needs[2]
    if measured is not None:
        report["resources"]["measured"] = measured
    ref = Runner.TFLM if Runner.TFLM in scored else next(iter(scored), None)
    if task.kind == "classification" and ref is not None and task.num_classes > 0:
        cm = metrics.confusion_matrix(scored[ref]["pred"], task.labels, task.num_classes)
        labels = list(task.class_labels) or [str(i) for i in range(task.num_classes)]
        report["confusion_matrix"] = {"runner": ref.value, "labels": labels, "matrix": cm.tolist()}
    if task.kind == "autoencoder":
        report["reconstruction_mse"] = {r.value: s["recon_mse"] for r, s in scored.items()}
        report["reconstruction"] = recon
    return report, checks


def _layers(models: Models, feed: Feed, sources: dict[str, str | None] | None,
            outputs: dict[Runner, RunnerOutput], progress: Progress | None
            ) -> tuple[list[Any], str | None, str | None]:
    """Per-layer SQNR when there is an FP32 PyTorch model: emulator taps, else TFLM's own; against the
    network's own float weights (the QAT-trained ones when there are), and against the stage-1 model."""
    if models.torch_fp32 is None or feed.float_torch is None:
        return [], None, None
    from tinyprec.validation.layers import per_layer_errors, record_activations

    n = min(LAYER_SAMPLES, feed.model_input.shape[0])
    if progress is not None:
        progress("layers", 0, n)
    x = feed.model_input[:n]
    taps: dict[str, np.ndarray] | None = None
    used = "emulator"
    emu = outputs.get(Runner.EMULATOR)
    if emu is not None and emu.ran:
        from tinyprec.emulator import Emulator  # type: ignore[attr-defined]

        taps = dict(Emulator(models.graph).run_with_taps(x))
    if taps is None:
        from tinyprec.formats.tflite_reader import read_tflite_indexed
        from tinyprec.runtimes.tflm import run_tflm_with_taps

        _, names = read_tflite_indexed(models.tflite, where=models.where)
        taps = run_tflm_with_taps(models.tflite, x, names=names, where=models.where)
        used = "TFLM"
    stage1 = record_activations(models.torch_fp32, feed.float_torch[:n])
    own = stage1 if models.torch_float is None else record_activations(models.torch_float, feed.float_torch[:n])
    rows = per_layer_errors(models.graph, taps, own, sources, stage1_log=stage1)
    if progress is not None:
        progress("layers", n, n)
    reference = "stage-1 FP32 weights (not fine-tuned)" if models.torch_float is None else "QAT float weights"
    return rows, used, reference


def graph_with_sources(graph: Graph, sources: dict[str, str | None]) -> Graph:
    """Set each tensor's ``source`` from an ir_sources.json mapping (tensor name -> module path)."""
    for name, src in sources.items():
        t = graph.tensors.get(name)
        if t is not None and src:
            t.source = src
    return graph
