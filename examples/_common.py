"""Shared set-up of the examples: the recipe, its run folder, and a quick mode for smoke tests.

TINYPREC_EXAMPLES_QUICK=1 (set by tests/test_examples.py) shortens training so CI can run every example.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tinyprec.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("TINYPREC_EXAMPLES_QUICK") == "1"


def recipe(name: str = "digits_cnn") -> Recipe:
    r = load_recipe(ROOT / "models" / f"{name}.toml")
    if QUICK:
        r = dataclasses.replace(r, train=dataclasses.replace(r.train, epochs=3),
                                quant=dataclasses.replace(r.quant, epochs=1))
    return r


def out_dir(name: str) -> Path:
    base = Path(os.environ.get("TINYPREC_EXAMPLES_OUT", ROOT / "export" / "examples"))
    return base / name


# The file each stage leaves behind; an example that needs it runs the missing stages first.
_STAGE_FILE = {"train": "train/model_fp32.pt", "qat": "quant/converted.pt2", "export": "model/model_int8.tflite"}


def ensure(r: Recipe, out: Path, *stages: str) -> None:
    """Run (through the pipeline) whichever of ``stages`` has not left its artifact in ``out`` yet."""
    from tinyprec.pipeline import run_recipe

    missing = [s for s in stages if not (out / _STAGE_FILE[s]).is_file()]
    if missing:
        first = stages.index(missing[0])
        run_recipe(r, out_dir=out, stages=",".join(stages[first:]))
