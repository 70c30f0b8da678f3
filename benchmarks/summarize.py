"""Print the README's benchmark tables from benchmarks/results/*.json (run the bench_*.py scripts first).

    python benchmarks/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def peers() -> list[str]:
    doc = _load("peers.json")
    if not doc:
        return []
    recipes = doc["results"]
    lines = ["Accuracy on the test split, same FP32 model and data (`bench_peers.py`), top-1 %:", "",
             "| | " + " | ".join(f"{r['recipe']} ({r['test_samples']} samples)" for r in recipes) + " |",
             "|---|" + "---|" * len(recipes)]
    for label in recipes[0]["accuracy_percent"]:
        cells = [r["accuracy_percent"].get(label) for r in recipes]
        lines.append(f"| {label} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    lines += ["", "Pipeline wall time per stage (s, `tinyprec run`, same benchmark run): "
              + "; ".join(f"{r['recipe']}: " + ", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items())
                          for r in recipes), ""]
    return lines


def size_arena() -> list[str]:
    doc = _load("tflite_size_arena.json")
    if not doc:
        return []
    lines = ["Export size and TFLM arena against the MLPerf Tiny reference files (`bench_tflite_size_arena.py`):", "",
             "| model | file bytes | constant bytes | overhead | reference overhead | ratio (<= 0.5) | arena | reference arena |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("kws_ds_cnn", "ic_resnet8"):
        row = doc.get(name)
        if not row or "reference" not in row:
            continue
        o, r = row["ours"], row["reference"]
        lines.append(f"| {name} | {o['file_bytes']:,} | {o['const_bytes']:,} | {o['overhead_bytes']:,} | "
                     f"{r['overhead_bytes']:,} | {row['overhead_ratio']:.2f} | {o['arena_bytes']:,} | {r['arena_bytes']:,} |")
    return lines + [""]


def emulator() -> list[str]:
    d = _load("emulator.json")
    if not d:
        return []
    return [f"Emulator vs TFLM's Python interpreter on {d['model']} (`bench_emulator.py`, batch {d['batch']}): "
            f"TFLM {d['tflm_ms_per_sample_wall']:.2f} ms/sample, emulator {d['emulator_ms_per_sample_wall']:.3f} "
            f"ms/sample ({d['emulator_threads']} threads): **{d['speedup_wall']:.1f}x** wall "
            f"({d['speedup_cpu']:.1f}x per CPU-second); outputs identical: {d['outputs_identical_to_tflm']}.", ""]


def mixed_precision() -> list[str]:
    d = _load("mixed_precision.json")
    a = _load("mixed_precision_accuracy.json")
    if not d:
        return []
    env = d["environment"]
    lines = [f"Mixed precision (`bench_mixed_precision.py`, {env['device']}, native bf16: {env['cpu_native_bf16']}, "
             f"`auto` picks {env['auto_precision']}): step time relative to fp32: "
             + "; ".join(f"{m} bf16 {v['bf16_over_fp32']:.2f}x, fp16 {v['fp16_over_fp32']:.2f}x"
                         for m, v in d["models"].items()) + "."]
    if a:
        lines.append("Accuracy fp32 vs bf16 (test %): " + "; ".join(
            f"{m} ({v['epochs']} epochs) {100 * v['fp32']['test_accuracy']:.2f} vs {100 * v['bf16']['test_accuracy']:.2f}"
            for m, v in a["recipes"].items()) + ".")
    return lines + [""]


def latency() -> list[str]:
    d = _load("latency_model.json")
    if not d:
        return []
    err = d["one_class_relative_error"]
    return ["Latency model (`bench_latency_model.py`): cycles/MAC fitted on the published MLPerf Tiny TFLM figures "
            f"(KWS 181.9 ms, IC 704.2 ms, Cortex-M4 at 120 MHz); a single cycles/MAC figure misses them by "
            + ", ".join(f"{100 * v:+.1f}%" for v in err.values()) + ": an estimate, labelled as such.", ""]


def lowbits() -> list[str]:
    d = _load("lowbits.json")
    if not d:
        return []
    lines = [f"Fewer bits on TFLM (`bench_lowbits.py`, same FP32 model per recipe, whole test split; QAT rows: "
             f"mean [min, max] over seeds {', '.join(map(str, d['seeds']))}; PTQ is deterministic, one run):", ""]
    for r in d["results"]:
        lines += [f"**{r['recipe']}** (FP32 {r['fp32_accuracy']:.2f} %, {r['test_samples']} test samples: one is "
                  f"{r['resolution_points']:.2f} points)", "",
                  "| variant | TFLM top-1 % | .tflite bytes | TFLM arena bytes (host, reference kernels) | "
                  "Cortex-M4 arena used: reference / CMSIS-NN | M4 instructions: reference / CMSIS-NN | search s |",
                  "|---|---|---|---|---|---|---|"]
        for label, v in r["variants"].items():
            acc = (f"{v['tflm_accuracy_mean']:.2f}" if v["seeds"] == 1 else
                   f"{v['tflm_accuracy_mean']:.2f} [{v['tflm_accuracy_min']:.2f}, {v['tflm_accuracy_max']:.2f}]"
                   + (f" ({v['seeds']} seeds)" if v["seeds"] < len(d["seeds"]) and "QAT" in label else ""))
            kept = sum(1 for run in v.get("runs", []) if run.get("selected") == "ptq")
            if "QAT" in label and kept:  # stage 2 keeps PTQ when QAT does not score better on validation
                acc += f" (PTQ kept in {kept} of {len(v['runs'])} seeds)"
            m4 = v.get("cortex_m4") or {}
            arena = " / ".join(f"{m4[k]['arena_used_bytes']:,}" for k in ("reference", "cmsis-nn")) if m4 else "-"
            instr = " / ".join(f"{m4[k]['instructions'] / 1e6:.2f} M" for k in ("reference", "cmsis-nn")) if m4 else "-"
            lines.append(f"| {label} | {acc} | {v['tflite_bytes']:,} | {v['arena_bytes']:,} | {arena} | {instr} | "
                         f"{v.get('search_seconds', '-')} |")
        m = r["mixed_vs_int8"]
        m4 = (f", Cortex-M4 CMSIS-NN arena {m['cortex_m4_cmsis_nn_arena_ratio']:.2f}x"
              if m.get("cortex_m4_cmsis_nn_arena_ratio") is not None else "")
        lines += ["", f"Mixed vs our int8: file {m['file_ratio']:.2f}x, host arena {m['arena_ratio']:.2f}x{m4}, "
                  f"TFLM drop vs FP32 {m['accuracy_drop_vs_fp32']:.2f} points (assignment: "
                  + ", ".join(f"`{k}` {v}" for k, v in r["variants"]["mixed (searched, QAT)"]["assignment"].items()) + ").", ""]
        same = [f"{label} {k} {v['cortex_m4'][k]['identical_to_host_tflm']}" for label, v in r["variants"].items()
                if v.get("cortex_m4") for k in ("reference", "cmsis-nn")]
        if same:
            lines += ["Outputs on the emulated Cortex-M4 identical to host TFLM (test samples): " + "; ".join(same) + ".", ""]
    return lines


def anomaly_detection() -> list[str]:
    doc = _load("ad.json")
    if not doc:
        return []
    r0 = doc["runs"][0]
    lines = [f"Anomaly detection on machine_sounds (`bench_ad.py`; ROC AUC x100; test split per seed: "
             f"{r0['test_clips']['normal']} normal + {r0['test_clips']['anomalous']} anomalous clips, "
             f"{r0['vectors']['test']} vectors):", "",
             "| seed | vector AUC FP32 | int8 TFLM | mixed TFLM | clip AUC (MLPerf) FP32 | int8 TFLM | mixed TFLM |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        v, c = r["int8"]["vector_auc_x100"], r["int8"]["clip_auc_x100_mlperf"]
        mv = r.get("mixed", {}).get("vector_auc_x100", {}).get("tflm")
        mc = r.get("mixed", {}).get("clip_auc_x100_mlperf", {}).get("tflm", {}).get("mean_over_machines")
        lines.append(f"| {r['seed']} | {v['fp32']:.2f} | {v['tflm']:.2f} | {'-' if mv is None else f'{mv:.2f}'} | "
                     f"{c['fp32']['mean_over_machines']:.2f} | {c['tflm']['mean_over_machines']:.2f} | "
                     f"{'-' if mc is None else f'{mc:.2f}'} |")
    return lines + [""]


def main() -> None:
    for part in (peers, size_arena, emulator, mixed_precision, latency, lowbits, anomaly_detection):
        for line in part():
            print(line)


if __name__ == "__main__":
    main()
