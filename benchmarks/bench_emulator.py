"""Emulator vs TFLM's Python interpreter on kws_ref_model.tflite: time per sample and the ratio.

TFLM runs sample by sample (its only mode); the emulator runs the whole batch at once. Both wall-clock
and CPU time are reported, with the machine's load average: on a shared machine wall-clock depends on
the neighbours, CPU time much less. The outputs of the samples both ran are checked to be identical.

    python benchmarks/bench_emulator.py [--batch 256] [--tflm-samples 64] [--threads N] [--repeats 5]

Also times each op on one batch chunk (single thread), and the same network at the other precisions TFLM
runs (``w4a8``: INT4 weights, FULLY_CONNECTED int8 where its weights are per-channel; ``a16w8``: int16
activations, int8 weights, int64 bias), as time per multiply-accumulate against TFLM's, with the outputs
checked identical. Writes benchmarks/results/emulator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "fixtures" / "mlperf_tiny" / "kws_ref_model.tflite"


def _timed(fn):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def per_op_ms(emu, x: np.ndarray, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Single-thread time of each op on one batch chunk (the size the emulator runs), in ms per sample.

    Runs the prepared ops one by one on the chunk (the interpreter's own loop, unrolled here), BLAS
    limited to one thread; the best of ``repeats`` per op.
    """
    from threadpoolctl import threadpool_limits

    graph = emu.graph
    chunk = x[:max(1, min(emu._chunk, len(x)))]  # noqa: SLF001 - a benchmark of the internals
    best: dict[str, float] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeats):
            env = {n: t.data for n, t in graph.tensors.items() if t.data is not None}
            env[graph.inputs[0]] = chunk
            for i, (op, prep) in enumerate(zip(graph.ops, emu._prepared)):  # noqa: SLF001
                args = [env[n] for n in op.inputs if n is not None]
                start = time.perf_counter()
                env[op.outputs[0]] = prep.run(args)
                key = f"{i:02d} {op.type.value}"
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
    return {k: round(1000 * v / len(chunk), 5) for k, v in best.items()}


def precision_variant(graph, kind: str):  # type: ignore[no-untyped-def]
    """The same network at another precision: ``w4a8`` clips weights to [-7, 7] and stores them as INT4;
    ``a16w8`` makes activations int16 (zero point 0, 1/256 of the int8 scale, SOFTMAX out 1/32768) and
    biases int64. The arithmetic is TFLM's; the values are for timing and exactness, not accuracy."""
    import dataclasses

    from tinyprec.ir import DType, OpType, QParams

    weighted = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)
    weights = {op.inputs[1]: op for op in graph.ops if op.type in weighted}
    biases = {op.inputs[2] for op in graph.ops if op.type in weighted and len(op.inputs) > 2 and op.inputs[2]}
    softmax_out = {op.outputs[0] for op in graph.ops if op.type is OpType.SOFTMAX}
    tensors = {}
    for name, t in graph.tensors.items():
        if kind == "w4a8" and name in weights and t.dtype is DType.INT8:
            per_channel = t.qparams is not None and t.qparams.scale.size > 1
            if not (weights[name].type is OpType.FULLY_CONNECTED and per_channel):
                t = dataclasses.replace(t, dtype=DType.INT4, data=np.clip(t.data, -7, 7).astype(np.int8))
        elif kind == "a16w8" and not t.is_const and t.dtype is DType.INT8:
            scale = 1.0 / 32768 if name in softmax_out else float(t.qparams.scale[0]) / 256
            t = dataclasses.replace(t, dtype=DType.INT16, qparams=QParams.per_tensor(scale, 0))
        elif kind == "a16w8" and name in biases:
            qp = QParams(t.qparams.scale / 256, t.qparams.zero_point, t.qparams.axis)
            t = dataclasses.replace(t, dtype=DType.INT64, data=t.data.astype(np.int64) * 256, qparams=qp)
        tensors[name] = t
    return dataclasses.replace(graph, tensors=tensors, name=f"{graph.name}_{kind}")


