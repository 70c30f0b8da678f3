"""TFLM vs the converted PyTorch program, plain and rewritten by tflm_exact, on every zoo architecture.

Usage: python benchmarks/bench_quant_exact.py [--archs a,b,...] [--samples N] [--out OUT.json]
       (default: all six zoo architectures; benchmarks/results/quant_exact.json)

Each architecture gets a short QAT on synthetic data (tests/test_export_zoo.py's short_qat), is lowered
and written to .tflite; TFLM and TF Lite (reference kernels) run the same int8 batch. Measured per
architecture: the fraction of output elements where TFLM equals the plain converted program and the
tflm_exact program, the largest |difference| in LSB of each, how many chains tflm_exact rewrote, and the
seconds the rewrite and one forward pass of each program take on the batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["digits_cnn", "mnist1d_cnn", "ds_cnn", "resnet8", "mobilenet_v1", "fc_autoencoder"]


def measure(arch: str, samples: int) -> dict[str, object]:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from test_export_zoo import short_qat

    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import compare_with_converted, describe, float_input_for, quantize_input

    heavy = arch == "mobilenet_v1"
    n = min(samples, 8) if heavy else samples
    converted, ds = short_qat(arch, samples=max(3 * n, 20), batch_size=4 if heavy else 8)
    x = ds.inputs("test")[:n]
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name=arch)
    data = write_tflite(graph)
    t0 = time.perf_counter()
    exact_gm = tflm_exact(converted)
    rewrite_s = time.perf_counter() - t0
    xf = torch.from_numpy(float_input_for(quantize_input(x, graph.tensors[graph.inputs[0]].qparams),
                                          graph.tensors[graph.inputs[0]].qparams))
    timing = {}
    for name, gm in (("plain", converted), ("exact", exact_gm)):
        with torch.no_grad():
            gm(xf)
            t0 = time.perf_counter()
            gm(xf)
            timing[name] = time.perf_counter() - t0
    return {
        "samples": int(x.shape[0]),
        "rewritten_chains": sum(1 for nd in exact_gm.graph.nodes if nd.op == "call_module"),
        "plain": describe(compare_with_converted(converted, graph, data, x)),
        "exact": describe(compare_with_converted(exact_gm, graph, data, x)),
        "rewrite_seconds": round(rewrite_s, 4),
        "forward_seconds": {k: round(v, 4) for k, v in timing.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quant_exact.json"))
    args = parser.parse_args()
    from tinyprec._io import atomic_write_text

    results = {arch: measure(arch, args.samples) for arch in args.archs.split(",")}
    for arch, r in results.items():
        print(f"{arch:15s} plain {r['plain']['exact_fraction']:.4f} (max {r['plain']['max_abs_diff']})  "
              f"exact {r['exact']['exact_fraction']:.4f} (max {r['exact']['max_abs_diff']})")
    atomic_write_text(Path(args.out), json.dumps({"archs": results}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
