"""Fewer bits on TFLM (issue 10): int8 PTQ/QAT, all-INT4-weight PTQ/QAT and the searched mixed model.

For each recipe one FP32 model is trained (the recipe's own training, pinned to fp32), then quantized five
ways from that same model: int8 PTQ, int8 QAT, INT4 weights everywhere (w4a8) PTQ and QAT, and
``precision = "mixed"``: the search (sensitivity, trade-off curve under the RAM budget, run once) then QAT
on its assignment, exported with the recipe's INT4 split (``int4_max_scratch``). Every variant is exported,
run on TFLM over the whole test split, and measured: accuracy (QAT variants over 3 seeds: mean, min, max),
.tflite bytes, TFLM arena (measured), search wall time.

    nice python benchmarks/bench_lowbits.py [--recipes mnist1d_cnn,digits_cnn] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The mixed recipe of each model (its [quant] search keys), where one exists; else these defaults.
MIXED_RECIPE = {"mnist1d_cnn": "mnist1d_cnn_mixed", "kws_ds_cnn": "kws_ds_cnn_mixed", "digits_cnn": "digits_cnn_mixed"}


def _tflm_accuracy(tflite: bytes, graph, dataset) -> float:  # type: ignore[no-untyped-def]
    from tinyprec.runtimes.tflm import run_tflm
    from tinyprec.validation.runners import LAYOUT_BY_RANK, Models, make_feed, output_qparams

    models = Models(graph=graph, tflite=tflite, input_layout=LAYOUT_BY_RANK[len(dataset.input_shape) + 1])
    feed = make_feed(models, dataset.inputs("test"))
    out = np.asarray(run_tflm(tflite, feed.model_input)).reshape(len(feed.model_input), -1)
    assert output_qparams(graph) is not None
    return 100.0 * float(np.mean(np.argmax(out, axis=1) == dataset.test.y))


def _variant(model, dataset, cfg, work: Path, *, mode: str, seed: int, split: int | None,  # type: ignore[no-untyped-def]
             assignment=None) -> dict[str, object]:
    """Quantize, lower (+ the INT4 split), write the .tflite, measure TFLM's arena and accuracy."""
    import torch

    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant import quantize_model
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.split import split_int4_layers
    from tinyprec.runtimes.tflm import tflm_arena_bytes

    t0 = time.perf_counter()
    q = quantize_model(model, dataset, cfg, work, seed=seed, mode=mode, assignment=assignment)
    quant_s = time.perf_counter() - t0
    graph = lower_to_ir(q.converted, torch.from_numpy(dataset.inputs("test")[:2]), name="bench")
    if split is not None:
        graph = split_int4_layers(graph, split)
    tflite = write_tflite(graph)
    row = {"seed": seed, "tflm_accuracy": _tflm_accuracy(tflite, graph, dataset), "tflite_bytes": len(tflite),
           "arena_bytes": tflm_arena_bytes(tflite), "fake_quant_accuracy": q.fake_quant_accuracy,
           "selected": q.selected, "quant_seconds": round(quant_s, 1), "ops": len(graph.ops)}
    mcu = _on_cortex_m(tflite, graph, dataset, work / "mcu")
    return {**row, "cortex_m4": mcu} if mcu else row


MCU_SAMPLES = 100


def _on_cortex_m(tflite: bytes, graph, dataset, work: Path) -> dict[str, object] | None:  # type: ignore[no-untyped-def]
    """The file on the emulated Cortex-M4 (QEMU) with both TFLM kernel sets, when $TINYPREC_TFLM_TREE and the Arm
    toolchain are there: arena used, instructions per inference, outputs vs host TFLM on the first test samples."""
    from tinyprec.mcu.emulated import compare_with_host, measure, options_from_env, write_bundle_for_tflite
    from tinyprec.validation.runners import LAYOUT_BY_RANK, Models, make_feed

    if options_from_env(None).tree is None:
        return None
    models = Models(graph=graph, tflite=tflite, input_layout=LAYOUT_BY_RANK[len(dataset.input_shape) + 1])
    x = make_feed(models, dataset.inputs("test")[:MCU_SAMPLES]).model_input
    bundle = write_bundle_for_tflite(tflite, work / "bundle")
    out: dict[str, object] = {}
    for kernels in ("reference", "cmsis-nn"):
        opts = options_from_env(None, kernels=kernels)
        m = measure(bundle, x, tree=opts.tree, kernels=kernels, build_dir=work / kernels)  # type: ignore[arg-type]
        same = compare_with_host(tflite, x, m.outputs)
        out[kernels] = {"arena_used_bytes": m.arena_used_bytes, "instructions": m.instructions_per_inference,
                        "golden_passed": m.golden_passed,
                        "identical_to_host_tflm": f"{same.identical_samples}/{same.samples}",
                        "differing_elements": same.differing_elements}
    return out


