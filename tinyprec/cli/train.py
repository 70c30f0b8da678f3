"""``tinyprec train RECIPE [--out DIR] [--resume]``: stage 1, mixed-precision training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from tinyprec.cli.app import app, console


class _Reporter:
    """Draws ProgressEvents: a rich progress bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = console.is_terminal
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        if event.kind == "start":
            r = event.record
            resumed = f", resumed after epoch {r['resumed_from_epoch']}" if r["resumed_from_epoch"] else ""
            console.print(f"train: precision {r['precision']} on {r['device']}, world size {r['world_size']}, "
                          f"{r['train_samples']} training samples{resumed}", highlight=False, soft_wrap=True)
            if self.tty and event.epoch < event.epochs:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console,
                                    transient=True)
                self.bar.start()
                self.task = self.bar.add_task("train", total=event.epochs * event.steps,
                                              completed=event.epoch * event.steps, epoch=event.epoch + 1, loss="-")
        elif event.kind == "step" and self.bar is not None:
            self.bar.update(self.task, advance=1, epoch=f"{event.epoch}/{event.epochs}", loss=f"{event.loss:.4f}")
        elif event.kind == "epoch":
            r = event.record
            acc = f" val_acc {r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else ""
            s = r["safety"]
            scale = f" scale {s['loss_scale_end']:g}" if s["precision"] == "fp16" else ""
            line = (f"epoch {event.epoch}/{event.epochs} loss {r['train_loss']:.4f} val_loss {r['val_loss']:.4f}{acc}"
                    f" {r['samples_per_s']:.0f} samples/s skipped {r['skipped_steps']}{scale}")
            (self.bar.console if self.bar is not None else console).print(line, highlight=False, soft_wrap=True)
        elif event.kind == "end":
            if self.bar is not None:
                self.bar.stop()
                self.bar = None


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe TOML file, e.g. models/digits_cnn.toml."),
    out: Path = typer.Option(None, "--out", help="Run folder (default export/<recipe name>/); files go to OUT/train/."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/train/checkpoint.pt if it exists."),
    precision: str = typer.Option(None, "--precision", help="Override train.precision: auto, bf16, fp16 or fp32."),
    epochs: int = typer.Option(None, "--epochs", help="Override train.epochs."),
) -> None:
    """Stage 1: mixed-precision training (DDP under `torchrun --nproc_per_node=N -m tinyprec train RECIPE`)."""
    import dataclasses

    from tinyprec.data import load_dataset
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.training import seed_everything, train_model

    r = load_recipe(recipe)
    cfg = r.train
    if precision is not None:
        from tinyprec.errors import RecipeError

        if precision not in ("auto", "bf16", "fp16", "fp32"):
            raise RecipeError(f"--precision: '{precision}' is not one of auto, bf16, fp16, fp32")
        cfg = dataclasses.replace(cfg, precision=precision)  # type: ignore[arg-type]
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    out_dir = out if out is not None else Path("export") / r.name
    assert r.path is not None
    dataset = load_dataset(r.data, r.seed, base_dir=r.path.parent)
    seed_everything(r.seed)
    model = build_model_for(r)
    from tinyprec.quant.opcheck import check_before_training

    check_before_training(model, dataset, output_softmax=r.quant.output_softmax)  # refuse before any training
    main = int(os.environ.get("RANK", "0")) == 0
    result = train_model(model, dataset, cfg, out_dir, seed=r.seed, resume=resume, progress=_Reporter(main))
    if main:
        acc = f"test accuracy {result.test_accuracy:.4f}" if result.test_accuracy is not None else f"test loss {result.test_loss:.5f}"
        console.print(f"train: done, {acc}, precision {result.precision}, skipped steps {result.skipped_steps}, "
                      f"weights {result.weights_path}", highlight=False, soft_wrap=True)
