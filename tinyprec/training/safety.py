"""Why a training precision is safe: per-epoch loss-scale history, overflow count, gradient underflow.

The underflow figures are measured on the FP32 master gradients: the fraction of non-zero gradient values
that fp16 cannot represent (they flush to zero) without loss scaling, and with the current loss scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SafetyMeter:
    """Accumulates one epoch's evidence; :meth:`record` turns it into the JSON the metrics file keeps."""

    precision: str
    scale_start: float
    scale_history: list[tuple[int, float]] = field(default_factory=list)  # (global step, new scale) on change
    overflow_steps: int = 0
    nonzero: int = 0
    underflow_unscaled: int = 0
    underflow_scaled: int = 0
    sampled_steps: int = 0

    def observe_gradients(self, parameters: Any, scale: float) -> None:
        """Count flush-to-zero values among the current (scaled by ``scale``) gradients, if finite."""
        import torch

        nonzero = under_plain = under_scaled = 0
        for p in parameters:
            if p.grad is None:
                continue
            scaled = p.grad.detach().float()
            if not bool(torch.isfinite(scaled).all()):
                return  # an overflow step; the scaler skips it and it says nothing about underflow
            true = scaled / scale
            mask = true != 0
            nonzero += int(mask.sum())
            under_plain += int((mask & (true.half() == 0)).sum())
            under_scaled += int((mask & (scaled.half() == 0)).sum())
        self.nonzero += nonzero
        self.underflow_unscaled += under_plain
        self.underflow_scaled += under_scaled
        self.sampled_steps += 1

    def observe_step(self, global_step: int, scale_before: float, scale_after: float) -> bool:
        """Note a scale change; return True when the step was skipped (the scale backed off)."""
        if scale_after != scale_before:
            self.scale_history.append((global_step, scale_after))
        skipped = scale_after < scale_before
        self.overflow_steps += int(skipped)
        return skipped

    def record(self, scale_end: float) -> dict[str, Any]:
        plain = self.underflow_unscaled / self.nonzero if self.nonzero else 0.0
        scaled = self.underflow_scaled / self.nonzero if self.nonzero else 0.0
        rec: dict[str, Any] = {
            "precision": self.precision,
            "loss_scale_start": self.scale_start,
            "loss_scale_end": scale_end,
            "loss_scale_history": [[s, v] for s, v in self.scale_history],
            "overflow_steps": self.overflow_steps,
            "grad_underflow_fp16_unscaled": plain,
            "grad_underflow_fp16_scaled": scaled if self.precision == "fp16" else None,
            "grad_sampled_steps": self.sampled_steps,
        }
        if self.precision == "fp16":
            rec["reason"] = (
                f"fp16 with dynamic loss scaling: {plain:.4%} of gradient values would flush to zero unscaled, "
                f"{scaled:.4%} at scale {scale_end:g}; {self.overflow_steps} overflow steps skipped; "
                "weights and optimizer state stay fp32"
            )
        elif self.precision == "bf16":
            rec["reason"] = (
                "bf16 keeps fp32's 8-bit exponent, so gradients neither overflow nor underflow for lack of range "
                f"(in fp16 {plain:.4%} would flush to zero); no loss scaling; weights and optimizer state stay fp32"
            )
        else:
            rec["reason"] = "fp32 throughout"
        return rec