def _summary(runs: list[dict[str, object]]) -> dict[str, object]:
    acc = [float(r["tflm_accuracy"]) for r in runs]  # type: ignore[arg-type]
    first = runs[0]
    m4 = next((r["cortex_m4"] for r in runs if r.get("cortex_m4")), None)  # the same graph for every seed
    return {**({"cortex_m4": m4} if m4 else {}),"tflm_accuracy_mean": round(float(np.mean(acc)), 3), "tflm_accuracy_min": min(acc),
            "tflm_accuracy_max": max(acc), "spread": round(max(acc) - min(acc), 3), "seeds": len(runs),
            "tflite_bytes": first["tflite_bytes"], "arena_bytes": first["arena_bytes"],
            "tflite_bytes_all": sorted({r["tflite_bytes"] for r in runs}),  # type: ignore[type-var]
            "arena_bytes_all": sorted({r["arena_bytes"] for r in runs})}  # type: ignore[type-var]


def bench_recipe(name: str, seeds: list[int], work: Path, say, *, ptq: bool = True,  # type: ignore[no-untyped-def]
                 search_cache: Path | None = None, only: set[str] | None = None) -> dict[str, object]:
    from tinyprec.data import load_dataset
    from tinyprec.pipeline import run_recipe
    from tinyprec.quant.bits import PRESETS
    from tinyprec.quant.search import search_assignment
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.training import load_weights

    recipe = load_recipe(ROOT / "models" / f"{MIXED_RECIPE.get(name, name)}.toml")
    recipe = replace(recipe, train=replace(recipe.train, precision="fp32"))
    out = work / name
    t0 = time.perf_counter()
    run_recipe(recipe, out_dir=out, stages="train")
    say(f"{name}: FP32 trained in {time.perf_counter() - t0:.0f} s")
    dataset = load_dataset(recipe.data, recipe.seed, base_dir=recipe.path.parent if recipe.path else None)
    model = build_model_for(recipe)
    model.load_state_dict(load_weights(out / "train" / "model_fp32.pt"))
    model.eval()
    from tinyprec.quant.loops import evaluate

    fp32 = evaluate(model, dataset.inputs("test"), dataset.test.y, task=dataset.task)
    base = replace(recipe.quant, autocast="fp32", bits="int8", overrides=())
    result: dict[str, object] = {"recipe": name, "test_samples": int(len(dataset.test.y)),
                                 "resolution_points": round(100.0 / len(dataset.test.y), 3), "fp32_accuracy": fp32}
    variants: dict[str, dict[str, object]] = {}
    for label, bits, mode in (("int8 PTQ", "int8", "ptq"), ("int8 QAT", "int8", "qat"),
                              ("w4a8 PTQ (all INT4 weights)", "w4a8", "ptq"), ("w4a8 QAT (all INT4 weights)", "w4a8", "qat")):
        if (mode == "ptq" and not ptq) or (only is not None and f"{bits}_{mode}" not in only):
            continue
        runs = []
        for seed in (seeds if mode == "qat" else seeds[:1]):
            runs.append(_variant(model, dataset, replace(base, bits=bits), work / f"{name}_{bits}_{mode}_{seed}",
                                 mode=mode, seed=seed, split=None))
            say(f"{name}: {label} seed {seed}: {runs[-1]}")
        variants[label] = {"runs": runs}
    cfg = replace(recipe.quant, autocast="fp32", bits="mixed")
    result["variants"] = variants
    if only is not None and "mixed" not in only:
        return result
    found = _searched(search_cache, lambda: search_assignment(model, dataset, cfg, progress=say))
    assignment = {k: PRESETS[v] for k, v in found["assignment"].items()}
    runs = []
    for seed in seeds:
        runs.append(_variant(model, dataset, cfg, work / f"{name}_mixed_{seed}", mode="qat", seed=seed,
                             split=cfg.int4_max_scratch, assignment=assignment))
        say(f"{name}: mixed seed {seed}: {runs[-1]}")
    variants[MIXED] = {"runs": runs, **found, "int4_max_scratch": cfg.int4_max_scratch}
    result["variants"] = variants
    return result


MIXED = "mixed (searched, QAT)"


