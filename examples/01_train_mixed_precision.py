"""Stage 1: train digits_cnn with mixed precision (bf16 autocast where the CPU/GPU has it) and FP32 master weights.

    python examples/01_train_mixed_precision.py
"""

from __future__ import annotations

import json

import tinyprec
from _common import out_dir, recipe
from tinyprec.data import load_dataset
from tinyprec.recipe import build_model_for
from tinyprec.training import seed_everything


def main() -> None:
    r = recipe()
    dataset = load_dataset(r.data, r.seed, base_dir=r.path.parent if r.path else None)
    seed_everything(r.seed)
    model = build_model_for(r)
    result = tinyprec.train(model, dataset, config=r.train, out_dir=out_dir("digits_cnn"), seed=r.seed)
    print(f"precision {result.precision} on {result.device}: test accuracy {100 * result.test_accuracy:.2f}% "
          f"after {result.epochs_total} epochs in {result.seconds:.1f} s, {result.skipped_steps} skipped steps")
    print("parameters stay", {str(p.dtype) for p in result.model.parameters()})
    last = json.loads(result.metrics_path.read_text())["epochs"][-1]
    print("last epoch's precision record:", json.dumps(last["safety"], sort_keys=True))


if __name__ == "__main__":
    main()
