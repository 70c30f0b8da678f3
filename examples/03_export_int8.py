"""Stage 3: export int8 .tflite (TFLM-ready), int8 QDQ ONNX and the firmware bundle; check TFLM against it.

    python examples/03_export_int8.py
"""

from __future__ import annotations

import json

import numpy as np

import tinyprec
from _common import ensure, out_dir, recipe


def main() -> None:
    r = recipe()
    out = out_dir("digits_cnn")
    ensure(r, out, "train", "qat")  # runs the earlier examples' stages when their files are missing
    from tinyprec.data import load_dataset
    from tinyprec.quant import load_converted
    from tinyprec.recipe import build_model_for
    from tinyprec.training import load_weights

    dataset = load_dataset(r.data, r.seed, base_dir=r.path.parent if r.path else None)
    model = build_model_for(r)
    model.load_state_dict(load_weights(out / "train" / "model_fp32.pt"))
    exported = tinyprec.export(load_converted(out), dataset, model_fp32=model.eval(), config=r.export,
                               out_dir=out, name=r.name)
    print(f"TFLM vs the converted PyTorch model on {exported.check}")
    manifest = json.loads((out / "manifest.json").read_text())
    for role in ("tflite_int8", "onnx_int8", "onnx_fp32", "c_source", "settings_header", "resolver_header"):
        art = manifest["artifacts"][role]
        print(f"{role:16s} {art['path']:32s} {art['bytes']:>8,d} B")
    print(f"ops {manifest['ops']}; TFLM arena {manifest['arena_bytes']:,} B (+{manifest['arena_margin_bytes']} B margin)")
    print(f"input qparams {manifest['input']['scale']:.6g}/{manifest['input']['zero_point']}, "
          f"preprocess {manifest['preprocess']}")

    # The firmware's own check: TFLM's reference kernels on the exported file.
    from tinyprec.runtimes.tflm import run_tflm

    tflite = (out / manifest["artifacts"]["tflite_int8"]["path"]).read_bytes()
    inp = manifest["input"]
    x = dataset.preprocess.apply(dataset.test.x[:200])
    layout = inp.get("layout") or "NHWC"
    if layout == "NHWC" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    q = np.clip(np.round(x / inp["scale"]) + inp["zero_point"], -128, 127).astype(np.int8)
    q = q.reshape((q.shape[0], *inp["shape"][1:]))
    y = run_tflm(tflite, q)
    acc = 100.0 * float(np.mean(np.argmax(y.reshape(len(y), -1), axis=1) == dataset.test.y[:200]))
    print(f"TFLM int8 accuracy on 200 test digits: {acc:.2f}%")


if __name__ == "__main__":
    main()
