"""Fit the latency model on the MLPerf Tiny reference models and write the fit as JSON.

Usage: python benchmarks/bench_latency_model.py [OUT.json]   (default benchmarks/results/latency_model.json)
The two published latencies (TFLM reference kernels, Cortex-M4 @ 120 MHz) fix the two cycles-per-MAC
figures exactly; the one-class fit shows the error a single figure leaves on the same points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.mcu import latency
from tinyprec.mcu.macs import op_costs, total_macs

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "mlperf_tiny"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latency_model.json"
    graphs = {name: read_tflite((FIXTURES / name).read_bytes()) for name in latency.CALIBRATION_POINTS}
    fit = latency.fit_calibration((name, op_costs(g)) for name, g in graphs.items())
    result = {
        "published_ms": latency.CALIBRATION_POINTS,
        "macs": {name: total_macs(g) for name, g in graphs.items()},
        "cycles_per_mac_fit": fit.cycles_per_mac,
        "cycles_per_mac_in_code": latency.CYCLES_PER_MAC,
        "predicted_ms_with_code_constants": {n: latency.estimate_latency_ms(g, "cortex-m4@120") for n, g in graphs.items()},
        "fit_relative_error": fit.relative_error,
        "one_class_cycles_per_mac": fit.one_class_cycles_per_mac,
        "one_class_relative_error": fit.one_class_relative_error,
        "other_targets_ms": {n: {t: latency.estimate_latency_ms(g, t) for t in latency.CORES} for n, g in graphs.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
