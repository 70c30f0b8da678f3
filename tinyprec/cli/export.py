"""``tinyprec export RECIPE [--out DIR]``: stage 3, int8 .tflite + ONNX + firmware bundle + manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tinyprec.cli.app import app, console, err_console


@app.command("export")
def export_command(
    recipe: Path = typer.Argument(..., help="Recipe TOML (e.g. models/digits_cnn.toml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default export/<recipe name>)."),  # noqa: UP045
) -> None:
    """Lower the quantized model (out/quant/converted.pt2) and write out/model/, out/firmware/, manifest.json."""
    from tinyprec.errors import ArtifactError
    from tinyprec.recipe import load_recipe

    r = load_recipe(recipe)
    out_dir = out if out is not None else Path("export") / r.name
    program = out_dir / "quant" / "converted.pt2"
    weights = out_dir / "train" / "model_fp32.pt"
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing: run `tinyprec train {recipe}` first")
    if not program.is_file():
        raise ArtifactError(f"{program} is missing: run `tinyprec qat {recipe}` first")

    from tinyprec.data import load_dataset
    from tinyprec.exporting.stage import export_model
    from tinyprec.quant import load_converted
    from tinyprec.recipe import build_model_for
    from tinyprec.training.checkpoint import load_weights

    model = build_model_for(r)
    model.load_state_dict(load_weights(weights))
    converted = load_converted(out_dir)
    base = r.path.parent if r.path is not None else Path.cwd()
    dataset = load_dataset(r.data, r.seed, base)
    result = export_model(r, converted, model, dataset, r.export, out_dir,
                          progress=lambda line: err_console.print(f"[dim]{line}[/dim]"))
    check = result.check
    console.print(f"[bold]{r.name}[/bold]: {result.tflite_bytes:,} bytes .tflite ({result.const_bytes:,} constant), "
                  f"TFLM arena {result.arena_bytes:,} bytes, ops {', '.join(t.value for t in result.graph.op_types())}")
    if check:
        console.print(f"TFLM vs converted model on {check['samples']} samples: {100 * check['exact_fraction']:.2f}% "
                      f"exact, max |diff| {check['max_abs_diff']} LSB")
    console.print(f"wrote {result.tflite_path}, {len(result.firmware)} firmware files, {result.manifest_path}")
