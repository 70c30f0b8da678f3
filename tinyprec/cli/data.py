"""``tinyprec data RECIPE --split test --out test.npz``: a recipe's data source as features and labels.

The .npz holds ``x`` (the raw features, PyTorch layout, float32), ``y`` (int64 labels), ``class_labels``,
``task`` and, unless ``--raw``, the recipe's normalization ``mean``/``std`` (scalars), so that
``tinyprec validate --tflite MODEL --data test.npz`` feeds a model exactly what the recipe's own firmware
would. ``--raw`` leaves the normalization out, for a foreign model that takes the features as they are
(MLPerf Tiny's KWS model takes unnormalized MFCC). ``frontend`` (JSON text) describes the feature extractor
when the source has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tinyprec.cli.app import app, console


@app.command("data")
def data_command(
    recipe: Path = typer.Argument(..., help="Recipe TOML whose data section to write (e.g. models/kws_ds_cnn.toml)."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out: Path = typer.Option(..., "--out", help="The .npz to write."),
    raw: bool = typer.Option(False, "--raw", help="Leave out the recipe's normalization (mean/std)."),
    max_samples: int = typer.Option(None, "--max-samples", help="Write at most this many samples (the first ones)."),
) -> None:
    """Write one split of a recipe's data (features and labels) to a .npz for `tinyprec validate --data`."""
    import numpy as np

    from tinyprec._io import atomic_path
    from tinyprec.data import load_dataset
    from tinyprec.errors import DataError
    from tinyprec.recipe import load_recipe

    if split not in ("train", "val", "test"):
        raise DataError(f"--split: '{split}' is not one of train, val, test")
    if max_samples is not None and max_samples < 1:
        raise DataError(f"--max-samples: {max_samples} must be at least 1")
    r = load_recipe(recipe)
    base = r.path.parent if r.path is not None else Path.cwd()
    ds = load_dataset(r.data, r.seed, base)
    part = getattr(ds, split)
    n = len(part) if max_samples is None else min(max_samples, len(part))
    arrays: dict[str, np.ndarray] = {
        "x": np.ascontiguousarray(part.x[:n], dtype=np.float32),
        "y": np.asarray(part.y[:n], dtype=np.int64),
        "class_labels": np.array(ds.class_labels, dtype=str),
        "task": np.array(ds.task),
    }
    if not raw:
        arrays["mean"] = np.array(ds.preprocess.mean, dtype=np.float64)
        arrays["std"] = np.array(ds.preprocess.std, dtype=np.float64)
    if ds.preprocess.frontend is not None:
        arrays["frontend"] = np.array(json.dumps(ds.preprocess.frontend.to_dict(), sort_keys=True))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    norm = "raw features" if raw else f"mean {ds.preprocess.mean:.6g}, std {ds.preprocess.std:.6g}"
    console.print(f"wrote {out}: {ds.name} {split}, {n} samples of shape {tuple(part.x.shape[1:])}, {norm}")
