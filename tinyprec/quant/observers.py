"""Observers and fake-quantizers for the TFLite int8 spec, and the quantization specs built from them.

* :class:`Float32FakeQuantize` runs observation and fake quantization in float32 with autocast disabled,
  so QAT works under bf16/fp16 autocast (torchao's fused fake-quant fails there with "expected scalar
  type Float but found BFloat16"); scales, zero points and observer statistics stay float32.
* :class:`PercentileObserver` and :class:`MSEObserver` are PTQ range setters torchao does not ship:
  they keep a bounded, deterministic sample of the observed values and pick the range at the end.
"""

from __future__ import annotations

import enum

import torch

import tinyprec.quant._quiet_torchao  # noqa: F401  (before any torchao import)
from torchao.quantization.pt2e import (
    FakeQuantize,
    FixedQParamsFakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torchao.quantization.pt2e.observer import UniformQuantizationObserverBase
from torchao.quantization.pt2e.quantizer import QuantizationSpec

ACT_QMIN, ACT_QMAX = -128, 127
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
WEIGHT4_QMIN, WEIGHT4_QMAX = -7, 7
ACT16_QMIN, ACT16_QMAX = -32767, 32767
INT32_QMIN, INT32_QMAX = -(2**31), 2**31 - 1


class Calibration(enum.Enum):
    """PTQ activation range setting (QuantConfig.calibration)."""

    MINMAX = "minmax"
    MOVING_AVERAGE = "moving_average"
    PERCENTILE = "percentile"
    MSE = "mse"


def _float32_forward(module: FakeQuantize, base_forward, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        return base_forward(module, x.float())


class Float32FakeQuantize(FakeQuantize):
    """FakeQuantize that observes and fake-quantizes in float32 whatever dtype autocast hands it.

    The output is float32; the next op under autocast casts it to its compute dtype as usual.
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803 (torch's name)
        return _float32_forward(self, FakeQuantize.forward, X)


class Float32FixedQParamsFakeQuantize(FixedQParamsFakeQuantize):
    """FixedQParamsFakeQuantize (softmax/sigmoid/tanh outputs) computed in float32 under autocast."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803
        return _float32_forward(self, FakeQuantize.forward, X)


#: What a value that rounds to 0 becomes in the QAT fake quant of rsqrt's input (see FlooredFakeQuantize).
RSQRT_INPUT_FLOOR = 1e-20


class FlooredFakeQuantize(Float32FakeQuantize):
    """QAT fake quant of a tensor read by rsqrt (LayerNorm's variance + eps): a value that rounds to 0 comes out
    as 1e-20, so 1/sqrt is 1e10 (saturating to the int8 maximum, as TFLM's RSQRT does at its zero point) and its
    gradient 0 * 1e30 = 0 rather than NaN. convert_pt2e turns it into the usual quantize/dequantize pair."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803
        return torch.clamp_min(super().forward(X), RSQRT_INPUT_FLOOR)


class _SampleObserver(UniformQuantizationObserverBase):
    """Per-tensor observer keeping min/max and a bounded, evenly strided sample of the values seen."""

    max_per_batch = 1 << 16
    max_samples = 1 << 20

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(self, dtype=torch.int8, qscheme=torch.per_tensor_affine, quant_min=None, quant_max=None,
                 eps=torch.finfo(torch.float32).eps, is_dynamic=False, **kwargs) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max, eps=eps,
                         is_dynamic=is_dynamic, **kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self._samples: list[torch.Tensor] = []
        self._count = 0
        self._range: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().flatten()
        lo, hi = torch.aminmax(x)
        self.min_val.copy_(torch.minimum(lo, self.min_val))
        self.max_val.copy_(torch.maximum(hi, self.max_val))
        if self._count < self.max_samples:
            step = max(1, x.numel() // self.max_per_batch)
            sample = x[::step].cpu()
            self._samples.append(sample)
            self._count += sample.numel()
        self._range = None
        return x_orig

    def _pick_range(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._samples:
            return self._calculate_qparams(self.min_val, self.max_val)
        if self._range is None:
            self._range = self._pick_range(torch.cat(self._samples))
        return self._calculate_qparams(*self._range)

    def reset_min_max_vals(self) -> None:
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self._samples, self._count, self._range = [], 0, None


class PercentileObserver(_SampleObserver):
    """Range = [100-p, p] percentiles of the observed values (outliers clipped)."""

    def __init__(self, percentile: float = 99.99, **kwargs) -> None:
        super().__init__(**kwargs)
        self.percentile = float(percentile)

    def _pick_range(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0], dtype=torch.float64)
        lo, hi = torch.quantile(values.double(), q).float()
        return torch.minimum(lo, torch.tensor(0.0)), torch.maximum(hi, torch.tensor(0.0))


class MSEObserver(_SampleObserver):
    """Range minimizing the mean squared fake-quantization error on the observed values.

    Candidates shrink the observed [min, max] by ratios on a geometric grid from 1 down to 1/1000
    (heavy-tailed activations can want a range far below their maximum); the full range is a candidate,
    so the result never has a larger error than min-max.
    """

    grid = 100
    max_eval = 1 << 18

    def _pick_range(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if values.numel() > self.max_eval:
            values = values[:: values.numel() // self.max_eval + 1]
        lo0 = torch.minimum(values.min(), torch.tensor(0.0))
        hi0 = torch.maximum(values.max(), torch.tensor(0.0))
        best = (lo0, hi0)
        best_err = float("inf")
        for ratio in torch.logspace(0.0, -3.0, self.grid, dtype=torch.float64).tolist():
            lo, hi = lo0 * ratio, hi0 * ratio
            scale, zp = self._calculate_qparams(lo, hi)
            fq = torch.fake_quantize_per_tensor_affine(values, float(scale), int(zp), self.quant_min, self.quant_max)
            err = float(torch.mean((fq - values) ** 2))
            if err < best_err:
                best, best_err = (lo, hi), err
        return best


_FINITE: dict[type, type] = {}


def finite_observer(cls: type) -> type:
    """``cls`` observing only the finite values it is shown, and only those up to its ``cap`` argument (default
    +inf), passing every value through: for an output that is +inf where TFLM saturates to the int8 maximum
    (rsqrt of 0), so the range is set by the values that matter and the fake quant clamps the rest to the top
    step, as the int8 kernel does."""
    if cls not in _FINITE:
        def __init__(self: torch.nn.Module, *args: object, cap: float = float("inf"), **kwargs: object) -> None:
            cls.__init__(self, *args, **kwargs)
            self.cap = cap

        def forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            seen = x.detach()
            seen = seen[torch.isfinite(seen) & (seen <= self.cap)]
            if seen.numel():
                cls.forward(self, seen)
            return x

        _FINITE[cls] = type(f"Finite{cls.__name__}", (cls,), {"__init__": __init__, "forward": forward,
                                                               "__module__": __name__})
    return _FINITE[cls]


def activation_qspec(*, qat: bool, calibration: Calibration, percentile: float, bits: int = 8,
                     finite: bool = False, cap: float = float("inf")) -> QuantizationSpec:
    """Per-tensor asymmetric int8 [-128, 127] for activations (QAT: float32 fake-quant, moving average);
    ``bits=16``: int16, symmetric, zero point 0, [-32767, 32767] (TFLite's 16x8 spec); ``finite``: the
    observer ignores non-finite values and values above ``cap`` (:func:`finite_observer`)."""
    def pick(c: type) -> object:
        return finite_observer(c).with_args(cap=cap) if finite else c

    if qat:
        ctr = Float32FakeQuantize.with_args(observer=pick(MovingAverageMinMaxObserver))
    elif calibration is Calibration.MINMAX:
        ctr = pick(MinMaxObserver)
    elif calibration is Calibration.MOVING_AVERAGE:
        ctr = pick(MovingAverageMinMaxObserver)
    elif calibration is Calibration.PERCENTILE:
        ctr = finite_observer(PercentileObserver).with_args(percentile=percentile, cap=cap) if finite else \
            PercentileObserver.with_args(percentile=percentile)
    else:
        ctr = pick(MSEObserver)
    if bits == 16:
        return QuantizationSpec(dtype=torch.int16, observer_or_fake_quant_ctr=ctr, quant_min=ACT16_QMIN,
                                quant_max=ACT16_QMAX, qscheme=torch.per_tensor_symmetric)
    return QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=ctr, quant_min=ACT_QMIN,
                            quant_max=ACT_QMAX, qscheme=torch.per_tensor_affine)


def weight_qspec(*, qat: bool, per_channel: bool, bits: int = 8, scales: str = "mse",
                 learn: bool = True) -> QuantizationSpec:
    """Symmetric int8 [-127, 127], zero point 0; per output channel (axis 0 of torch's weight) by default.

    ``bits=4``: [-7, 7] (values stored in int8 tensors); ``scales`` "mse" (minimize the quantization MSE) or
    "minmax" sets the PTQ scales and QAT's starting point; QAT learns them (LSQ, :mod:`tinyprec.quant.lsq`)
    unless ``learn`` is False (then they follow the observer, as at 8 bits).
    """
    if per_channel:
        obs = PerChannelMinMaxObserver
        qscheme = torch.per_channel_symmetric
    else:
        obs = MinMaxObserver
        qscheme = torch.per_tensor_symmetric
    qmin, qmax = WEIGHT_QMIN, WEIGHT_QMAX
    if bits == 4:
        from tinyprec.quant.lsq import LSQFakeQuantize, MSEObserverPerTensor, PerChannelMSEObserver

        qmin, qmax = WEIGHT4_QMIN, WEIGHT4_QMAX
        ptq_obs = (PerChannelMSEObserver if per_channel else MSEObserverPerTensor) if scales == "mse" else obs
        if qat and learn:
            ctr = LSQFakeQuantize.with_args(observer=obs, init=scales)
        else:
            ctr = Float32FakeQuantize.with_args(observer=ptq_obs) if qat else ptq_obs
    else:
        ctr = Float32FakeQuantize.with_args(observer=obs) if qat else obs
    return QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=ctr, quant_min=qmin,
                            quant_max=qmax, qscheme=qscheme, ch_axis=0 if per_channel else None)


def derive_bias_qparams(obs_or_fqs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Bias scale = input_scale * weight_scale[c] (float32), zero point 0, as the TFLite spec requires."""
    act, weight = obs_or_fqs
    act_scale, _ = act.calculate_qparams()
    weight_scale, _ = weight.calculate_qparams()
    scale = (act_scale.float().reshape(-1)[:1] * weight_scale.float().reshape(-1)).to(torch.float32)
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def make_float32_fake_quant(module: torch.nn.Module) -> torch.nn.Module:
    """Turn a torchao FakeQuantize that PT2E created itself into its float32-under-autocast twin, in place."""
    if type(module) is FixedQParamsFakeQuantize:
        module.__class__ = Float32FixedQParamsFakeQuantize
    elif type(module) is FakeQuantize:
        module.__class__ = Float32FakeQuantize
    return module
