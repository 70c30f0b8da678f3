"""4-bit weights: PTQ vs QAT on one FP32 model per architecture (issue 10), fake-quant test accuracy.

    python benchmarks/bench_int4_qat.py [--archs mnist1d_cnn digits_cnn] [--seeds 0 1 2] [--out FILE]

Per architecture one FP32 training (fp32, recipe epochs), then with 3 QAT epochs per run:
int8 (PTQ and QAT), and w4a8 (4-bit per-channel weights, int8 activations) three ways:
``mse_lsq`` (MSE-optimal PTQ scales, QAT learns them: the default), ``minmax_lsq`` (min-max start, learned),
``minmax_fixed`` (min-max scales that follow the weights, no learned step size). The QAT number is the QAT
program's test accuracy whether or not stage 2 kept it over PTQ. Results: benchmarks/results/int4_qat.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "int8": dict(bits="int8"),
    "w4a8_mse_lsq": dict(bits="w4a8", weight_scales="mse", learn_scales=True),
    "w4a8_minmax_lsq": dict(bits="w4a8", weight_scales="minmax", learn_scales=True),
    "w4a8_minmax_fixed": dict(bits="w4a8", weight_scales="minmax", learn_scales=False),
}
DATA = {"mnist1d_cnn": ("mnist1d", 10), "digits_cnn": ("digits", 8)}


def main() -> None:
    import torch

    from tinyprec.data import load_dataset
    from tinyprec.quant.stage import quantize_model
    from tinyprec.recipe import DataConfig, QuantConfig, TrainConfig
    from tinyprec.training import train_model
    from tinyprec.zoo import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(DATA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int4_qat.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"seeds": args.seeds, "qat_epochs": 3, "archs": {}}
    for arch in args.archs:
        data, epochs = DATA[arch]
        ds = load_dataset(DataConfig(name=data), seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            trained = train_model(build_model(arch, {}), ds, TrainConfig(epochs=epochs, precision="fp32"), tmp, seed=0)
            row: dict = {"test_samples": int(len(ds.test.y)), "fp32_epochs": epochs}
            for name, knobs in VARIANTS.items():
                runs = []
                for seed in args.seeds:
                    t0 = time.perf_counter()
                    cfg = QuantConfig(mode="qat", epochs=3, autocast="fp32", **knobs)  # type: ignore[arg-type]
                    r = quantize_model(trained.model, ds, cfg, tmp, seed=seed)
                    m = json.loads(Path(r.metrics_path).read_text())
                    qat = m["qat_test"] if m.get("qat_test") is not None else m.get("qat_test_rejected")
                    runs.append({"seed": seed, "fp32": r.fp32_accuracy, "ptq": r.ptq_accuracy, "qat": qat,
                                 "kept": r.selected, "seconds": round(time.perf_counter() - t0, 1)})
                    print(arch, name, runs[-1], flush=True)
                row[name] = runs
            results["archs"][arch] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
