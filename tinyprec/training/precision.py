"""The mixed-precision policy shared by training and QAT: which autocast dtype, and the autocast context.

``auto`` picks bf16 on a CPU with native bf16 arithmetic (avx512_bf16 or AMX) and on CUDA devices that
support bf16, fp16 on older CUDA devices, and fp32 otherwise (emulated bf16 and CPU fp16 are slower
than fp32). ``bf16``, ``fp16`` and ``fp32`` force the choice.

The CPU detection can be forced with the environment variable ``TINYPREC_CPU_BF16``: ``1`` (behave as on
a CPU with native bf16), ``0`` (as on one without), unset or ``auto`` (read /proc/cpuinfo). The test suite
uses it to cover both branches on one machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Literal

from tinyprec.errors import TinyprecError

PrecisionName = Literal["bf16", "fp16", "fp32"]
_POLICIES = ("auto", "bf16", "fp16", "fp32")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
FORCE_CPU_BF16_ENV = "TINYPREC_CPU_BF16"
_FORCED = {"1": True, "0": False}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic, or what ``TINYPREC_CPU_BF16`` (1 or 0) forces."""
    forced = os.environ.get(FORCE_CPU_BF16_ENV, "auto").strip().lower()
    if forced in _FORCED:
        return _FORCED[forced]
    if forced not in ("", "auto"):
        raise TinyprecError(
            f"environment variable {FORCE_CPU_BF16_ENV}={forced!r}: use 1 (native bf16), 0 (none) or auto (detect)"
        )
    return cpu_flags_have_native_bf16()


@functools.lru_cache(maxsize=1)
def cpu_flags_have_native_bf16() -> bool:
    """True when the CPU advertises native bf16 arithmetic (Linux /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def _device_type(device: Any) -> str:
    return str(getattr(device, "type", device)).split(":")[0]


def select_precision(policy: str, device: Any) -> PrecisionName:
    """Resolve a precision policy ("auto", "bf16", "fp16", "fp32") for ``device`` (str or torch.device).

    >>> select_precision("fp16", "cpu")
    'fp16'
    >>> select_precision("auto", "meta")
    'fp32'
    """
    if policy not in _POLICIES:
        raise TinyprecError(f"precision: '{policy}' is not one of {', '.join(_POLICIES)}")
    if policy != "auto":
        return policy  # type: ignore[return-value]
    kind = _device_type(device)
    if kind == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def torch_dtype(precision: str) -> Any:
    """The torch dtype autocast uses for ``precision`` (None for fp32)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast_context(precision: str, device: Any) -> contextlib.AbstractContextManager[Any]:
    """A ``torch.autocast`` context for ``precision`` on ``device``; a no-op for fp32.

    Parameters stay float32 (master weights); only eligible ops (conv, linear, matmul) run in low precision.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=_device_type(device), dtype=torch_dtype(precision))


def make_grad_scaler(precision: str, device: Any, init_scale: float = 65536.0) -> Any:
    """A torch.amp.GradScaler, enabled only for fp16 (bf16 has fp32's exponent range and needs no scaling)."""
    import torch

    return torch.amp.GradScaler(_device_type(device), init_scale=init_scale, enabled=precision == "fp16")
