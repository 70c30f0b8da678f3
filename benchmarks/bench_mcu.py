"""The firmware on an emulated Cortex-M4: measured instructions, flash and RAM per model and kernel set,
and the instruction-based latency model fitted on MLPerf Tiny KWS + IC, checked on VWW + AD (held out).

Usage: python benchmarks/bench_mcu.py [--tree DIR] [--zoo DIR] [--samples N] [--mlperf-tiny DIR] [OUT.json]
(default tree ../shared/third_party/tflm, OUT benchmarks/results/mcu.json)

Models: the MLPerf Tiny reference KWS and IC files (../shared/fixtures/mlperf_tiny) and our zoo exports of
the VWW (mobilenet_v1, alpha 0.25, 96x96x3) and AD (fc_autoencoder, 640) architectures, same shapes as
MLPerf's (AD lowered with FULLY_CONNECTED as MLPerf's file has it; our default CONV_2D lowering is listed as
ad_conv2d, not part of the check); the zoo exports are made with `tinyprec run models/<recipe>.toml --stages train,qat,export`
into --zoo (default export/) when missing. Given a clone of mlcommons/tiny (--mlperf-tiny), MLPerf's own VWW
and AD files (vww_96_int8.tflite, ad01_int8.tflite) run too, held out as vww_mlperf and ad_mlperf. Each model runs with reference and CMSIS-NN kernels: golden
vectors on the core, N random samples compared with host TFLM, instructions per inference (QEMU -icount).
The published MLPerf Tiny figures (Nucleo-L4R5ZI, Cortex-M4 @ 120 MHz) were built with CMSIS-NN, so the
cycles-per-instruction fit uses the CMSIS-NN counts; the MAC-based estimate (tinyprec.mcu.latency) is
listed beside it.

With the optional `tinyprec[trace]` extra (unicorn, capstone) each CMSIS-NN image is also traced exactly on
the Unicorn engine (tinyprec.mcu.trace): instructions by class, documented Cortex-M4 cycles, taken branches,
executed code bytes and flash data reads of one inference (golden vector 0; its instruction total is set
beside QEMU's). The instruction-mix latency models (tinyprec.mcu.latency.MIX_MODELS) are fitted on KWS + IC
and checked on VWW + AD beside the single-CPI model, under "latency_models".
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.mcu import latency
from tinyprec.mcu.emulated import compare_with_host, measure, random_inputs, write_bundle_for_tflite
from tinyprec.mcu.macs import total_macs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "mlperf_tiny"
RECIPES = {"vww": "vww_mobilenet_v1", "ad": "ad_autoencoder"}
KERNELS = ("reference", "cmsis-nn")


def _fully_connected_variant(run: Path) -> Path:
    """The run's converted program lowered with FULLY_CONNECTED for nn.Linear, as MLPerf's AD model has it
    (our export lowers Linear to CONV_2D by default, which CMSIS-NN runs as a 1x1 convolution)."""
    import torch

    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.converted import load_converted
    from tinyprec.lowering.driver import lower_to_ir

    path = run / "model" / "model_int8_fc.tflite"
    graph = lower_to_ir(load_converted(run), torch.zeros(1, 640), name="ad_autoencoder_fc", linear_as_conv=False)
    path.write_bytes(write_tflite(graph))
    return path


def _trace_mix(elf: Path) -> dict[str, object] | None:
    """The exact instruction mix of golden vector 0 on Unicorn, or None without the trace extra."""
    try:
        import capstone  # noqa: F401
        import unicorn  # noqa: F401
    except ImportError:
        print("no unicorn/capstone (pip install 'tinyprec[trace]'): instruction-mix models skipped", flush=True)
        return None
    from tinyprec.mcu.trace import instruction_mix, trace_invokes

    t0 = time.perf_counter()
    traces, console = trace_invokes(elf, flash_reads=True, unaligned=True, run_to_end=True)
    mix = instruction_mix(traces[0]).as_dict()
    mix["golden_passed_on_unicorn"] = "output elements differ -> PASS" in console
    mix["trace_seconds"] = round(time.perf_counter() - t0, 1)
    return mix


MLPERF_FILES = {"vww_mlperf": "benchmark/training/visual_wake_words/trained_models/vww_96_int8.tflite",
                "ad_mlperf": "benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite"}


def model_files(zoo: Path, mlperf_tiny: Path | None = None) -> dict[str, Path]:
    files = {"kws": FIXTURES / "kws_ref_model.tflite", "ic": FIXTURES / "pretrainedResnet_quant.tflite"}
    for key, recipe in RECIPES.items():
        path = zoo / recipe / "model" / "model_int8.tflite"
        if not path.is_file():
            from tinyprec.pipeline import run_recipe

            run_recipe(ROOT / "models" / f"{recipe}.toml", out_dir=zoo / recipe, stages="train,qat,export")
        files[key] = path
    files["ad_conv2d"] = files["ad"]
    files["ad"] = _fully_connected_variant(zoo / RECIPES["ad"])
    for key, rel in MLPERF_FILES.items():
        if mlperf_tiny is not None:
            if not (mlperf_tiny / rel).is_file():
                raise SystemExit(f"--mlperf-tiny {mlperf_tiny}: no {rel}; give a clone of github.com/mlcommons/tiny")
            files[key] = mlperf_tiny / rel
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=str(ROOT / "benchmarks" / "results" / "mcu.json"))
    ap.add_argument("--tree", default=str(SHARED / "third_party" / "tflm"))
    ap.add_argument("--zoo", default=str(ROOT / "export"))
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--mlperf-tiny", default=None, help="a clone of mlcommons/tiny: also run MLPerf's own VWW and AD files")
    ap.add_argument("--work", default=str(ROOT / "export" / "bench_mcu"))
    args = ap.parse_args()
    work = Path(args.work)
    rows: dict[str, dict[str, object]] = {}
    for key, path in model_files(Path(args.zoo), Path(args.mlperf_tiny) if args.mlperf_tiny else None).items():
        data = path.read_bytes()
        graph = read_tflite(data)
        inp = graph.tensors[graph.inputs[0]]
        bundle = write_bundle_for_tflite(data, work / key / "bundle", golden=2, where=str(path))
        x = random_inputs(tuple(inp.shape[1:]), inp.dtype.numpy, args.samples, seed=11)
        row: dict[str, object] = {"file": str(path.relative_to(ROOT.parent) if path.is_relative_to(ROOT.parent) else path),
                                  "bytes": len(data), "macs": total_macs(graph),
                                  "mac_estimate_ms": latency.estimate_latency_ms(graph, "cortex-m4@120")}
        for kernels in KERNELS:
            t0 = time.perf_counter()
            m = measure(bundle, x, tree=Path(args.tree), target="cortex-m4", kernels=kernels, build_dir=work / key / kernels)
            cmp = compare_with_host(data, x, m.outputs)
            d = m.as_dict()
            row[kernels] = {"instructions": m.instructions_per_inference, "golden_passed": m.golden_passed,
                            "identical_to_host_tflm": f"{cmp.identical_samples}/{cmp.samples}",
                            "flash": d["flash"], "ram": d["ram"], "per_op": d["instructions"]["per_op"],
                            "build": d["build"], "qemu_seconds": d["run_seconds"],
                            "wall_seconds": round(time.perf_counter() - t0, 1)}
            print(key, kernels, m.instructions_per_inference, d["flash"]["total_bytes"], d["ram"]["total_bytes"],
                  row[kernels]["identical_to_host_tflm"], flush=True)  # type: ignore[index]
        rows[key] = row
        mix = _trace_mix(work / key / "cmsis-nn" / "app.elf")
        if mix is not None:
            row["instruction_mix"] = mix
            print(key, "traced", mix["instructions"], "documented cycles", mix["base_cycles"], flush=True)
    instr = {k: float(r["cmsis-nn"]["instructions"]) for k, r in rows.items()}  # type: ignore[index]
    published_all = {**latency.PUBLISHED_MS, "ad_conv2d": latency.PUBLISHED_MS["ad"],
                     **{k: latency.PUBLISHED_MS[v] for k, v in latency.HELD_OUT_FILES.items()}}
    fit = latency.fit_cpi(instr, published_all)
    for key, row in rows.items():
        published = latency.PUBLISHED_MS[key.split("_")[0]]
        row["published_ms"] = published
        row["role"] = fit["role"][key]  # type: ignore[index]
        row["instruction_estimate_ms"] = fit["predicted_ms"][key]  # type: ignore[index]
        row["instruction_estimate_error"] = fit["relative_error"][key]  # type: ignore[index]
        row["mac_estimate_error"] = float(row["mac_estimate_ms"]) / published - 1  # type: ignore[arg-type]
        row["cmsis_speedup"] = row["reference"]["instructions"] / row["cmsis-nn"]["instructions"]  # type: ignore[index]
    models: dict[str, object] = {"cpi": {"parameter": fit["cpi"], "form": "cycles = CPI x instructions (QEMU -icount)",
                                         "predicted_ms": fit["predicted_ms"], "relative_error": fit["relative_error"]}}
    mixes = {k: r["instruction_mix"] for k, r in rows.items() if "instruction_mix" in r}
    if all(k in mixes for k in latency.FITTED_ON):
        for name in latency.MIX_MODELS:
            models[name] = latency.fit_mix_model(mixes, name, published_all)  # type: ignore[arg-type]
        models["documented_cpi"] = {k: m["base_cycles"] / m["instructions"] for k, m in mixes.items()}  # type: ignore[index,operator]
        models["needed_cpi"] = {k: published_all[k] * latency.PUBLISHED_MHZ * 1e3 / m["instructions"]  # type: ignore[index,operator]
                                for k, m in mixes.items()}
    result = {
        "target": "cortex-m4 (QEMU mps2-an386, -icount shift=0)", "published_at": "Nucleo-L4R5ZI, Cortex-M4 @ 120 MHz, CMSIS-NN",
        "cpi_fit": fit["cpi"], "cpi_in_code": latency.CPI_M4_CMSIS_NN, "fitted_on": list(latency.FITTED_ON),
        "held_out": [*latency.HELD_OUT, *(k for k in latency.HELD_OUT_FILES if k in rows)], "samples_per_model": args.samples, "models": rows,
        "latency_models": models, "mix_refill_cycles": latency.MIX_REFILL_CYCLES,
        "host": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)) + "\n")
    print(json.dumps({k: {"role": r["role"], "published": r["published_ms"], "est": round(r["instruction_estimate_ms"], 2),
                          "err": round(r["instruction_estimate_error"], 3)} for k, r in rows.items()}, indent=1))
    print("cpi", fit["cpi"])
    for name, mdl in models.items():
        if isinstance(mdl, dict) and "relative_error" in mdl:
            print(name, round(float(mdl["parameter"]), 4), {k: round(v, 3) for k, v in mdl["relative_error"].items()})


if __name__ == "__main__":
    main()
