"""Error of the int8 LayerNorm decomposition (quant/norm_rewrite.py) vs PyTorch's float LayerNorm, as TFLM runs it.

A LayerNorm(F) alone (weight in [0.5, 1.5], bias in [-0.5, 0.5]) on (N, T, F) Gaussian input, quantized with
PTQ (tests/_ops_e2e.py ``convert``: a dataset of ``--samples``, calibrated on 4 batches of 16); the test samples (the quantizer's held-out split) go through TFLM and the float
LayerNorm is applied to the same dequantized int8 input, so only the decomposition's error is measured, in
output LSB and as SQNR, next to the floor of rounding the exact LayerNorm to the same int8 output. Tokens
where an intermediate tensor saturates (a test value beyond the calibrated range) are reported apart.

    python benchmarks/bench_layer_norm.py [--features 16] [--tokens 8] [--samples 256]

Writes benchmarks/results/layer_norm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(features: int, tokens: int, calib: int) -> dict[str, object]:
    import torch

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's package and test helpers
    from _ops_e2e import convert  # the product quantizer's PTQ, as the op tests use it

    from tinyprec.emulator import Emulator
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import quantize_input
    from tinyprec.ir.layout import from_ir_layout, to_ir_layout
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.runtimes.tflm import run_tflm

    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(features)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    converted, x = convert(ln, (tokens, features), n=calib)
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="layer_norm")
    qi, qo = graph.tensors[graph.inputs[0]].qparams, graph.tensors[graph.outputs[0]].qparams
    q = quantize_input(x, qi)
    x_ir = to_ir_layout(q, "NCL")
    y = np.asarray(run_tflm(write_tflite(graph), x_ir)).reshape((len(q), *graph.tensors[graph.outputs[0]].shape[1:]))
    y = from_ir_layout(y, "NCL").astype(np.float64)
    got = (y - int(qo.zero_point[0])) * float(qo.scale[0])
    xd = (q.astype(np.float64) - int(qi.zero_point[0])) * float(qi.scale[0])
    ref = ln(torch.from_numpy(xd).float()).detach().double().numpy()
    lsb = float(qo.scale[0])
    err = got - ref
    floor = (np.clip(np.round(ref / lsb) + int(qo.zero_point[0]), -128, 127) - int(qo.zero_point[0])) * lsb - ref
    taps = Emulator(graph).run_with_taps(x_ir)
    saturated = np.zeros((len(q), tokens), bool)
    for op in graph.ops:
        t = taps[op.outputs[0]]
        hit = (t == 127) if op.type.value == "MUL" and op.inputs[0] == op.inputs[1] else (t == 127) | (t == -128)
        saturated |= hit.reshape(len(q), -1, tokens).any(axis=1)

    def stats(e: np.ndarray, r: np.ndarray) -> dict[str, float]:
        return {"outputs": int(e.size), "max_abs_err_lsb": float(np.abs(e).max() / lsb),
                "mean_abs_err_lsb": float(np.abs(e).mean() / lsb),
                "within_1_lsb": float((np.abs(e) <= lsb * 1.0001).mean()),
                "sqnr_db": float(10 * np.log10((r ** 2).mean() / (e ** 2).mean()))}

    ok = ~saturated
    return {
        "features": features, "tokens": tokens, "dataset_samples": calib, "calibration_samples": 64, "test_samples": int(len(q)),
        "ops": [op.type.value for op in graph.ops], "output_scale": lsb,
        "all_tokens": stats(err, ref),
        "tokens_without_saturated_intermediate": {"share": float(ok.mean()), **stats(err[ok], ref[ok])},
        "rounding_floor_sqnr_db": float(10 * np.log10((ref ** 2).mean() / (floor ** 2).mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    result = measure(args.features, args.tokens, args.samples)
    out = ROOT / "benchmarks" / "results" / "layer_norm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
