"""Low-bit weights: MSE-optimal scales (the 4-bit PTQ baseline) and a learned step size for 4-bit QAT.

At 4 bits ([-7, 7]) min-max scales waste most of the grid on a few large weights; :func:`mse_scales`
searches, per output channel, the clipping ratio that minimizes the squared quantization error
(the PTQ baseline, and where QAT starts). :class:`LSQFakeQuantize` then trains the scale itself
(Esser et al. 2020, "Learned Step Size Quantization"): the weight goes through
``clamp(round(w / s), -7, 7) * s`` with a straight-through round, the scale gets the LSQ gradient
scaled by ``1 / sqrt(n * 7)`` (n: weights per channel), and convert_pt2e reads the learned scale
through ``calculate_qparams``. Everything computes in float32 under autocast, as the int8 fake quants do.
"""

from __future__ import annotations

import math

import torch

import tinyprec.quant._quiet_torchao  # noqa: F401  (before any torchao import)
from torchao.quantization.pt2e import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver

_EPS = torch.finfo(torch.float32).eps
_RATIOS = 81  # clipping ratios tried, from 1.0 down to 0.2 of max |w|


def _channels(w: torch.Tensor, axis: int | None) -> torch.Tensor:
    w = w.detach().float()
    if axis is None:
        return w.reshape(1, -1)
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def _fake_quant(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Symmetric fake quantization as convert_pt2e's quantize_per_channel computes it (round half to even)."""
    return torch.clamp(torch.round(w * (1.0 / scale)), -qmax, qmax) * scale


def mse_scales(w: torch.Tensor, axis: int | None, qmax: int) -> torch.Tensor:
    """Per-channel (``axis``) or per-tensor (None) symmetric scales minimizing ||w - fake_quant(w)||^2.

    The min-max scale (ratio 1) is a candidate, so the error is never above min-max's.
    """
    rows = _channels(w, axis)
    amax = rows.abs().amax(dim=1).clamp(min=_EPS)
    ratios = torch.linspace(1.0, 0.2, _RATIOS)
    best = (amax / qmax).float()
    best_err = torch.full_like(amax, float("inf"))
    for r in ratios.tolist():
        scale = (amax * r / qmax).float().clamp(min=_EPS)
        err = ((_fake_quant(rows, scale[:, None], qmax) - rows) ** 2).sum(dim=1)
        better = err < best_err
        best = torch.where(better, scale, best)
        best_err = torch.where(better, err, best_err)
    return best


class PerChannelMSEObserver(PerChannelMinMaxObserver):
    """Per-channel symmetric weight observer whose scales minimize the quantization MSE (4-bit PTQ)."""

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        self._last = x_orig.detach().float().clone()
        return super().forward(x_orig)

    @torch.jit.ignore
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = mse_scales(self._last, self.ch_axis, int(self.quant_max))
        return scale, torch.zeros(scale.shape, dtype=torch.int64)


class MSEObserverPerTensor(MinMaxObserver):
    """Per-tensor symmetric weight observer with the MSE-optimal scale (4-bit per-tensor weights)."""

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        self._last = x_orig.detach().float().clone()
        return super().forward(x_orig)

    @torch.jit.ignore
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = mse_scales(self._last, None, int(self.quant_max)).reshape(())
        return scale, torch.zeros((), dtype=torch.int64)


def _grad_scaled(s: torch.Tensor, g: float) -> torch.Tensor:
    """``s`` in the forward pass, gradient multiplied by ``g`` in the backward pass."""
    return (s - s * g).detach() + s * g


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


class LSQFakeQuantize(FakeQuantize):
    """Symmetric weight fake quantization with a learned scale (LSQ), per channel or per tensor.

    The scale is an ``nn.Parameter``, initialized on the first forward from :func:`mse_scales`
    (training loops must run one forward before building their optimizer: ``run_qat`` does).
    The observer settings are kept only for convert_pt2e (dtype, range, qscheme, axis).
    """

    def __init__(self, observer=PerChannelMinMaxObserver, quant_min=None, quant_max=None, **kwargs) -> None:
        super().__init__(observer=observer, quant_min=quant_min, quant_max=quant_max, **kwargs)
        del self.scale
        self.scale = torch.nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803 (torch's name)
        with torch.autocast(device_type=X.device.type, enabled=False):
            x = X.float()
            axis = self.ch_axis if self.is_per_channel else None
            if not bool(self.initialized):
                with torch.no_grad():
                    init = mse_scales(x, axis, int(self.quant_max))
                self.scale = torch.nn.Parameter(init.to(x.device))
                self.zero_point = torch.zeros(init.shape, dtype=torch.int64, device=x.device)
                self.initialized.fill_(1)
            if self.fake_quant_enabled[0] != 1:
                return x
            qmax = int(self.quant_max)
            per = x.numel() // max(self.scale.numel(), 1)
            s = _grad_scaled(self.scale.clamp(min=_EPS), 1.0 / math.sqrt(per * qmax))
            shape = [1] * x.dim()
            if axis is not None:
                shape[axis] = -1
            s = s.reshape(shape) if axis is not None else s.reshape(())
            return torch.clamp(_round_ste(x * (1.0 / s)), -qmax, qmax) * s

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale.detach().clamp(min=_EPS).float().clone()
        if not self.is_per_channel:
            scale = scale.reshape(())
        return scale, torch.zeros(scale.shape, dtype=torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        for name in ("scale", "zero_point"):  # shapes are fixed once initialized: plain copy, no resize
            val = state_dict.get(prefix + name)
            if val is not None and getattr(self, name).shape != val.shape:
                with torch.no_grad():
                    if name == "scale":
                        self.scale = torch.nn.Parameter(val.detach().clone())
                    else:
                        self.zero_point = val.detach().clone()
        torch.nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                              unexpected_keys, error_msgs)


def lsq_modules(model: torch.nn.Module) -> list[LSQFakeQuantize]:
    return [m for m in model.modules() if isinstance(m, LSQFakeQuantize)]


__all__ = ["LSQFakeQuantize", "MSEObserverPerTensor", "PerChannelMSEObserver", "lsq_modules", "mse_scales"]
