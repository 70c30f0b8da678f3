"""Models without class labels (autoencoders, MLPerf Tiny anomaly detection): reconstruction error per runner.

The reconstruction error (mean squared error between the normalized input and the model's output) is what
such a model is for, so the report lists it for every runner with its increase over the FP32 model's, and
the gate checks that increase (``max_recon_increase``, percent) on TFLM; the ROC AUC of the error as an
anomaly score is reported and gated (``max_drop``) only when anomaly labels are given.
"""

from __future__ import annotations

from typing import Any

#: Default allowed increase of TFLM's reconstruction error over FP32's, in percent.
DEFAULT_MAX_RECON_INCREASE = 10.0


def reconstruction_summary(mse: dict[str, float | None]) -> dict[str, Any]:
    """Per-runner MSE and its increase (percent) over the reference (FP32, else TFLM)."""
    reference = "fp32" if mse.get("fp32") is not None else "tflm"
    base = mse.get(reference)
    increase: dict[str, float | None] = {}
    for runner, value in mse.items():
        if value is None or base is None:
            increase[runner] = None
        elif base == 0.0:
            increase[runner] = 0.0 if value == 0.0 else float("inf")
        else:
            increase[runner] = 100.0 * (value - base) / base
    return {"reference": reference, "mse": dict(mse), "increase_pct": increase}


def reconstruction_check(summary: dict[str, Any], max_increase: float) -> tuple[str, bool, str, float, float] | None:
    """(name, passed, message, value, limit) of the gate check on TFLM's reconstruction error, or None
    when there is nothing to compare (no TFLM or no reference run)."""
    if summary["reference"] != "fp32":
        return None
    inc = summary["increase_pct"].get("tflm")
    if inc is None:
        return None
    mse, base = summary["mse"]["tflm"], summary["mse"]["fp32"]
    ok = inc <= max_increase + 1e-9
    detail = f"TFLM reconstruction MSE {mse:.5g} vs FP32 {base:.5g}: {inc:+.2f}%"
    msg = (f"{detail} within max_recon_increase {max_increase:.2f}%" if ok else
           f"{detail} exceeds max_recon_increase {max_increase:.2f}% by {inc - max_increase:.2f} points")
    return "reconstruction_error", ok, msg, float(inc), float(max_increase)
