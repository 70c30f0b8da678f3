"""Flash and RAM of our .tflite files against the MLPerf Tiny references TensorFlow's converter wrote.

Usage: python benchmarks/bench_tflite_size_arena.py [OUT.json]   (default benchmarks/results/tflite_size_arena.json)

For every recipe in models/: build the zoo model, give its batch-norm layers trained-looking statistics
(seeded; an untrained model folds to all-zero biases, which the writer would store once and so flatter
the file), PTQ-calibrate on the recipe's data, lower to the IR, write the .tflite, and measure:

* file bytes, constant bytes (weights, biases, shape vectors: the floor), overhead = file - constant;
* TFLM's arena: the smallest arena_size that allocates. TFLM's recording allocator total is tried first
  and confirmed (it allocates, one byte less does not; exact on both references, ds_cnn and resnet8);
  otherwise a bisection. Every probe runs in a child process: TFLM's Python interpreter can crash on
  an arena far too small.
* whether TFLM and TensorFlow's TF Lite interpreter (reference kernels) give identical int8 outputs on
  random inputs.

The references are measured the same way in the same run; kws_ds_cnn and ic_resnet8 are compared with
kws_ref_model.tflite and pretrainedResnet_quant.tflite (issue 4: overhead at most half the converter's,
arena no larger).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "mlperf_tiny"
REFERENCES = {"kws_ds_cnn": "kws_ref_model.tflite", "ic_resnet8": "pretrainedResnet_quant.tflite"}


def recorded_arena(tflite: bytes) -> int:
    """Total bytes TFLM's recording allocator reports for the model (head + tail)."""
    from tflite_micro.python.tflite_micro import runtime

    from tinyprec.runtimes._capture import captured_native_output

    interp = runtime.Interpreter.from_bytes(tflite, arena_size=4 << 20)
    with captured_native_output() as out:
        interp.print_allocations()
    match = re.search(r"Arena allocation total (\d+) bytes", "".join(out))
    assert match, "TFLM printed no allocation total"
    return int(match.group(1))


_PROBE = (
    "import sys\nfrom tflite_micro.python.tflite_micro import runtime\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "try:\n    runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))\nexcept RuntimeError:\n"
    "    sys.exit(3)\n"
)


def allocates(tflite: bytes, arena: int) -> bool:
    """Whether TFLM allocates the model with ``arena`` bytes, probed in a child process.

    TFLM's Python interpreter can crash (SIGSEGV) instead of failing cleanly when the arena is far too
    small (seen at 4,000-9,000 bytes on the MLPerf KWS model), so a probe must not share our process.
    """
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(tflite)
        f.flush()
        done = subprocess.run([sys.executable, "-c", _PROBE, f.name, str(arena)], capture_output=True)
    return done.returncode == 0


def smallest_arena(tflite: bytes) -> int:
    """The smallest arena_size that allocates: the recorded total when it is exact, else bisection above it."""
    total = recorded_arena(tflite)
    if allocates(tflite, total):
        return total if not allocates(tflite, total - 1) else _bisect(tflite, 0, total)
    lo, hi = total, total * 2
    while not allocates(tflite, hi):
        lo, hi = hi, hi * 2
    return _bisect(tflite, lo, hi)


def _bisect(tflite: bytes, lo: int, hi: int) -> int:
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if allocates(tflite, mid) else (mid, hi)
    return hi


def trained_looking(model, seed: int):  # noqa: ANN001, ANN201
    """Seeded batch-norm statistics and affine parameters like a trained network's."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def tflm_equals_tf(tflite: bytes, shape: tuple[int, ...], n: int = 16) -> bool:
    from tinyprec.runtimes.tflite import run_tflite
    from tinyprec.runtimes.tflm import run_tflm

    x = np.random.default_rng(0).integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)
    return bool(np.array_equal(run_tflm(tflite, x), run_tflite(tflite, x, kernels="reference")))


def measure(tflite: bytes, const_bytes: int, input_shape: tuple[int, ...]) -> dict[str, object]:
    return {
        "file_bytes": len(tflite), "const_bytes": const_bytes, "overhead_bytes": len(tflite) - const_bytes,
        "arena_bytes": smallest_arena(tflite), "recorded_total_bytes": recorded_arena(tflite),
        "tflm_equals_tf": tflm_equals_tf(tflite, input_shape),
    }


def main() -> None:
    from tinyprec.data import load_dataset
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.capture import example_like
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import build_model_for, load_recipe

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "tflite_size_arena.json"
    result: dict[str, dict[str, object]] = {}
    for path in sorted((ROOT / "models").glob("*.toml")):
        recipe = load_recipe(path)
        dataset = load_dataset(recipe.data, recipe.seed, path.parent)
        model = trained_looking(build_model_for(recipe), recipe.seed)
        converted = ptq(model, dataset, dataclasses.replace(recipe.quant, calibration_batches=2))
        graph = lower_to_ir(converted, example_like(dataset.input_shape), name=recipe.name)
        ours = measure(write_tflite(graph), graph.const_bytes(), graph.tensors[graph.inputs[0]].shape)
        entry: dict[str, object] = {"ours": ours}
        if recipe.name in REFERENCES:
            ref_bytes = (FIXTURES / REFERENCES[recipe.name]).read_bytes()
            ref_graph = read_tflite(ref_bytes)
            ref = measure(ref_bytes, ref_graph.const_bytes(), ref_graph.tensors[ref_graph.inputs[0]].shape)
            entry["reference"] = {"file": REFERENCES[recipe.name], **ref}
            entry["overhead_ratio"] = round(int(ours["overhead_bytes"]) / int(ref["overhead_bytes"]), 3)  # type: ignore[call-overload]
            entry["within_bounds"] = (entry["overhead_ratio"] <= 0.5  # type: ignore[operator]
                                      and int(ours["arena_bytes"]) <= int(ref["arena_bytes"]))  # type: ignore[call-overload]
        result[recipe.name] = entry
        print(recipe.name, json.dumps(entry), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
