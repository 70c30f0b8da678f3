"""Unrolled GRU / LSTM keyword models on the generated speech MFCC: FP32 vs int8 (TFLM) accuracy, exactness,
ops and .tflite size, as the time steps grow.

Each model is ``(N, T, 10)`` MFCC frames (every ``stride``-th of the 49 frames) -> GRU or LSTM (hidden 32)
-> the last step's h -> 12 classes, through tinyprec.train / quantize (QAT) / export / validate. The cached
spoken_keywords features (``~/.cache/tinyprec/spoken_keywords_v2_*.npz``, made by ``tinyprec data`` or the
KWS benchmark) are read as they are: their train / val / test splits are pooled and re-split by the API, so
speakers are not disjoint here (this measures quantization, not generalisation). Writes
benchmarks/results/recurrent.json.

    python benchmarks/bench_recurrent.py [--npz PATH] [--strides 4 2] [--epochs 10] [--kinds GRU LSTM]
        [--precisions int8 a16w8] [--output PATH]

int16 (``--precisions int8 a16w8 --kinds LSTM --output benchmarks/results/recurrent_int16.json``): the LSTM's
gates, cell state and h in int16, the head int8 (GRU is refused at int16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _data(npz: Path, stride: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(npz)
    x = np.concatenate([d[f"x_{s}"] for s in ("train", "val", "test")])[:, ::stride, :]
    y = np.concatenate([d[f"y_{s}"] for s in ("train", "val", "test")])
    keep = np.random.default_rng(0).permutation(len(y))[:limit]
    x, y = x[keep], y[keep]
    x = (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-6)
    return x.astype(np.float32), y.astype(np.int64)


def _model(kind: str, hidden: int, classes: int):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, kind)(10, hidden, batch_first=True)
            self.head = nn.Linear(hidden, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    return Keyword()


def run(kind: str, stride: int, npz: Path, epochs: int, hidden: int, limit: int, out: Path,
        precision: str = "int8") -> dict[str, object]:
    import torch

    import tinyprec
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.recipe import QuantConfig, TrainConfig, ValidateConfig
    from tinyprec.runtimes.tflm import tflm_arena_bytes

    torch.manual_seed(0)
    x, y = _data(npz, stride, limit)
    data = (x, y)
    t0 = time.perf_counter()
    trained = tinyprec.train(_model(kind, hidden, int(y.max()) + 1), data,
                             config=TrainConfig(epochs=epochs, batch_size=64, precision="fp32"), out_dir=out)
    t1 = time.perf_counter()
    q = tinyprec.quantize(trained.model, data, out_dir=out,
                          config=QuantConfig(mode="qat", epochs=1, batch_size=64, autocast="fp32",
                                             overrides=(("rnn", precision),)))
    t2 = time.perf_counter()
    tinyprec.export(q, data, model_fp32=trained.model, out_dir=out)
    t3 = time.perf_counter()
    result = tinyprec.validate(out, data, model_fp32=trained.model, config=ValidateConfig(max_drop=100.0))
    t4 = time.perf_counter()
    blob = (out / "model" / "model_int8.tflite").read_bytes()
    graph = read_tflite(blob)
    const = sum(int(t.data.nbytes) for t in graph.tensors.values() if t.data is not None)
    acc = result.report["accuracy"]
    agree = result.report["agreement"]
    return {
        "kind": kind, "precision": precision, "steps": int(x.shape[1]), "hidden": hidden, "samples": int(len(y)),
        "fp32": acc["fp32"], "tflm_int8": acc["tflm"], "drop": acc["fp32"] - acc["tflm"],
        "quant_selected": json.loads((out / "quant" / "metrics.json").read_text())["selected"],
        "tflm_vs_emulator_identical": agree["tflm_vs_emulator"]["identical_outputs"],
        "tflm_vs_exact_identical": agree["tflm_vs_fake_quant_tflm"]["identical_outputs"],
        "ops": len(graph.ops), "tflite_bytes": len(blob), "constant_bytes": const,
        "arena_bytes": tflm_arena_bytes(blob),
        "seconds": {"train": round(t1 - t0, 1), "quantize": round(t2 - t1, 1), "export": round(t3 - t2, 1),
                    "validate": round(t4 - t3, 1)},
    }


def main() -> None:
    cache = Path.home() / ".cache" / "tinyprec"
    found = sorted(cache.glob("spoken_keywords_v2_*.npz"), key=lambda p: p.stat().st_size)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", type=Path, default=found[len(found) // 2] if found else None)
    ap.add_argument("--strides", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--kinds", nargs="+", default=["GRU", "LSTM"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--limit", type=int, default=4000, help="samples used (pooled splits)")
    ap.add_argument("--work", type=Path, default=ROOT / "export" / "bench_recurrent")
    ap.add_argument("--precisions", nargs="+", default=["int8"],
                    help="the recurrent layer's precision ('int8', 'a16w8': int16 gates and state; the head stays int8)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "recurrent.json")
    args = ap.parse_args()
    if args.npz is None or not args.npz.is_file():
        raise SystemExit("no spoken_keywords cache: run `python benchmarks/bench_kws.py` (or pass --npz)")
    rows = []
    for stride in args.strides:
        for kind in args.kinds:
            for precision in args.precisions:
                row = run(kind, stride, args.npz, args.epochs, args.hidden, args.limit,
                          args.work / f"{kind}_{stride}_{precision}", precision)
                print(json.dumps(row))
                rows.append(row)
    path = args.output
    path.write_text(json.dumps({"npz": args.npz.name, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
