"""Keyword spotting on spoken_keywords: the full kws_ds_cnn recipe, and MLPerf Tiny's own KWS model on our data.

1. Generates the spoken_keywords data (timed; a fresh cache folder unless --reuse-cache), then runs
   `tinyprec run models/kws_ds_cnn.toml` (train, QAT, export, validate): FP32 and int8-on-TFLM top-1 on the
   test speakers (voice variants never heard in training), the gate, time per stage.
2. Writes the test split with `tinyprec data ... --raw` and evaluates MLPerf Tiny's reference model
   (../shared/fixtures/mlperf_tiny/kws_ref_model.tflite, trained on real Speech Commands) on it with
   `tinyprec validate --tflite` (TFLM, TF Lite and the emulator), with per-class recall. Chance is 8.3%.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_kws.py [--out benchmarks/results/kws.json] [--reuse-cache]

(One torch thread: on the shared 2-core machine two threads ran an epoch 7x slower.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "fixtures" / "mlperf_tiny" / "kws_ref_model.tflite"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "tinyprec", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * fraction, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kws.json")
    parser.add_argument("--recipe", type=Path, default=ROOT / "models" / "kws_ds_cnn.toml")
    parser.add_argument("--reuse-cache", action="store_true", help="Use the normal data cache (skip timing generation).")
    args = parser.parse_args()

    import torch

    from tinyprec.data import load_dataset
    from tinyprec.pipeline import run_recipe
    from tinyprec.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    with tempfile.TemporaryDirectory(prefix="tinyprec-kws-") as tmp:
        work = Path(tmp)
        if not args.reuse_cache:
            os.environ["TINYPREC_CACHE"] = str(work / "cache")
        t0 = time.perf_counter()
        dataset = load_dataset(recipe.data, recipe.seed, recipe.path.parent if recipe.path else None)
        data_s = time.perf_counter() - t0
        print(f"data: {len(dataset.train)}/{len(dataset.val)}/{len(dataset.test)} clips in {data_s:.1f} s", flush=True)

        out = work / "run"
        t0 = time.perf_counter()
        result = run_recipe(recipe, out_dir=out, hooks=None)
        pipeline_s = time.perf_counter() - t0
        s = result.summary
        report = json.loads((out / "report" / "report.json").read_text())
        train_metrics = json.loads((out / "train" / "metrics.json").read_text())
        quant_metrics = json.loads((out / "quant" / "metrics.json").read_text())
        print(f"run: fp32 {s.get('fp32_accuracy')}, tflm {s.get('mcu_accuracy')}, gate {result.gate_passed}", flush=True)

        npz = work / "test.npz"
        made = _cli("data", str(args.recipe), "--split", "test", "--raw", "--out", str(npz))
        if made.returncode != 0:
            raise SystemExit(made.stderr)
        ref: dict[str, object] = {"model": "shared/fixtures/mlperf_tiny/kws_ref_model.tflite"}
        if REFERENCE.is_file():
            checked = _cli("validate", "--tflite", str(REFERENCE), "--data", str(npz), "--out", str(work / "ref"))
            ref_report = json.loads((work / "ref" / "report" / "report.json").read_text())
            ref["accuracy_percent"] = ref_report["accuracy"]
            ref["tflm_vs_emulator_identical_percent"] = ref_report["agreement"]["tflm_vs_emulator"]["identical_outputs"]
            ref["exit_code"] = checked.returncode
            # Per-class recall on TFLM's int8 input, computed here with the emulator (bit-exact with TFLM).
            from tinyprec.emulator import Emulator
            from tinyprec.formats.tflite_reader import read_tflite

            graph = read_tflite(REFERENCE.read_bytes())
            qp = graph.tensors[graph.inputs[0]].qparams
            with np.load(npz) as f:
                x, y = f["x"], f["y"]
            q = np.clip(np.round(x / qp.scale[0]) + qp.zero_point[0], -128, 127).astype(np.int8).reshape(len(x), 49, 10, 1)
            pred = np.argmax(Emulator(graph).run(q), axis=-1).reshape(-1)
            ref["emulator_accuracy_percent"] = round(100.0 * float(np.mean(pred == y)), 2)
            ref["recall_percent"] = {label: round(100.0 * float(np.mean(pred[y == c] == c)), 1)
                                     for c, label in enumerate(dataset.class_labels)}
            ref["predicted_share_percent"] = {label: round(100.0 * float(np.mean(pred == c)), 1)
                                              for c, label in enumerate(dataset.class_labels)}
            print(f"reference model: {ref['accuracy_percent']}", flush=True)

    doc = {
        "benchmark": "kws_ds_cnn on spoken_keywords (espeak-ng speech, MLPerf Tiny MFCC)",
        "recipe": str(args.recipe.resolve().relative_to(ROOT)) if args.recipe.resolve().is_relative_to(ROOT)
        else str(args.recipe),
        "seed": recipe.seed,
        "samples": {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
        "data_seconds": round(data_s, 1) if not args.reuse_cache else None,
        "accuracy_percent": {"fp32": s.get("fp32_accuracy"), "fake_quant": s.get("fake_quant_accuracy"),
                             "tflm_int8": s.get("mcu_accuracy"), "ptq_fake_quant": s.get("ptq_accuracy")},
        "report_accuracy_percent": report["accuracy"],
        "val_accuracy_percent": {"fp32": _pct(train_metrics.get("val_accuracy")),
                                 "qat_fake_quant": quant_metrics.get("val_qat"),  # stage 2 reports percent
                                 "ptq_fake_quant": quant_metrics.get("val_ptq")},
        "quant_selected": quant_metrics.get("selected"),
        "train_config": train_metrics["config"],
        "train_epochs": [{"epoch": e["epoch"], "train_accuracy": _pct(e["train_accuracy"]),
                          "val_accuracy": _pct(e["val_accuracy"]), "seconds": round(e["seconds"], 1)}
                         for e in train_metrics["epochs"]],
        "gate_passed": result.gate_passed,
        "max_drop": recipe.validate.max_drop,
        "pipeline_seconds": round(pipeline_s, 1),
        "stage_seconds": {o.stage: round(o.seconds, 1) for o in result.stages},
        "mlperf_reference_model": ref,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                    "note": "2 cores shared with other jobs"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
