"""tinyprec.training: stage 1, mixed-precision training.

:func:`train_model` trains any nn.Module on a :class:`tinyprec.data.Dataset`; :func:`select_precision`,
:func:`autocast_context` and :func:`make_grad_scaler` are the precision policy QAT reuses.
"""

from __future__ import annotations

from tinyprec.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from tinyprec.training.loop import (
    ProgressEvent,
    StepOutcome,
    TrainResult,
    evaluate,
    resolve_device,
    seed_everything,
    train_model,
    train_step,
)
from tinyprec.training.precision import (
    autocast_context,
    cpu_flags_have_native_bf16,
    cpu_has_native_bf16,
    make_grad_scaler,
    select_precision,
)

__all__ = [
    "ProgressEvent", "StepOutcome", "TrainResult", "autocast_context", "cpu_flags_have_native_bf16",
    "cpu_has_native_bf16", "evaluate",
    "load_checkpoint", "load_weights", "make_grad_scaler", "resolve_device", "save_checkpoint", "seed_everything",
    "select_precision", "train_model", "train_step",
]
