"""``tinyprec qat RECIPE [--out DIR] [--mode qat|ptq]``: stage 2, quantization to the TFLite int8 spec."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tinyprec.cli.app import app, console, err_console


@app.command("qat")
def qat_command(
    recipe: Path = typer.Argument(..., help="Recipe TOML (e.g. models/digits_cnn.toml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default export/<recipe name>)."),  # noqa: UP045
    mode: Optional[str] = typer.Option(None, "--mode", help="qat (fine-tune) or ptq (calibrate only); default from the recipe."),  # noqa: UP045,E501
) -> None:
    """Quantize the stage-1 model (out/train/model_fp32.pt): QAT or PTQ, convert, write out/quant/."""
    from tinyprec.data import load_dataset
    from tinyprec.errors import ArtifactError, RecipeError
    from tinyprec.recipe import build_model_for, load_recipe

    r = load_recipe(recipe)
    if mode is not None and mode not in ("qat", "ptq"):
        raise RecipeError(f"--mode: '{mode}' is not one of qat, ptq")
    out_dir = out if out is not None else Path("export") / r.name
    weights = out_dir / "train" / "model_fp32.pt"
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing: run `tinyprec train {recipe}` first")

    from tinyprec.quant.stage import quantize_model
    from tinyprec.training.checkpoint import load_weights

    model = build_model_for(r)
    model.load_state_dict(load_weights(weights))
    base = r.path.parent if r.path is not None else Path.cwd()
    dataset = load_dataset(r.data, r.seed, base)
    result = quantize_model(model, dataset, r.quant, out_dir, seed=r.seed, mode=mode,
                            progress=lambda line: err_console.print(f"[dim]{line}[/dim]"))
    unit = "%" if result.metric == "accuracy" else " (MSE)"
    console.print(f"[bold]{r.name}[/bold] {result.mode} ({result.precision}): fp32 {result.fp32_accuracy:.2f}{unit}  "
                  f"int8 fake-quant {result.fake_quant_accuracy:.2f}{unit}  PTQ {result.ptq_accuracy:.2f}{unit}")
    if result.mode == "qat" and result.selected == "ptq":
        console.print("QAT did not beat PTQ on the validation split: the PTQ program was kept")
    console.print(f"input qparams {result.input_qparams}, output qparams {result.output_qparams}")
    console.print(f"wrote {result.program_path}, {result.qparams_path.name}, {result.metrics_path.name}")