def per_mac(graph, batch: int, tflm_samples: int, repeats: int, seed: int = 0) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """1-thread emulator and TFLM time per sample and per MAC for one graph, outputs compared."""
    from tflite_micro.python.tflite_micro import runtime

    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_writer import write_tflite

    dtype = graph.tensors[graph.inputs[0]].dtype.numpy
    info = np.iinfo(dtype)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(seed).integers(info.min, info.max + 1, size=(batch, *shape)).astype(dtype)
    interp = runtime.Interpreter.from_bytes(write_tflite(graph))
    n = min(tflm_samples, batch)
    outs = []
    start = time.process_time()
    for i in range(n):
        interp.set_input(x[i:i + 1], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0), copy=True))
    tflm_cpu = (time.process_time() - start) / n
    emu = Emulator(graph, threads=1)
    got = emu.run(x)
    best = float("inf")
    for _ in range(repeats):
        _, _, cpu = _timed(lambda: emu.run(x))
        best = min(best, cpu)
    macs = sum(emu.macs().values())
    return {"precision": graph.precision(), "macs_per_sample": macs,
            "emulator_1thread_ms_per_sample_cpu": round(1000 * best / batch, 4),
            "emulator_1thread_ns_per_mac_cpu": round(1e9 * best / batch / macs, 4),
            "tflm_ms_per_sample_cpu": round(1000 * tflm_cpu, 4),
            "tflm_ns_per_mac_cpu": round(1e9 * tflm_cpu / macs, 3),
            "speedup_1thread_cpu": round(tflm_cpu / (best / batch), 2),
            "outputs_identical_to_tflm": bool(np.array_equal(got[:n], np.concatenate(outs)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tflm-samples", type=int, default=64, help="samples timed through TFLM (per-sample cost)")
    parser.add_argument("--threads", type=int, default=None, help="emulator threads (default: CPU count)")
    parser.add_argument("--repeats", type=int, default=5, help="emulator batch runs; the best is kept")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "emulator.json")
    args = parser.parse_args()

    from tflite_micro.python.tflite_micro import runtime

    from tinyprec._io import atomic_write_text
    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_reader import read_tflite

    data = args.model.read_bytes()
    rng = np.random.default_rng(0)
    graph = read_tflite(data, where=str(args.model))
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = rng.integers(-128, 128, size=(args.batch, *shape)).astype(np.int8)

    interp = runtime.Interpreter.from_bytes(data)
    interp.set_input(x[:1], 0)
    interp.invoke()  # warm-up
    n_tflm = min(args.tflm_samples, args.batch)

    def tflm_loop() -> np.ndarray:
        outs = []
        for i in range(n_tflm):
            interp.set_input(x[i:i + 1], 0)
            interp.invoke()
            outs.append(np.array(interp.get_output(0), copy=True))
        return np.concatenate(outs)

    tflm_out, tflm_wall, tflm_cpu = _timed(tflm_loop)

    emu, prepare_wall, _ = _timed(lambda: Emulator(graph, threads=args.threads))
    _, first_wall, _ = _timed(lambda: emu.run(x))  # first call: numba dispatch / cache load
    best_wall, best_cpu, emu_out = float("inf"), float("inf"), None
    for _ in range(args.repeats):
        emu_out, wall, cpu = _timed(lambda: emu.run(x))
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    assert emu_out is not None
    identical = bool(np.array_equal(emu_out[:n_tflm], tflm_out))
    single = Emulator(graph, threads=1)
    single.run(x)
    one_wall, one_cpu = float("inf"), float("inf")
    for _ in range(args.repeats):
        _, wall, cpu = _timed(lambda: single.run(x))
        one_wall, one_cpu = min(one_wall, wall), min(one_cpu, cpu)

    ops = per_op_ms(single, x, max(args.repeats, 10))

    tflm_ms = 1000 * tflm_wall / n_tflm
    tflm_cpu_ms = 1000 * tflm_cpu / n_tflm
    emu_ms = 1000 * best_wall / args.batch
    emu_cpu_ms = 1000 * best_cpu / args.batch
    result = {
        "model": args.model.name,
        "batch": args.batch,
        "tflm_samples_timed": n_tflm,
        "tflm_ms_per_sample_wall": round(tflm_ms, 4),
        "tflm_ms_per_sample_cpu": round(tflm_cpu_ms, 4),
        "emulator_ms_per_sample_wall": round(emu_ms, 4),
        "emulator_ms_per_sample_cpu": round(emu_cpu_ms, 4),
        "speedup_wall": round(tflm_ms / emu_ms, 2),
        "speedup_cpu": round(tflm_cpu_ms / emu_cpu_ms, 2),
        "emulator_threads": emu.threads,
        "emulator_1thread_ms_per_sample_wall": round(1000 * one_wall / args.batch, 4),
        "emulator_1thread_ms_per_sample_cpu": round(1000 * one_cpu / args.batch, 4),
        "speedup_1thread_cpu": round(tflm_cpu_ms / (1000 * one_cpu / args.batch), 2),
        "emulator_chunk_samples": single._chunk,  # noqa: SLF001
        "emulator_1thread_ms_per_sample_by_op": ops,
        "emulator_1thread_ms_per_sample_ops_sum": round(sum(ops.values()), 4),
        "emulator_prepare_s": round(prepare_wall, 3),
        "emulator_first_run_s": round(first_wall, 3),
        "outputs_identical_to_tflm": identical,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    print(f"TFLM interpreter : {tflm_ms:8.3f} ms/sample wall, {tflm_cpu_ms:8.3f} ms/sample CPU ({n_tflm} samples)")
    print(f"emulator (batch {args.batch}, {emu.threads} threads): {emu_ms:8.4f} ms/sample wall, "
          f"{emu_cpu_ms:8.4f} ms/sample CPU")
    print(f"emulator (batch {args.batch}, 1 thread): {result['emulator_1thread_ms_per_sample_wall']:8.4f} ms/sample wall, "
          f"{result['emulator_1thread_ms_per_sample_cpu']:8.4f} ms/sample CPU")
    for name, ms in ops.items():
        print(f"  {name:28s} {ms:8.4f} ms/sample (1 thread, chunk of {single._chunk})")  # noqa: SLF001
    result["by_precision"] = {
        kind: per_mac(graph if kind == "w8a8" else precision_variant(graph, kind), args.batch,
                      max(16, n_tflm // 2), args.repeats)
        for kind in ("w8a8", "w4a8", "a16w8")
    }
    for kind, r in result["by_precision"].items():  # type: ignore[union-attr]
        print(f"  {kind}: {r['emulator_1thread_ns_per_mac_cpu']} ns/MAC (1 thread) vs TFLM {r['tflm_ns_per_mac_cpu']} "
              f"ns/MAC: {r['speedup_1thread_cpu']}x, identical {r['outputs_identical_to_tflm']}")
    print(f"speed-up: {result['speedup_wall']}x wall, {result['speedup_cpu']}x CPU   "
          f"(outputs identical: {identical}; load average {result['load_average_1min']} on {os.cpu_count()} CPUs)")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
