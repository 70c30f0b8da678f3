"""Bit-exactness of the emulator on every zoo architecture, as our pipeline quantizes and lowers it.

For each recipe in models/: build the zoo model, PTQ on one calibration batch, lower to the IR, write
the .tflite, then run random int8 batches through TFLM's interpreter and through the emulator (on the
lowered IR graph and on the graph read back from the file) and compare outputs and every intermediate
tensor exactly. Slow (PTQ of six models), hence a script; tests/test_emulator_zoo.py runs two of them.

    python benchmarks/check_emulator_zoo.py [--samples 16]

Writes benchmarks/results/emulator_zoo.json; exits 1 if any model differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "emulator_zoo.json")
    args = parser.parse_args()

    from tinyprec._io import atomic_write_text
    from tinyprec.data import load_dataset
    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.capture import example_like
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import build_model_for, load_recipe
    from tinyprec.runtimes.tflm import run_tflm, run_tflm_with_taps

    rows = []
    for path in sorted((ROOT / "models").glob("*.toml")):
        recipe = load_recipe(path)
        dataset = load_dataset(recipe.data, recipe.seed, ROOT / "models")
        converted = ptq(build_model_for(recipe), dataset, dataclasses.replace(recipe.quant, calibration_batches=1))
        graph = lower_to_ir(converted, example_like(dataset.input_shape), name=recipe.name)
        data = write_tflite(graph)
        emu = Emulator(graph)
        file_emu = Emulator(read_tflite(data, where=path.name))
        shape, dtype = emu.input_spec()
        x = np.random.default_rng(0).integers(-128, 128, size=(args.samples, *shape)).astype(dtype)
        start = time.perf_counter()
        expected = run_tflm(data, x)
        tflm_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = emu.run(x)
        emu_s = time.perf_counter() - start
        theirs_taps = run_tflm_with_taps(data, x[:2])
        our_taps = file_emu.run_with_taps(x[:2])
        taps_equal = set(theirs_taps) == set(our_taps) and all(
            np.array_equal(our_taps[k], v) for k, v in theirs_taps.items())
        row = {
            "recipe": path.stem,
            "architecture": recipe.model.arch,
            "ops": [op.type.value for op in graph.ops],
            "samples": args.samples,
            "outputs_equal_ir_graph": bool(np.array_equal(ours, expected)),
            "outputs_equal_file_graph": bool(np.array_equal(file_emu.run(x), expected)),
            "intermediates_compared": len(theirs_taps),
            "intermediates_equal": bool(taps_equal),
            "tflm_s": round(tflm_s, 3),
            "emulator_s": round(emu_s, 3),
        }
        rows.append(row)
        print(f"{row['recipe']:18s} ops={len(row['ops']):3d} outputs equal={row['outputs_equal_ir_graph']} "
              f"file={row['outputs_equal_file_graph']} intermediates {row['intermediates_compared']} "
              f"equal={row['intermediates_equal']}")
    ok = all(r["outputs_equal_ir_graph"] and r["outputs_equal_file_graph"] and r["intermediates_equal"] for r in rows)
    atomic_write_text(args.out, json.dumps({"all_bit_exact": ok, "models": rows}, indent=2) + "\n")
    print(f"all bit-exact: {ok}; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
