"""Anomaly detection on machine_sounds: FP32 vs int8-on-TFLM ROC AUC of the ad_autoencoder recipe, over seeds.

For each seed: `run_recipe(models/ad_autoencoder.toml)` with that seed (new machines, new clips, new training)
in a fresh cache folder, all-int8 PTQ as the recipe says, then (unless --no-mixed) the same trained model with
per-layer mixed precision (`precision = "mixed"`: INT4 weights where the validation MSE allows; for an
autoencoder the search's `search_max_drop` is an absolute increase of the normalized MSE, set here). Recorded:

- validation's per-vector AUC (x100) per runner (FP32, fake-quant, TFLM, TF Lite, ONNX, emulator), the
  reconstruction MSE per runner and the gate;
- MLPerf Tiny AD's own metric, computed here: a clip's score is the mean error of its vectors, AUC per machine
  ID, averaged over the IDs; FP32 (PyTorch) and int8 on TFLM (the .tflite run by the tflite_micro wheel);
- per fault (bearing, imbalance, rubbing, speed): clip AUC against the normal clips, FP32 and TFLM.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_ad.py [--seeds 0 1 2] [--out benchmarks/results/ad.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's tinyprec, also when run as a script from elsewhere


def _clip_aucs(err: np.ndarray, frames: dict[str, np.ndarray], per_clip: int) -> dict[str, object]:
    from tinyprec.data.machine_sounds import FAULTS
    from tinyprec.validation.metrics import roc_auc

    score = err.reshape(-1, per_clip).mean(axis=1)
    flag, machine, fault = frames["flag_test"], frames["machine_test"], frames["fault_test"]
    per_machine = {int(m): roc_auc(score[machine == m], flag[machine == m]) for m in np.unique(machine)}
    per_fault = {}
    for k, name in enumerate(FAULTS):
        sel = (flag == 0) | (fault == k)
        per_fault[name] = round(100.0 * float(roc_auc(score[sel], flag[sel])), 2)  # type: ignore[arg-type]
    return {"mean_over_machines": round(100.0 * float(np.mean(list(per_machine.values()))), 2),
            "per_machine": {m: round(100.0 * float(v), 2) for m, v in per_machine.items()},  # type: ignore[arg-type]
            "per_fault": per_fault}


def _errors(out: Path, dataset: object, model: object) -> dict[str, np.ndarray]:
    """Per-vector squared error (mean over 640 features) of FP32 PyTorch and of TFLM on the whole test split."""
    import torch

    from tinyprec.runtimes.tflm import run_tflm

    x = dataset.inputs("test")  # type: ignore[attr-defined]
    with torch.no_grad():
        fp32 = model.eval()(torch.from_numpy(x)).numpy()  # type: ignore[attr-defined]
    manifest = json.loads((out / "manifest.json").read_text())
    qi, qo = manifest["input"], manifest["output"]
    q = np.clip(np.round(x / qi["scale"]) + qi["zero_point"], -128, 127).astype(np.int8)
    y = run_tflm((out / "model" / "model_int8.tflite").read_bytes(), q).reshape(len(x), -1)
    tflm = (y.astype(np.float32) - qo["zero_point"]) * np.float32(qo["scale"])
    return {"fp32": ((fp32 - x) ** 2).mean(axis=1), "tflm": ((tflm - x) ** 2).mean(axis=1)}


def _round(d: dict[str, object]) -> dict[str, object]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def _variant(out: Path, recipe: object, dataset: object, frames: dict[str, np.ndarray],
             per_clip: int) -> dict[str, object]:
    from tinyprec.pipeline import run_recipe
    from tinyprec.recipe import build_model_for

    t0 = time.perf_counter()
    result = run_recipe(recipe, out_dir=out)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    report = json.loads((out / "report" / "report.json").read_text())
    import torch

    model = build_model_for(recipe)  # type: ignore[arg-type]
    model.load_state_dict(torch.load(out / "train" / "model_fp32.pt", map_location="cpu", weights_only=True))
    err = _errors(out, dataset, model)
    quant = json.loads((out / "quant" / "metrics.json").read_text())
    search = quant.get("search") or {}
    return {
        "seconds": round(seconds, 1),
        "stages": {o.stage: [o.status, round(o.seconds, 1)] for o in result.stages},
        "vector_auc_x100": _round(report["accuracy"]),
        "auc_drop_points": _round(report["drop"]) if isinstance(report.get("drop"), dict) else report.get("drop"),
        "recon_mse": _round(report["reconstruction"]["mse"]),
        "recon_increase_pct": _round(report["reconstruction"]["increase_pct"]),
        "tflm_vs_emulator_identical_pct": report["agreement"]["tflm_vs_emulator"]["identical_outputs"],
        "gate_passed": result.gate_passed,
        "clip_auc_x100_mlperf": {"fp32": _clip_aucs(err["fp32"], frames, per_clip),
                                 "tflm": _clip_aucs(err["tflm"], frames, per_clip)},
        "model_bytes": (out / "model" / "model_int8.tflite").stat().st_size,
        "arena_bytes": json.loads((out / "manifest.json").read_text())["arena_bytes"],
        "assignment": search.get("assignment") if isinstance(search, dict) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ad.json")
    parser.add_argument("--recipe", type=Path, default=ROOT / "models" / "ad_autoencoder.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-mixed", action="store_true", help="Skip the per-layer mixed-precision variant.")
    parser.add_argument("--search-max-drop", type=float, default=0.01,
                        help="mixed: allowed validation MSE increase over all-int8 PTQ (absolute, normalized units)")
    args = parser.parse_args()

    import torch

    from tinyprec.data import load_dataset
    from tinyprec.data.logmel import MLPERF_AD
    from tinyprec.data.machine_sounds import MachineConfig, load_frames
    from tinyprec.recipe import load_recipe

    torch.set_num_threads(1)
    base = load_recipe(args.recipe)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tinyprec-ad-") as tmp:
        work = Path(tmp)
        os.environ["TINYPREC_CACHE"] = str(work / "cache")
        for seed in args.seeds:
            recipe = dataclasses.replace(base, seed=seed)
            t0 = time.perf_counter()
            dataset = load_dataset(recipe.data, seed, recipe.path.parent if recipe.path else None)
            data_s = time.perf_counter() - t0
            clips = tuple(recipe.data.clips) if recipe.data.clips else MachineConfig().clips
            mc = MachineConfig(clips=clips)  # type: ignore[arg-type]
            frames = load_frames(mc, seed)
            per_clip = MLPERF_AD.frames(mc.samples) - MLPERF_AD.context_frames + 1
            row: dict[str, object] = {
                "seed": seed, "data_seconds": round(data_s, 1),
                "vectors": {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
                "test_clips": {"normal": int((frames["flag_test"] == 0).sum()),
                               "anomalous": int((frames["flag_test"] == 1).sum())},
            }
            print(f"seed {seed}: data {row['vectors']} in {data_s:.1f} s", flush=True)
            row["int8"] = _variant(work / f"s{seed}", recipe, dataset, frames, per_clip)
            print(f"  int8: {row['int8']['vector_auc_x100']}", flush=True)
            if not args.no_mixed:
                mixed = dataclasses.replace(recipe, quant=dataclasses.replace(
                    recipe.quant, bits="mixed", search_max_drop=args.search_max_drop))
                # Trained again in its own folder: training is deterministic (fp32, one thread), so the FP32
                # figures equal the int8 run's.
                row["mixed"] = _variant(work / f"s{seed}_mixed", mixed, dataset, frames, per_clip)
                print(f"  mixed: {row['mixed']['vector_auc_x100']}", flush=True)
            runs.append(row)

    def mean_sd(path: tuple[str, ...]) -> dict[str, float]:
        vals = []
        for r in runs:
            v: object = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None  # type: ignore[union-attr]
            if isinstance(v, (int, float)):
                vals.append(float(v))
        if not vals:
            return {}
        return {"mean": round(float(np.mean(vals)), 2), "sd": round(float(np.std(vals)), 2), "n": len(vals)}

    summary = {f"{variant}_{metric}_{runner}": mean_sd((variant, key, runner) + (() if sub is None else (sub,)))
               for variant in ("int8", "mixed")
               for metric, key, sub in (("vector_auc", "vector_auc_x100", None),
                                        ("clip_auc", "clip_auc_x100_mlperf", "mean_over_machines"))
               for runner in ("fp32", "tflm")}
    doc = {
        "benchmark": "ad_autoencoder on machine_sounds (simulated fans, MLPerf Tiny AD log-mel 5 x 128)",
        "recipe": str(args.recipe.resolve().relative_to(ROOT)) if args.recipe.resolve().is_relative_to(ROOT)
        else str(args.recipe),
        "metric": "ROC AUC x100 of the reconstruction error; vector = validation's per-640-vector AUC on the test "
                  "split; clip = MLPerf's (clip score = mean vector error, AUC per machine ID, mean over IDs)",
        "mixed_search_max_drop_mse": None if args.no_mixed else args.search_max_drop,
        "summary": {k: v for k, v in summary.items() if v},
        "runs": runs,
        "platform": {"python": platform.python_version(), "machine": platform.machine(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["summary"], indent=1))


if __name__ == "__main__":
    main()