def _searched(cache: Path | None, run) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The search's result: from ``cache`` when another process has written it (waits for it when the
    file name ends in .wait), else run once and write it there."""
    if cache is not None and str(cache).endswith(".wait"):
        real = Path(str(cache)[:-5])
        while not real.is_file():
            time.sleep(10)
        return json.loads(real.read_text())
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    t0 = time.perf_counter()
    found = run()
    doc = {"assignment": {k: v.name for k, v in found.assignment.items()}, "search_seconds": round(time.perf_counter() - t0, 1),
           "arena_budget": found.arena_budget, "search": found.to_dict()}
    if cache is not None:
        cache.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def finish(result: dict[str, object]) -> dict[str, object]:
    """Summaries over seeds and the issue's targets (mixed vs our own int8 QAT file and arena)."""
    variants = result["variants"]  # type: ignore[assignment]
    for label, v in variants.items():  # type: ignore[union-attr]
        v.update(_summary(v["runs"]))
    i8, mx = variants.get("int8 QAT"), variants.get(MIXED)  # type: ignore[union-attr]
    if i8 and mx:
        i8_m4 = next((v["cortex_m4"] for v in variants.values() if v.get("cortex_m4")  # type: ignore[union-attr]
                      and v["tflite_bytes"] == i8["tflite_bytes"]), None)  # any int8 variant: the same graph
        mx_m4 = mx.get("cortex_m4")
        result["mixed_vs_int8"] = {
            "file_ratio": round(mx["tflite_bytes"] / i8["tflite_bytes"], 3),
            "arena_ratio": round(mx["arena_bytes"] / i8["arena_bytes"], 3),
            "cortex_m4_cmsis_nn_arena_ratio": (round(mx_m4["cmsis-nn"]["arena_used_bytes"]
                                                     / i8_m4["cmsis-nn"]["arena_used_bytes"], 3)
                                               if i8_m4 and mx_m4 else None),
            "accuracy_drop_vs_fp32": round(float(result["fp32_accuracy"]) - mx["tflm_accuracy_mean"], 3),  # type: ignore[arg-type]
        }
    return result


def merge(docs: list[dict[str, object]]) -> list[dict[str, object]]:
    """Partial results (one process per seed) joined per recipe and variant."""
    joined: dict[str, dict[str, object]] = {}
    for doc in docs:
        for r in doc["results"]:  # type: ignore[union-attr]
            into = joined.setdefault(r["recipe"], {**r, "variants": {}})
            for label, v in r["variants"].items():
                have = into["variants"].setdefault(label, {**v, "runs": []})  # type: ignore[union-attr]
                seen = {run_["seed"] for run_ in have["runs"]}
                have["runs"] += [run_ for run_ in v["runs"] if run_["seed"] not in seen]
    order = ["int8 PTQ", "int8 QAT", "w4a8 PTQ (all INT4 weights)", "w4a8 QAT (all INT4 weights)", MIXED]
    for r in joined.values():
        r["variants"] = dict(sorted(r["variants"].items(), key=lambda kv: order.index(kv[0])))  # type: ignore[union-attr]
    return [finish(r) for r in joined.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="mnist1d_cnn,digits_cnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lowbits.json"))
    parser.add_argument("--work", default=None, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("--skip-ptq", action="store_true", help="only the QAT variants (another process runs PTQ)")
    parser.add_argument("--search-cache", default=None, help="search result JSON to reuse/write (.wait: wait for it)")
    parser.add_argument("--only", default=None, help="variants: int8_ptq,int8_qat,w4a8_ptq,w4a8_qat,mixed")
    parser.add_argument("--merge", nargs="*", default=None, help="join partial result files into --out and stop")
    args = parser.parse_args()
    say = print  # noqa: T201 - a benchmark script reports progress
    out = Path(args.out)
    if args.merge is not None:
        docs = [json.loads(Path(p).read_text()) for p in args.merge]
        if out.is_file():
            docs.insert(0, json.loads(out.read_text()))
        seeds = sorted({s for d in docs for s in d["seeds"]})
        out.write_text(json.dumps(_doc(seeds, merge(docs)), indent=2) + "\n")
        say(f"wrote {out}")
        return
    seeds = [int(s) for s in args.seeds.split(",")]

    def run(work: Path) -> None:
        results = json.loads(out.read_text())["results"] if out.is_file() else []  # other recipes' rows stay
        for name in args.recipes.split(","):
            cache = Path(args.search_cache) if args.search_cache else None
            only = set(args.only.split(",")) if args.only else None
            row = finish(bench_recipe(name, seeds, work, say, ptq=not args.skip_ptq, search_cache=cache, only=only))
            results = [r for r in results if r["recipe"] != name] + [row]
            out.write_text(json.dumps(_doc(seeds, results), indent=2) + "\n")
            say(f"wrote {out}")

    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run(Path(args.work))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))


def _doc(seeds: list[int], results: list[dict[str, object]]) -> dict[str, object]:
    return {"benchmark": "bench_lowbits", "runtime": "TFLM (tflite-micro Python interpreter, reference kernels)",
            "seeds": seeds, "note": "accuracy on the whole test split; QAT variants: mean/min/max over seeds; "
            "differences below resolution_points or the seed spread are ties", "results": results}


if __name__ == "__main__":
    main()
