"""One training run of kws_ds_cnn with changed settings, scored on the validation split only.

The tool behind the choices in models/kws_ds_cnn.toml: each change is measured on the validation speakers
(never the test speakers), one run at a time; the test split is scored once, by bench_kws.py, on the final
recipe. Prints validation top-1 per epoch and appends one JSON line to --log.

    OMP_NUM_THREADS=1 nice python benchmarks/kws_val_sweep.py NAME \
        '{"speakers": [600, 200, 80], "augment": {"freq_warp": 0.15}, "epochs": 16}'

Keys: ``speakers`` ([data]), ``augment`` ([train.augment]), ``seed``, and any [train] key. On a shared
machine use one torch thread: two threads on two busy cores ran an epoch 7x slower (239 s vs 32 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("changes", nargs="?", default="{}", help="JSON object of settings to change")
    parser.add_argument("--recipe", type=Path, default=ROOT / "models" / "kws_ds_cnn.toml")
    parser.add_argument("--log", type=Path, default=Path("kws_val_sweep.jsonl"))
    args = parser.parse_args()

    from tinyprec.data import load_dataset
    from tinyprec.recipe import AugmentConfig, build_model_for, load_recipe
    from tinyprec.training import ProgressEvent, seed_everything, train_model

    recipe = load_recipe(args.recipe)
    changes = json.loads(args.changes)
    data = recipe.data
    if "speakers" in changes:
        data = dataclasses.replace(data, speakers=tuple(changes.pop("speakers")))
    augment = AugmentConfig(**changes.pop("augment")) if "augment" in changes else recipe.train.augment
    augment.check()
    seed = changes.pop("seed", recipe.seed)
    cfg = dataclasses.replace(recipe.train, augment=augment, **changes)
    t0 = time.perf_counter()
    dataset = load_dataset(data, recipe.seed, recipe.path.parent if recipe.path else None)
    print(f"{args.name}: {len(dataset.train)} train / {len(dataset.val)} val clips "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    seed_everything(seed)
    model = build_model_for(recipe)
    vals: list[float] = []

    def progress(event: ProgressEvent) -> None:
        if event.kind == "epoch" and event.record is not None:
            vals.append(round(100 * event.record["val_accuracy"], 2))
            print(f"{args.name} epoch {event.epoch}: train {100 * event.record['train_accuracy']:.2f} "
                  f"val {vals[-1]:.2f} ({event.record['seconds']:.1f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="tinyprec-sweep-") as tmp:
        result = train_model(model, dataset, cfg, Path(tmp), seed=seed, progress=progress)
    line = {"name": args.name, "changes": json.loads(args.changes), "val_final": vals[-1],
            "val_last3_mean": round(sum(vals[-3:]) / len(vals[-3:]), 2), "val_per_epoch": vals,
            "seconds": round(result.seconds)}
    print(json.dumps(line), flush=True)
    with args.log.open("a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
