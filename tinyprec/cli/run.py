"""``tinyprec run RECIPE``: all four stages, cached, with a final summary table (or --json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tinyprec.cli.app import app, console, err_console


def _fmt_pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _fmt_mse(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _fmt_bytes(value: Any) -> str:
    return "-" if value is None else f"{int(value):,} B"


def _measured_rows(m: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows for what the `mcu` runner measured on the emulated core (none when it did not run)."""
    if not m:
        return []
    where = f"{m['target']}, {m['kernels']}"
    rows = [(f"flash of the firmware image ({where}, measured)", _fmt_bytes(m["flash_bytes"])),
            (f"RAM of the firmware image ({where}, measured)", _fmt_bytes(m["ram_bytes"])),
            (f"TFLM arena used on the core ({where}, measured)", _fmt_bytes(m["arena_used_bytes"])),
            (f"instructions per inference ({where}, measured)", f"{m['instructions']:,}")]
    if m.get("latency_ms") is not None:
        rows.append((f"latency from instructions ({where}, estimate)", f"~{m['latency_ms']:.1f} ms"))
    return rows


def _print_table(result: Any) -> None:
    from rich.table import Table

    s = result.summary
    stages = Table(title=f"tinyprec run: {result.recipe}", show_header=True)
    for col in ("stage", "status", "seconds"):
        stages.add_column(col)
    for o in result.stages:
        stages.add_row(o.stage, o.status, f"{o.seconds:.1f}" if o.status == "ran" else "-")
    console.print(stages)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value")
    # An autoencoder's stage 2 scores reconstruction MSE on the test split; validation, AUC where labels exist.
    auto = s.get("quant_metric") == "mse"
    quant = ("reconstruction MSE", _fmt_mse) if auto else ("accuracy", _fmt_pct)
    score = "AUC x100" if "AUC" in str(s.get("metric") or "") else "accuracy"
    fp32 = quant if auto and s.get("metric") is None else (score, _fmt_pct)  # before validation: stage 2's score
    rows = [
        (f"FP32 {fp32[0]} (PyTorch)", fp32[1](s.get("fp32_accuracy"))),
        (f"fake-quant {quant[0]} (PyTorch)", quant[1](s.get("fake_quant_accuracy"))),
        (f"PTQ {quant[0]} (baseline)", quant[1](s.get("ptq_accuracy"))),
        (f"int8 on MCU (TFLM) {score}", _fmt_pct(s.get("mcu_accuracy"))),
        (f"emulator {score}", _fmt_pct(s.get("emulator_accuracy"))),
        ("drop vs FP32 (points)", _fmt_pct(s.get("drop"))),
        ("model file", _fmt_bytes(s.get("tflite_bytes"))),
        ("flash (model + TFLM code estimate)", _fmt_bytes(s.get("flash_bytes"))),
        ("TFLM arena (measured)", _fmt_bytes(s.get("arena_bytes"))),
        *_measured_rows(s.get("measured")),
        ("board", s.get("board") or "-"),
        ("gate", {True: "passed", False: "FAILED", None: "-"}[s.get("gate_passed")]),
    ]
    for what, value in rows:
        if value != "-":
            table.add_row(what, str(value))
    console.print(table)
    arts = s.get("artifacts", {})
    for role in ("tflite_int8", "onnx_int8", "c_source", "settings_header", "report_html"):
        if role in arts:
            console.print(f"{role}: {arts[role]}", highlight=False, soft_wrap=True)
    console.print(f"manifest: {result.out_dir / 'manifest.json'}", highlight=False, soft_wrap=True)


def _hooks(quiet: bool) -> Any:
    from tinyprec.cli.train import _Reporter
    from tinyprec.pipeline import Hooks

    if quiet:
        return Hooks()

    def say(line: str) -> None:
        err_console.print(f"[bold]{line}[/bold]", highlight=False, soft_wrap=True)

    def detail(line: str) -> None:
        err_console.print(f"[dim]  {line}[/dim]", highlight=False, soft_wrap=True)

    def validate_progress(stage: str, done: int, total: int) -> None:
        if done == 0:
            detail(f"validate: {stage} ({total} step{'s' if total != 1 else ''})")

    return Hooks(say=say, train=_Reporter(True), qat=detail, export=detail, validate=validate_progress)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe TOML file, e.g. models/digits_cnn.toml."),
    out: Path = typer.Option(None, "--out", help="Run folder (default export/<recipe name>/)."),
    stages: str = typer.Option(None, "--stages", help="Comma-separated subset of train,qat,export,validate."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted training from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Rerun stages even when their inputs are unchanged."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Run the pipeline: train, QAT, export, validate. Exit 0 ok, 1 gate failed, 2 bad input."""
    from tinyprec.errors import ValidationGateError
    from tinyprec.pipeline import run_recipe

    result = run_recipe(recipe, out_dir=out, stages=stages, resume=resume, force=force, hooks=_hooks(as_json))
    if as_json:
        doc = {"recipe": result.recipe, "out_dir": str(result.out_dir),
               "stages": [{"stage": o.stage, "status": o.status, "seconds": round(o.seconds, 2)} for o in result.stages],
               "summary": dict(result.summary)}
        print(json.dumps(doc, indent=2, default=str))
    else:
        _print_table(result)
    if result.gate_passed is False:
        raise ValidationGateError("validation gate failed: " + "; ".join(result.summary.get("gate_failures") or []))
