"""Accuracy against a peer: our QAT and PTQ vs ONNX Runtime's quantize_static, same FP32 model and data.

For each recipe (digits_cnn, mnist1d_cnn) one run of the tinyprec pipeline gives the FP32 model, its FP32
ONNX, our QAT int8 model (measured on TFLM, the emulated MCU) and our PTQ baseline. ONNX Runtime's
quantize_static then quantizes the same FP32 ONNX with MinMax, Entropy and Percentile calibration,
per-tensor and per-channel (QDQ, int8 activations and weights), and ONNX Runtime evaluates each int8
model on the same test split.

    python benchmarks/bench_peers.py [--recipes digits_cnn,mnist1d_cnn] [--out benchmarks/results/peers.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _ort_accuracy(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    return 100.0 * float(np.mean(np.argmax(logits.reshape(len(x), -1), axis=1) == y))


def _ort_quantize(fp32: Path, calib: np.ndarray, method: str, per_channel: bool, dst: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnxruntime as ort

            self.name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
            self.batches = iter([calib[i:i + 1] for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {self.name: batch}

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))


def bench_recipe(name: str, work: Path) -> dict[str, object]:
    from tinyprec.data import load_dataset
    from tinyprec.pipeline import run_recipe
    from tinyprec.recipe import load_recipe

    recipe = load_recipe(ROOT / "models" / f"{name}.toml")
    out = work / name
    t0 = time.perf_counter()
    result = run_recipe(recipe, out_dir=out)
    pipeline_s = time.perf_counter() - t0
    dataset = load_dataset(recipe.data, recipe.seed, base_dir=recipe.path.parent if recipe.path else None)
    x_test, y_test = dataset.inputs("test"), dataset.test.y
    calib = dataset.inputs("train")[:256]
    s = result.summary
    rows: dict[str, object] = {
        "fp32 (PyTorch)": s.get("fp32_accuracy"),
        "tinyprec QAT, int8 on TFLM": s.get("mcu_accuracy"),
        "tinyprec QAT, fake-quant": s.get("fake_quant_accuracy"),
        "tinyprec PTQ (moving-average calibration), fake-quant": s.get("ptq_accuracy"),
        "fp32 ONNX (onnxruntime)": _ort_accuracy(out / "model" / "model_fp32.onnx", x_test, y_test),
    }
    for method in ("MinMax", "Entropy", "Percentile"):
        for per_channel in (False, True):
            dst = work / f"{name}_{method}_{'pc' if per_channel else 'pt'}.onnx"
            _ort_quantize(out / "model" / "model_fp32.onnx", calib, method, per_channel, dst)
            label = f"onnxruntime quantize_static {method} {'per-channel' if per_channel else 'per-tensor'}"
            rows[label] = _ort_accuracy(dst, x_test, y_test)
    return {"recipe": name, "test_samples": int(len(y_test)), "accuracy_percent": rows,
            "pipeline_seconds": round(pipeline_s, 1),
            "stage_seconds": {o.stage: round(o.seconds, 1) for o in result.stages}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="digits_cnn,mnist1d_cnn")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tinyprec-peers-") as tmp:
        results = [bench_recipe(n, Path(tmp)) for n in args.recipes.split(",")]
    doc = {"benchmark": "accuracy vs onnxruntime quantize_static", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in results:
        print(f"== {r['recipe']} ({r['test_samples']} test samples)")
        for label, acc in r["accuracy_percent"].items():  # type: ignore[union-attr]
            print(f"  {label:60s} {acc:6.2f}" if acc is not None else f"  {label:60s}      -")


if __name__ == "__main__":
    main()
