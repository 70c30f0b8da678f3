"""``tinyprec inspect MODEL.tflite [--json] [--target NAME]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tinyprec.cli.app import app, console


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n:,} B ({n / 1024:.1f} KiB)"


@app.command("inspect")
def inspect_command(
    model: Path = typer.Argument(..., help="An int8 .tflite model (ours or TensorFlow's converter's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    target: str = typer.Option("cortex-m4", "--target", help="Core (cortex-m4, cortex-m7@480, ...) or board (nrf52840, ...) for the latency estimate."),
    no_arena: bool = typer.Option(False, "--no-arena", help="Skip measuring the TFLM arena."),
) -> None:
    """Op table, sizes, TFLM arena (measured), op resolver and estimated latency of a .tflite model."""
    from rich.table import Table

    from tinyprec.validation.inspect import inspect_file

    result = inspect_file(model, target=target, measure_arena=not no_arena)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"[bold]{result.path}[/bold]  ({result.kind}, {len(result.ops)} ops)")
    for label, rows in (("input", result.inputs), ("output", result.outputs)):
        for r in rows:
            console.print(f"  {label}: {r.name} {r.shape} {r.dtype} {r.qparams}")
    table = Table(show_lines=False, box=None, pad_edge=False)
    for col in ("#", "op", "output", "dtype", "qparams", "params", "MACs", "name"):
        right = col in ("#", "params", "MACs")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "name",
                         overflow="ellipsis" if col == "name" else "fold")
    for row in result.ops:
        name = row.source or row.name
        table.add_row(str(row.index), row.op, "x".join(map(str, row.output_shape)), row.dtype, row.qparams,
                      f"{row.params:,}", f"{row.macs:,}", name if len(name) <= 40 else "…" + name[-39:])
    console.print(table)
    console.print(f"file: {_kb(result.file_bytes)}   constants: {_kb(result.const_bytes)}   "
                  f"parameters: {result.params:,}   MACs: {result.macs:,}")
    console.print(f"TFLM arena: {_kb(result.arena_bytes)}  [dim]{result.arena_note}[/dim]")
    if result.arena_bytes is not None:
        console.print(f"  head (activations) {result.arena_head_bytes:,} B, tail (persistent) {result.arena_tail_bytes:,} B")
    console.print(f"TFLM runtime code: ~{_kb(result.runtime_code_bytes_estimate)}  [dim]{result.flash_note}[/dim]")
    console.print("op resolver: MicroMutableOpResolver<%d>: %s" % (len(result.resolver), ", ".join(f"{m}()" for m in result.resolver)))
    if result.latency is not None:
        console.print(f"latency on {result.latency.target}: ~{result.latency.ms:.1f} ms  [dim]{result.latency.label}[/dim]")
    else:
        console.print(f"latency: [dim]{result.latency_note}[/dim]")
    raise typer.Exit(0)
