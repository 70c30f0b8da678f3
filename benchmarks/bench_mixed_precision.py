"""Mixed-precision benchmark: step time of fp32 vs bf16 (and fp16 on CUDA) on digits_cnn and ds_cnn.

    python benchmarks/bench_mixed_precision.py [--out FILE] [--steps 20] [--threads N] [--cpu-fp16]
    python benchmarks/bench_mixed_precision.py --accuracy [--recipes digits_cnn mnist1d_cnn]

The step is tinyprec's own training step (autocast forward, scaled backward, FP32 AdamW update).
``--accuracy`` trains each recipe in fp32 and bf16 with its own settings and records the test accuracies.
Results are JSON (default benchmarks/results/mixed_precision.json or mixed_precision_accuracy.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = {"digits_cnn": ((1, 8, 8), 10), "ds_cnn": ((1, 49, 10), 12)}


def _environment(device: Any) -> dict[str, Any]:
    import torch

    from tinyprec.training import cpu_has_native_bf16, select_precision

    env = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "threads": torch.get_num_threads(), "device": str(device),
        "cpu_native_bf16": cpu_has_native_bf16(), "auto_precision": select_precision("auto", device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def step_times(arch: str, precision: str, device: Any, batch: int, steps: int, warmup: int) -> list[float]:
    """Seconds per training step of ``arch`` at ``precision`` (after ``warmup`` steps)."""
    import torch
    from torch import nn

    from tinyprec.training import make_grad_scaler, seed_everything, train_step
    from tinyprec.zoo import build_model

    shape, classes = CASES[arch]
    seed_everything(0)
    model = build_model(arch).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = make_grad_scaler(precision, device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    loss_fn = lambda out, xb, yb: nn.functional.cross_entropy(out.float(), yb)  # noqa: E731
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_step(model, x, y, loss_fn, opt, scaler, precision, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_speed(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" or args.cpu_fp16 else [])
    results: dict[str, Any] = {"environment": _environment(device), "batch_size": args.batch, "steps": args.steps,
                               "models": {}}
    for arch in CASES:
        entry: dict[str, Any] = {}
        for precision in precisions:
            times = step_times(arch, precision, device, args.batch, args.steps, args.warmup)
            entry[precision] = {"median_step_s": statistics.median(times), "min_step_s": min(times)}
        for precision in precisions[1:]:
            entry[f"{precision}_over_fp32"] = entry[precision]["median_step_s"] / entry["fp32"]["median_step_s"]
        results["models"][arch] = entry
    return results


def bench_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tinyprec.data import load_dataset
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.training import seed_everything, train_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"environment": _environment(device), "recipes": {}}
    for name in args.recipes:
        recipe = load_recipe(ROOT / "models" / f"{name}.toml")
        for seed in args.seeds if args.seeds is not None else [recipe.seed]:
            dataset = load_dataset(recipe.data, seed)
            entry: dict[str, Any] = {"epochs": recipe.train.epochs, "seed": seed}
            for precision in ("fp32", "bf16"):
                seed_everything(seed)
                model = build_model_for(recipe)
                cfg = dataclasses.replace(recipe.train, precision=precision)
                with tempfile.TemporaryDirectory() as tmp:
                    res = train_model(model, dataset, cfg, Path(tmp), seed=seed)
                entry[precision] = {"test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy,
                                    "seconds": res.seconds}
            entry["bf16_minus_fp32_points"] = 100 * (entry["bf16"]["test_accuracy"] - entry["fp32"]["test_accuracy"])
            key = name if args.seeds is None else f"{name}@seed{seed}"
            results["recipes"][key] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpu-fp16", action="store_true", help="also time fp16 autocast on CPU (slow)")
    parser.add_argument("--accuracy", action="store_true", help="train recipes in fp32 and bf16, compare accuracy")
    parser.add_argument("--recipes", nargs="+", default=["digits_cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds to train with (default: the recipe's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = bench_accuracy(args) if args.accuracy else bench_speed(args)
    name = "mixed_precision_accuracy.json" if args.accuracy else "mixed_precision.json"
    out = args.out or ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
