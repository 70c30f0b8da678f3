"""Stage 2: QAT of the trained digits_cnn to the TFLite int8 spec, with PTQ as the baseline beside it.

    python examples/02_quantization_aware_training.py
"""

from __future__ import annotations

import json

import tinyprec
from _common import ensure, out_dir, recipe


def main() -> None:
    r = recipe()
    out = out_dir("digits_cnn")
    ensure(r, out, "train")  # runs the earlier examples' stages when their files are missing
    from tinyprec.data import load_dataset
    from tinyprec.recipe import build_model_for
    from tinyprec.training import load_weights

    model = build_model_for(r)
    model.load_state_dict(load_weights(out / "train" / "model_fp32.pt"))
    dataset = load_dataset(r.data, r.seed, base_dir=r.path.parent if r.path else None)
    q = tinyprec.quantize(model, dataset, config=r.quant, out_dir=out, seed=r.seed)
    print(f"{q.mode} under {q.precision}: FP32 {q.fp32_accuracy:.2f}%  fake-quant int8 {q.fake_quant_accuracy:.2f}%  "
          f"PTQ {q.ptq_accuracy:.2f}%")
    print(f"int8 input qparams {q.input_qparams}, output qparams {q.output_qparams}")
    table = json.loads(q.qparams_path.read_text())["tensors"]
    print(f"{len(table)} quantized tensors in {q.qparams_path}")


if __name__ == "__main__":
    main()
