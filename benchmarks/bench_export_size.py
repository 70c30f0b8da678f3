"""The export stage on every zoo architecture: flash, arena and agreement, beside the MLPerf references.

Usage: python benchmarks/bench_export_size.py [--archs a,b,...] [--out OUT.json]
       (default: all six zoo architectures; benchmarks/results/export_size.json)

Each architecture gets a short QAT on synthetic data (as tests/test_export_zoo.py does), then the full
export stage (tinyprec.exporting.export_converted) into a temporary run folder. Measured:

* file bytes, constant bytes (sum of constant buffers, read back from the file), overhead = the rest;
* the arena the firmware bundle uses: TFLM's smallest arena_size that allocates (crash-safe probes);
* agreement of TFLM with the converted PyTorch model: end to end (exact fraction, max |diff| in LSB)
  and per op with TFLM's inputs injected (worst op); TFLM vs TF Lite reference kernels.

ds_cnn and resnet8 are compared with kws_ref_model.tflite and pretrainedResnet_quant.tflite measured the
same way in the same run (issue 4: overhead at most half the converter's, arena no larger).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "mlperf_tiny"
REFERENCES = {"ds_cnn": "kws_ref_model.tflite", "resnet8": "pretrainedResnet_quant.tflite"}
ARCHS = ["digits_cnn", "mnist1d_cnn", "ds_cnn", "resnet8", "mobilenet_v1", "fc_autoencoder"]


def size_of(tflite: bytes) -> dict[str, int]:
    from tinyprec.exporting.arena import smallest_arena
    from tinyprec.formats.tflite_reader import read_tflite

    const = read_tflite(tflite).const_bytes()
    return {"file_bytes": len(tflite), "const_bytes": const, "overhead_bytes": len(tflite) - const,
            "arena_bytes": smallest_arena(tflite)}


def measure(arch: str) -> dict[str, object]:
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.test_export_zoo import short_qat
    from tinyprec.exporting import export_converted
    from tinyprec.lowering.driver import lower_with_trace
    from tinyprec.lowering.check import compare_with_converted, describe, per_op_agreement
    from tinyprec.recipe import ExportConfig
    from tinyprec.zoo import build_model

    t0 = time.perf_counter()
    converted, ds = short_qat(arch)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = export_converted(converted, build_model(arch, {}), ds, ExportConfig(golden_vectors=2), Path(tmp),
                                  name=arch)
        tflite = result.tflite_path.read_bytes()
    t2 = time.perf_counter()
    x = ds.inputs("test")[: 4 if arch == "mobilenet_v1" else 16]
    lowered = lower_with_trace(converted, torch.from_numpy(x[:2]), name=arch)
    end_to_end = compare_with_converted(converted, lowered.graph, tflite, x)
    ops = per_op_agreement(converted, lowered, tflite, x)
    worst = max(ops, key=lambda o: o.mismatch_fraction)
    entry: dict[str, object] = {
        "ours": {**size_of(tflite), "ops": [t.value for t in result.graph.op_types()]},
        "export_arena_bytes": result.arena_bytes,
        "agreement": {**describe(end_to_end), "samples": int(x.shape[0]),
                      "worst_op": {"tensor": worst.tensor, "op": worst.op, "source": worst.source,
                                   "mismatch_fraction": worst.mismatch_fraction,
                                   "max_abs_diff": worst.max_abs_diff},
                      "ops_max_abs_diff": max(o.max_abs_diff for o in ops)},
        "seconds": {"qat": round(t1 - t0, 1), "export": round(t2 - t1, 1)},
    }
    if arch in REFERENCES:
        ref = size_of((FIXTURES / REFERENCES[arch]).read_bytes())
        ours = entry["ours"]
        assert isinstance(ours, dict)
        entry["reference"] = {"file": REFERENCES[arch], **ref}
        entry["overhead_ratio"] = round(ours["overhead_bytes"] / ref["overhead_bytes"], 3)
        entry["within_bounds"] = entry["overhead_ratio"] <= 0.5 and ours["arena_bytes"] <= ref["arena_bytes"]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_size.json")
    args = parser.parse_args()
    results = {}
    for arch in args.archs.split(","):
        results[arch] = measure(arch)
        print(arch, json.dumps(results[arch]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
