"""Latency ESTIMATES for TFLM on a microcontroller core: from per-op work counts (no build needed), and from
measured instruction counts (a firmware build run on the emulated core, see the end of this module).

Model: cycles = sum over ops of (cycles per MAC of the op's class) * MACs
                + (prior cycles per output element of the op) * output elements + a per-op overhead.

The two cycles-per-MAC figures (CONV_2D/FULLY_CONNECTED and DEPTHWISE_CONV_2D) are CALIBRATED on the
published MLPerf Tiny v0.5 reference results, TFLM on a Nucleo-L4R5ZI (Cortex-M4, 120 MHz; built with
the CMSIS-NN kernels, as mlcommons/tiny's setup script does, so the figures estimate a CMSIS-NN build): keyword spotting (DS-CNN) 181.9 ms and image classification (ResNet-8) 704.2 ms, using the
MAC counts of those exact models (../shared/fixtures/mlperf_tiny). Two points fix two unknowns, so the
calibration fits exactly by construction; :data:`ONE_CLASS_FIT_ERROR` shows the spread a single
cycles-per-MAC figure leaves on the same points, a fair idea of how far off the estimate may be on a
model of a different shape. Other cores are scaled by CoreMark/MHz relative to the Cortex-M4: an
estimate of an estimate. TFLM's reference kernels run several times slower than CMSIS-NN (measured: 5.6x on KWS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tinyprec.errors import DataError
from tinyprec.ir import Graph, OpType
from tinyprec.mcu.macs import OpCost, op_costs

LABEL = "estimate (MACs; calibrated on MLPerf Tiny KWS 181.9 ms / IC 704.2 ms, CMSIS-NN, Cortex-M4 @ 120 MHz)"

# Published MLPerf Tiny v0.5 reference latencies (ms), Cortex-M4 @ 120 MHz, TFLM with CMSIS-NN kernels.
CALIBRATION_POINTS: dict[str, float] = {"kws_ref_model.tflite": 181.9, "pretrainedResnet_quant.tflite": 704.2}
CALIBRATION_MHZ = 120.0

# Fitted by fit_calibration() on the two models above (tests refit them and compare).
CYCLES_PER_MAC: dict[str, float] = {"dense": 6.4111, "depthwise": 15.339}
# The one-class model's relative error on (KWS, IC): cycles per MAC 6.453 for every MAC op.
ONE_CLASS_FIT_ERROR: dict[str, float] = {"kws_ref_model.tflite": -0.113, "pretrainedResnet_quant.tflite": 0.006}

_MAC_CLASS: dict[OpType, str] = {
    OpType.CONV_2D: "dense",
    OpType.FULLY_CONNECTED: "dense",
    OpType.DEPTHWISE_CONV_2D: "depthwise",
    OpType.TRANSPOSE_CONV: "dense",
    OpType.BATCH_MATMUL: "dense",
}

# Priors (not fitted): Cortex-M4 cycles per output element of the integer reference kernels
# (requantization, clamping, lookups); per "MAC" for pooling and MEAN (one add/compare per element).
_PER_OUTPUT: dict[OpType, float] = {
    OpType.CONV_2D: 30.0,
    OpType.DEPTHWISE_CONV_2D: 30.0,
    OpType.FULLY_CONNECTED: 30.0,
    OpType.ADD: 60.0,
    OpType.MUL: 40.0,
    OpType.AVERAGE_POOL_2D: 30.0,
    OpType.MAX_POOL_2D: 10.0,
    OpType.MEAN: 30.0,
    OpType.RESHAPE: 0.5,
    OpType.CONCATENATION: 2.0,
    OpType.PAD: 2.0,
    OpType.SOFTMAX: 300.0,
    OpType.LOGISTIC: 60.0,
    OpType.TANH: 60.0,
    OpType.QUANTIZE: 20.0,
    OpType.DEQUANTIZE: 20.0,
    OpType.HARD_SWISH: 40.0,
    OpType.LEAKY_RELU: 30.0,
    OpType.SUB: 60.0,
    OpType.MAXIMUM: 8.0,
    OpType.MINIMUM: 8.0,
    OpType.ABS: 15.0,
    OpType.TRANSPOSE: 6.0,
    OpType.STRIDED_SLICE: 4.0,
    OpType.PRELU: 40.0,
    OpType.RESIZE_NEAREST_NEIGHBOR: 6.0,  # estimates (not calibrated): a copy per output element
    OpType.RESIZE_BILINEAR: 40.0,  # four int64 multiply-adds per output element
    OpType.TRANSPOSE_CONV: 40.0,  # requantization; its scatter MACs are priced as "dense" (estimate)
    OpType.DEPTH_TO_SPACE: 6.0,  # a copy per output element (estimate)
    OpType.BATCH_MATMUL: 40.0,  # requantization (plus the rhs transpose); MACs priced as "dense" (estimate)
    OpType.ELU: 15.0,  # one table lookup per element (as ABS without rescale); not calibrated
    OpType.REDUCE_MAX: 8.0,  # per output (the per-input compares are _PER_ACCUMULATE); not calibrated
    OpType.RSQRT: 250.0,  # five fixed-point Newton-Raphson steps and two requantizations per element; estimate
}
_PER_ACCUMULATE: dict[OpType, float] = {OpType.AVERAGE_POOL_2D: 4.0, OpType.MAX_POOL_2D: 4.0, OpType.MEAN: 4.0,
                                         OpType.REDUCE_MAX: 4.0}
_PER_OP_OVERHEAD = 2000.0


@dataclass(frozen=True)
class Core:
    """A CPU core family: default clock and CoreMark/MHz (vendor figures) for cross-core scaling."""

    name: str
    default_mhz: float
    coremark_per_mhz: float


CORES: dict[str, Core] = {
    "cortex-m0plus": Core("cortex-m0plus", 133.0, 2.46),
    "cortex-m4": Core("cortex-m4", 120.0, 3.42),
    "cortex-m7": Core("cortex-m7", 280.0, 5.01),
    "cortex-m33": Core("cortex-m33", 160.0, 4.02),
    "xtensa-lx7": Core("xtensa-lx7", 240.0, 2.56),
}


@dataclass(frozen=True)
class Target:
    """A core at a clock, e.g. ``cortex-m4@120``."""

    core: Core
    mhz: float

    @property
    def name(self) -> str:
        return f"{self.core.name}@{self.mhz:g}MHz"


@dataclass(frozen=True)
class LatencyEstimate:
    """An estimated latency per inference, with the per-op split (ms) and the label to show with it."""

    target: str
    ms: float
    cycles: float
    per_op_ms: tuple[tuple[str, str, float], ...]
    label: str = LABEL


def parse_target(spec: str) -> Target:
    """``"cortex-m7"`` (default clock) or ``"cortex-m7@480"`` (MHz). Raises DataError for unknown cores."""
    m = re.fullmatch(r"\s*([a-z0-9+-]+)\s*(?:@\s*([0-9.]+)\s*(?:mhz)?)?\s*", spec.lower())
    name = (m.group(1) if m else spec).replace("cortex-m0+", "cortex-m0plus")
    if m is None or name not in CORES:
        raise DataError(f"unknown target '{spec}'; use one of {', '.join(CORES)} optionally with @MHZ (cortex-m4@120)")
    mhz = float(m.group(2)) if m.group(2) else CORES[name].default_mhz
    if mhz <= 0:
        raise DataError(f"target '{spec}': the clock must be positive MHz")
    return Target(CORES[name], mhz)


def _m4_cycles(cost: OpCost, per_mac: dict[str, float]) -> float:
    cycles = _PER_OP_OVERHEAD + _PER_OUTPUT[cost.op] * cost.out_elements
    cls = _MAC_CLASS.get(cost.op)
    if cls is not None:
        cycles += per_mac[cls] * cost.macs
    else:
        cycles += _PER_ACCUMULATE.get(cost.op, 0.0) * cost.macs
    return cycles


def estimate_latency(costs: Graph | Sequence[OpCost], target: str | Target = "cortex-m4") -> LatencyEstimate:
    """Estimated ms per inference on ``target`` for a graph (or its :func:`op_costs`). An ESTIMATE: see LABEL."""
    items = op_costs(costs) if isinstance(costs, Graph) else list(costs)
    tgt = parse_target(target) if isinstance(target, str) else target
    scale = CORES["cortex-m4"].coremark_per_mhz / tgt.core.coremark_per_mhz
    per_op = []
    total = 0.0
    for c in items:
        cycles = _m4_cycles(c, CYCLES_PER_MAC) * scale
        total += cycles
        per_op.append((c.name, c.op.value, cycles / (tgt.mhz * 1e3)))
    return LatencyEstimate(tgt.name, total / (tgt.mhz * 1e3), total, tuple(per_op))


def estimate_latency_ms(costs: Graph | Sequence[OpCost], target: str | Target = "cortex-m4") -> float:
    """Only the milliseconds of :func:`estimate_latency`."""
    return estimate_latency(costs, target).ms


@dataclass(frozen=True)
class CalibrationFit:
    """The fit on the MLPerf points: cycles per MAC per class, and the one-class comparison."""

    cycles_per_mac: dict[str, float]
    predicted_ms: dict[str, float]
    relative_error: dict[str, float]
    one_class_cycles_per_mac: float
    one_class_relative_error: dict[str, float]


def fit_calibration(models: Iterable[tuple[str, Sequence[OpCost]]]) -> CalibrationFit:
    """Solve the two cycles-per-MAC figures from ``(file name, op costs)`` of the calibration models."""
    import numpy as np

    names, rows, priors, totals = [], [], [], []
    for name, costs in models:
        names.append(name)
        totals.append(CALIBRATION_POINTS[name] * CALIBRATION_MHZ * 1e3)
        priors.append(sum(_m4_cycles(c, {"dense": 0.0, "depthwise": 0.0}) for c in costs))
        rows.append([sum(c.macs for c in costs if _MAC_CLASS.get(c.op) == k) for k in ("dense", "depthwise")])
    a, prior, total = np.asarray(rows, float), np.asarray(priors), np.asarray(totals)
    solution = np.linalg.lstsq(a, total - prior, rcond=None)[0]
    pred = prior + a @ solution
    m = a.sum(axis=1)
    one = float(m @ (total - prior) / (m @ m))
    pred_one = prior + one * m
    return CalibrationFit(
        cycles_per_mac={"dense": float(solution[0]), "depthwise": float(solution[1])},
        predicted_ms={n: float(p / (CALIBRATION_MHZ * 1e3)) for n, p in zip(names, pred)},
        relative_error={n: float(p / t - 1) for n, p, t in zip(names, pred, total)},
        one_class_cycles_per_mac=one,
        one_class_relative_error={n: float(p / t - 1) for n, p, t in zip(names, pred_one, total)},
    )


# ---- Instruction-based model (a measured build exists: `tinyprec mcu`, the `mcu` validation runner) ----
#
# latency = measured instructions per inference x cycles per instruction (CPI) / clock. The CPI is the
# board's: fitted on the published MLPerf Tiny v0.5 reference results (mlcommons/tiny_results_v0.5,
# closed/reference: Nucleo-L4R5ZI, Cortex-M4 @ 120 MHz) with the instruction counts of the code that
# board ran. That build was TFLM of TensorFlow v2.3.1 with CMSIS-NN (setup scripts: TF_VERSION=v2.3.1,
# TAGS=cmsis-nn; TF 2.3's Makefile pins CMSIS_5 1150e71e, May 2020), compiled by mbed-os with
# GCC-ARM 6-2017-q2 (mbed's default profile: -Os). Its kernels execute 30-120% more instructions than
# today's on these layers (depthwise 2.1-2.4x), FULLY_CONNECTED only 15% more: a CPI fitted on today's
# counts (2.830, benchmarks/bench_mcu.py) absorbs that speed-up and missed the all-FC AD by +37%.
# A one-off measurement (results/cmsisnn_era.json; method in the README) counted every layer of the four
# models under the 2020 kernels (-Os);
# one CPI fitted on KWS + IC then lands VWW at -5.6% and AD at +3.5% (held out). Applied to a build of
# today's kernels it estimates that build on such a board: an extrapolation across kernel versions.

INSTRUCTION_LABEL = ("estimate (measured instructions x the Nucleo-L4R5ZI's cycles/instruction, fitted on MLPerf "
                     "Tiny KWS + IC with the instruction counts of the 2020 CMSIS-NN build it ran; Cortex-M4 @ 120 MHz)")
# Published latencies (ms): runtime of 100 inferences (1,000 for AD) / count, median window: KWS 18.192 s,
# IC 70.425-70.426 s, VWW 60.054 s (600.6 = 1 / the median throughput 1.665), AD 10.051-10.052 s.
PUBLISHED_MS: dict[str, float] = {"kws": 181.9, "ic": 704.2, "vww": 600.6, "ad": 10.05}
FITTED_ON: tuple[str, ...] = ("kws", "ic")
HELD_OUT: tuple[str, ...] = ("vww", "ad")
# MLPerf's own VWW and AD files (mlcommons/tiny, benchmark/training/*/trained_models), where the benchmark
# is given a clone: held out as well, beside our zoo exports of the same architectures.
HELD_OUT_FILES: dict[str, str] = {"vww_mlperf": "vww", "ad_mlperf": "ad"}
PUBLISHED_KERNELS = "cmsis-nn"
PUBLISHED_MHZ = 120.0


def _role(name: str, fitted_on: tuple[str, ...]) -> str:
    if name in fitted_on:
        return "fitted"
    return "held out" if name in HELD_OUT or name in HELD_OUT_FILES else "extra"


# Cycles per instruction of the Nucleo-L4R5ZI (Cortex-M4, 120 MHz, code in flash), fitted by fit_cpi()
# on KWS and IC with the 2020 kernels' counts (benchmarks/results/cmsisnn_era.json, its primary variant).
CPI_M4_CMSIS_NN = 1.725
# That fit's relative error on the four published figures (VWW and AD held out).
ERA_FIT_ERROR: dict[str, float] = {"kws": -0.009, "ic": 0.001, "vww": -0.056, "ad": 0.035}


def fit_cpi(instructions: dict[str, float], published_ms: dict[str, float] | None = None,
            mhz: float = PUBLISHED_MHZ, fitted_on: tuple[str, ...] = FITTED_ON) -> dict[str, object]:
    """Least-squares CPI through the origin on ``fitted_on``, and the relative error on every model given."""
    pub = published_ms or PUBLISHED_MS
    cycles = {k: pub[k] * mhz * 1e3 for k in instructions if k in pub}
    num = sum(instructions[k] * cycles[k] for k in fitted_on)
    den = sum(instructions[k] ** 2 for k in fitted_on)
    cpi = num / den
    predicted = {k: instructions[k] * cpi / (mhz * 1e3) for k in cycles}
    return {"cpi": cpi, "predicted_ms": predicted,
            "relative_error": {k: predicted[k] / pub[k] - 1 for k in predicted},
            "role": {k: _role(k, fitted_on) for k in predicted}}


def cpi_for(core: str, kernels: str) -> tuple[float, str]:
    """CPI for a core and kernel set, and how it was obtained. Only Cortex-M4 + CMSIS-NN is fitted on
    published figures; other cores scale by CoreMark/MHz (same Thumb-2 instruction stream, different
    pipelines), and the reference kernels borrow the CMSIS-NN CPI (no published reference-kernel figures)."""
    how = "fitted (Cortex-M4 board, CMSIS-NN of 2020)"
    cpi = CPI_M4_CMSIS_NN
    if kernels != PUBLISHED_KERNELS:
        how = f"CMSIS-NN CPI applied to {kernels} kernels"
    if core != "cortex-m4":
        cpi *= CORES["cortex-m4"].coremark_per_mhz / CORES[core].coremark_per_mhz
        how += f", scaled to {core} by CoreMark/MHz"
    return cpi, how


def estimate_from_instructions(instructions: float, target: str, kernels: str) -> dict[str, object]:
    """ms per inference for measured ``instructions`` on ``target`` (core[@MHz]) built with ``kernels``."""
    tgt = parse_target(target)
    cpi, how = cpi_for(tgt.core.name, kernels)
    cycles = instructions * cpi
    return {"ms": cycles / (tgt.mhz * 1e3), "mhz": tgt.mhz, "cycles": cycles, "cpi": cpi, "cpi_source": how,
            "instructions": int(instructions), "label": INSTRUCTION_LABEL}


# ---- Instruction-mix model (an exact trace exists: benchmarks/bench_mcu.py with `tinyprec[trace]`) ----
#
# The Cortex-M4's documented cycles per instruction class (tinyprec.mcu.cycles) on the traced inference,
# with the refill penalty P at MIX_REFILL_CYCLES (the TRM's range is 1-3), give the cycles on zero-wait
# memory. The board runs from flash with wait states, which the TRM figures leave out; two ways to
# account for them, each ONE global parameter fitted on KWS + IC (FITTED_ON) and checked on VWW + AD:
#   "trm_scaled":  cycles = s * documented cycles           (s: memory-system slowdown, same for all code)
#   "trm_fetch":   cycles = documented cycles + w * code_bytes / 8   (w: wait cycles per 64-bit flash fetch
#                  of executed code, as with the flash accelerator's cache missing; datasheet: 5 wait
#                  states at 120 MHz on the STM32L4R5)
MIX_REFILL_CYCLES = 2.0
MIX_MODELS: tuple[str, ...] = ("trm_scaled", "trm_fetch")
# Their parameters as fit_mix_model() found them on KWS + IC (bench_mcu.py -> results/mcu.json). Neither
# beats the single CPI on the held-out AD (+43%, +46% against +40%): see the README's latency section.
MIX_FITTED: dict[str, float] = {"trm_scaled": 2.324, "trm_fetch": 4.030}


def estimate_from_mix(mix: dict[str, float], model: str = "trm_scaled", mhz: float = PUBLISHED_MHZ) -> float:
    """ms per inference on a Cortex-M4 at ``mhz`` for a traced mix (InstructionMix.as_dict()), CMSIS-NN.

    >>> round(estimate_from_mix({"base_cycles": 1.2e6, "refills": 0, "code_bytes": 0}), 3)
    23.24
    """
    fixed, coefficient = _mix_terms(mix, model)
    return (fixed + MIX_FITTED[model] * coefficient) / (mhz * 1e3)


def _mix_terms(mix: dict[str, float], model: str) -> tuple[float, float]:
    """(fixed cycles, coefficient of the fitted parameter) of a mix ({base_cycles, refills, code_bytes})."""
    documented = float(mix["base_cycles"]) + MIX_REFILL_CYCLES * float(mix["refills"])
    if model == "trm_scaled":
        return 0.0, documented
    if model == "trm_fetch":
        return documented, float(mix["code_bytes"]) / 8.0
    raise DataError(f"unknown instruction-mix model '{model}'; use one of {', '.join(MIX_MODELS)}")


def fit_mix_model(mixes: dict[str, dict[str, float]], model: str, published_ms: dict[str, float] | None = None,
                  mhz: float = PUBLISHED_MHZ, fitted_on: tuple[str, ...] = FITTED_ON) -> dict[str, object]:
    """Least-squares fit of ``model``'s one parameter on ``fitted_on``; prediction and relative error on
    every mix given (``mixes``: name -> InstructionMix.as_dict()).

    >>> mixes = {"a": {"base_cycles": 100.0, "refills": 0, "code_bytes": 0}, "b": {"base_cycles": 300.0, "refills": 0, "code_bytes": 0}}
    >>> fit = fit_mix_model(mixes, "trm_scaled", {"a": 2.0, "b": 6.0}, mhz=0.1, fitted_on=("a",))
    >>> round(fit["parameter"], 6), round(fit["relative_error"]["b"], 6)
    (2.0, 0.0)
    """
    pub = published_ms or PUBLISHED_MS
    missing = [k for k in fitted_on if k not in mixes or k not in pub]
    if missing:
        raise DataError(f"fit_mix_model: no mix or published figure for {', '.join(missing)}")
    terms = {k: _mix_terms(m, model) for k, m in mixes.items()}
    target = {k: pub[k] * mhz * 1e3 for k in mixes if k in pub}
    num = sum(terms[k][1] * (target[k] - terms[k][0]) for k in fitted_on)
    den = sum(terms[k][1] ** 2 for k in fitted_on)
    param = num / den
    predicted = {k: (terms[k][0] + param * terms[k][1]) / (mhz * 1e3) for k in target}
    return {"model": model, "parameter": param, "predicted_ms": predicted,
            "relative_error": {k: predicted[k] / pub[k] - 1 for k in predicted},
            "role": {k: _role(k, fitted_on) for k in predicted}}
