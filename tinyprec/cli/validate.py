"""``tinyprec validate RECIPE [--out DIR] [--max-drop POINTS] [--board NAME]`` and
``tinyprec validate --tflite MODEL.tflite --data DATA.npz`` (a foreign model, no PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tinyprec.cli.app import app, console, err_console


def _print_summary(result: Any) -> None:
    from rich.table import Table

    rep = result.report
    table = Table(title=f"{rep['model']['name']}: {rep['data']['samples']} held-out samples, {rep['metric']}",
                  box=None, pad_edge=False)
    for col in ("runner", "metric", f"drop vs {rep.get('reference', 'fp32')}", "note"):
        table.add_column(col)
    for name, info in rep["runners"].items():
        acc, drop = rep["accuracy"].get(name), rep["drop"].get(name)
        table.add_row(name, "-" if acc is None else f"{acc:.2f}", "-" if drop is None else f"{drop:+.2f}",
                      info["note"])
    console.print(table)
    agree = rep["agreement"].get("tflm_vs_emulator", {})
    if agree.get("identical_outputs") is not None:
        console.print(f"TFLM vs emulator: {agree['identical_outputs']:.2f}% identical int8 outputs")
    res = rep["resources"]
    console.print(f"flash {res['flash_bytes']:,} B (model {res['model_bytes']:,} + ~{res['runtime_code_bytes_estimate']:,} "
                  f"TFLM code, estimate), RAM {res['ram_bytes']:,} B (arena {res['arena_bytes']:,} measured + I/O "
                  f"{res['io_buffer_bytes']:,})")
    for tgt, ms in res["latency_ms"].items():
        console.print(f"latency ~{ms:.1f} ms on {tgt} [dim](estimate)[/dim]")
    m = res.get("measured")
    if m:
        console.print(f"measured on the emulated {m['target']} ({m['kernels']} kernels): flash {m['flash']['total_bytes']:,} B, "
                      f"RAM {m['ram']['total_bytes']:,} B (arena {m['ram']['arena_used_bytes']:,} B used), "
                      f"{m['instructions']['per_inference']:,} instructions per inference")
    console.print(f"[dim]gate resources: {res.get('gate_source', 'estimated')}[/dim]")
    for check in result.checks:
        mark = "[green]ok[/green]" if check.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {check.message}")
    console.print(f"reports: {', '.join(str(p) for p in result.paths.values())}")


@app.command("validate")
def validate_command(
    recipe: Path = typer.Argument(None, help="Recipe (.toml) whose run folder to validate."),
    out: Path = typer.Option(None, "--out", help="Run folder (default export/<recipe name>)."),
    max_drop: float = typer.Option(None, "--max-drop", help="Allowed accuracy drop of TFLM vs FP32, in points."),
    board: str = typer.Option(None, "--board", help="Board profile for the fits verdict (nrf52840, stm32l4r5, ...)."),
    tflite: Path = typer.Option(None, "--tflite", help="Validate a foreign int8 .tflite instead of a recipe."),
    data: Path = typer.Option(None, "--data", help="With --tflite: .npz with x (raw inputs) and y (labels)."),
    max_samples: int = typer.Option(None, "--max-samples", help="Use at most this many held-out samples."),
    ram_budget: int = typer.Option(None, "--ram-budget", help="RAM budget in bytes (arena + I/O buffers)."),
    flash_budget: int = typer.Option(None, "--flash-budget", help="Flash budget in bytes (model + TFLM code estimate)."),
) -> None:
    """Accuracy on emulated MCU inference vs the FP32 baseline, MCU resources, and the gate (exit 1 on failure)."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tinyprec.errors import DataError
    from tinyprec.validation import validate_model, validate_tflite
    from tinyprec.validation.validate import GateSettings

    if (tflite is None) == (recipe is None):
        raise DataError("give either a RECIPE or --tflite MODEL.tflite --data DATA.npz")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        if tflite is not None:
            if data is None:
                raise DataError("--tflite needs --data DATA.npz (arrays x: raw inputs, y: labels)")
            settings = GateSettings()
            settings = replace(settings, max_drop=settings.max_drop if max_drop is None else max_drop,
                               board=board or settings.board, max_samples=max_samples,
                               ram_budget=ram_budget, flash_budget=flash_budget)
            result = validate_tflite(tflite, data, out_dir=out, settings=settings, progress=progress)
        else:
            from tinyprec.recipe import load_recipe

            loaded = load_recipe(recipe)
            overrides = {k: v for k, v in (("max_samples", max_samples), ("ram_budget", ram_budget),
                                           ("flash_budget", flash_budget)) if v is not None}
            if overrides:
                loaded = replace(loaded, validate=replace(loaded.validate, **overrides))
            result = validate_model(loaded, out, max_drop=max_drop, board=board, progress=progress)
    _print_summary(result)
    result.raise_for_gate()
