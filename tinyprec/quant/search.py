"""Per-layer precision search: which layers get 4-bit weights (or 16-bit activations) under a RAM budget.

1. **Baseline.** PTQ the model at int8, lower it, write the .tflite and measure TFLM's arena: the int8
   file bytes, the planned head and the rest (:mod:`tinyprec.mcu.budget`).
2. **Sensitivity**, against the model's own float weights, one layer at a time on a calibration batch of
   the validation split: the output KL divergence (float softmax vs perturbed) when only that layer's
   weights are fake-quantized to int4 (per-channel, MSE-optimal scales) or int8, and when only its output
   activation is fake-quantized to int8 (int16 removes that error). Cheap: one forward pass per layer
   and precision, no PT2E program.
3. **Assignment.** A mixed-integer program (scipy.optimize.milp) minimises flash (INT4 halves a layer's
   weight bytes; int16 doubles its INT32 bias to INT64) subject to the summed KL (an additive proxy of the
   accuracy drop) under a bound, INT4 only where the layer computes in int8 and TFLM supports it, and the
   arena (planned head at every op, INT4 unpack scratch at its op, int16 activations twice as large)
   within the RAM budget. Each solution is checked by :func:`tinyprec.mcu.budget.assignment_budget`
   (TFLM's greedy plan of the changed graph); a miss tightens the RAM bound and solves again.
4. **Trade-off curve.** Sweeping the KL bound gives candidates from all-int8 to the most int4 that fits;
   each is PTQ-quantized for real and scored on the validation split. The chosen assignment is the one
   with the least flash whose cost, its validation accuracy below the all-int8 PTQ model's, is within
   ``search_max_drop``: the search spends accuracy on bits below int8 only; the int8 quantization error
   itself is what QAT and the validation gate (``[validate] max_drop`` vs FP32, on TFLM) answer for.
   QAT then runs once, on that assignment (:func:`tinyprec.quant.stage.quantize_model`). One more point,
   the least flash without the RAM bound, shows what the budget costs (marked as not fitting).

The arena is TFLM's for the kernels the model will ship with (``cfg.arena_kernels``): the reference
kernels unpack INT4 weights into arena scratch, CMSIS-NN's read them packed. With "cmsis-nn" the int8
baseline and the chosen candidate are measured on the emulated Cortex-M (:func:`tinyprec.mcu.emulated.
mcu_arena_bytes`) when a TFLM tree and the Arm toolchain are found; otherwise the budget model's estimate
stands, and the result says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.quant.bits import PRESETS, LayerPrecision, layer_rule
from tinyprec.quant.search_milp import A16, INT8, W4, LayerSensitivity, _fit, _kl_proxy, _live_profile, solve

if TYPE_CHECKING:
    import torch

    from tinyprec.data import Dataset
    from tinyprec.recipe import QuantConfig

Progress = Callable[[str], None]
_FUSED = ("BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "Hardtanh", "Identity", "Dropout")
CURVE_POINTS = 8  # KL bounds swept between all-int8 and unconstrained


@dataclass(frozen=True)
class Candidate:
    """A point of the trade-off curve: an assignment, its estimated flash/arena and measured PTQ accuracy."""

    assignment: dict[str, str]
    kl_bound: float
    kl_proxy: float
    flash_bytes: int
    arena_bytes: int
    int4_scratch_bytes: int
    val_accuracy: float
    val_drop: float  # vs the FP32 model
    fits: bool
    measured_file_bytes: int | None = None  # set for the candidates the choice confirmed on TFLM
    measured_arena_bytes: int | None = None
    val_cost: float = 0.0  # below the all-int8 PTQ model's validation accuracy: what search_max_drop bounds


@dataclass(frozen=True)
class SearchResult:
    assignment: dict[str, LayerPrecision]
    chosen: int  # index into candidates
    candidates: tuple[Candidate, ...]
    sensitivity: tuple[LayerSensitivity, ...]
    int8_file_bytes: int
    int8_arena_bytes: int
    arena_budget: int
    max_drop: float
    fp32_val_accuracy: float
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    arena_kernels: str = "reference"
    arena_measured_on: str = "host TFLM (reference kernels)"
    int8_val_accuracy: float | None = None  # the all-int8 PTQ model: the reference of each candidate's val_cost

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["assignment"] = {k: v.name for k, v in self.assignment.items()}
        return d


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from tinyprec.quant.capture import _output_softmax_class

    return model.model if isinstance(model, _output_softmax_class()) else model


def _fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric fake quant; 4 bits with the MSE-optimal clipping of a small grid."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    amax = flat.abs().amax(1, keepdim=True).clamp_min(1e-12)
    ratios = (1.0,) if bits == 8 else tuple(np.linspace(0.5, 1.0, 11))
    best, best_err = None, None
    for r in ratios:
        scale = amax * float(r) / qmax
        q = torch.clamp(torch.round(flat / scale), -qmax, qmax) * scale
        err = ((q - flat) ** 2).sum(1, keepdim=True)
        if best is None:
            best, best_err = q, err
        else:
            better = err < best_err
            best = torch.where(better, q, best)
            best_err = torch.where(better, err, best_err)
    return best.reshape(w.shape)


def _fake_quant_act(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    import torch

    if bits == 16:
        scale = max(abs(lo), abs(hi), 1e-12) / 32767.0
        return torch.clamp(torch.round(x / scale), -32767, 32767) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zp = round(-128 - lo / scale)
    return (torch.clamp(torch.round(x / scale) + zp, -128, 127) - zp) * scale


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    import torch

    p = torch.log_softmax(p_logits.float(), -1)
    q = torch.log_softmax(q_logits.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean()) * 1e3


def _fused_outputs(model: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, str]:
    """Layer -> the module whose output the int8 graph quantizes (after folded BN / fused ReLU)."""
    import torch

    log: list[tuple[str, str, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out, _n=n: log.append((_n, type(mod).__name__, tuple(out.shape))))
             for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for layer in layers:
        hits = [i for i, (n, _, _) in enumerate(log) if n == layer]
        if not hits:
            out[layer] = layer
            continue
        i = hits[-1]
        while i + 1 < len(log) and log[i + 1][1] in _FUSED and log[i + 1][2] == log[hits[-1]][2]:
            i += 1
        out[layer] = log[i][0]
    return out


def sensitivity(model: torch.nn.Module, x: np.ndarray, layers: Mapping[str, str], *, per_channel: bool = True,
                allowed: Mapping[str, tuple[bool, bool]] | None = None) -> list[LayerSensitivity]:
    """Per-layer output KL of int8 / int4 weights and int8 output activation, one layer at a time.

    ``layers``: module path -> the TFLite op it lowers to ("CONV_2D", "DEPTHWISE_CONV_2D", ...);
    ``allowed``: module path -> whether (w4a8, a16w8) may be used there (default: the op type's TFLM rules).
    """
    import torch

    model = _unwrap(model).eval()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        ref = model(xt)
    fused = _fused_outputs(model, xt, list(layers))
    ranges: dict[str, tuple[float, float]] = {}
    mods = dict(model.named_modules())
    hooks = [mods[fused[n]].register_forward_hook(
        lambda _m, _i, out, _n=n: ranges.__setitem__(_n, (float(out.min()), float(out.max())))) for n in layers]
    with torch.no_grad():
        model(xt)
    for h in hooks:
        h.remove()
    rows = []
    for name, op in layers.items():
        module = mods[name]
        w = module.weight
        kl = {}
        for bits in (8, 4):
            saved = w.data.clone()
            with torch.no_grad():
                w.data.copy_(_fake_quant_weight(saved, bits))
                kl[bits] = _kl(ref, model(xt))
                w.data.copy_(saved)
        lo, hi = ranges[name]
        h = mods[fused[name]].register_forward_hook(lambda _m, _i, out: _fake_quant_act(out, lo, hi, 8))
        with torch.no_grad():
            kl_a8 = _kl(ref, model(xt))
        h.remove()
        channels = int(w.shape[0])
        w4_ok, a16_ok = (allowed[name] if allowed is not None and name in allowed else
                         (layer_rule(op, W4, per_channel=per_channel) is None,
                          layer_rule(op, A16, per_channel=per_channel) is None))
        rows.append(LayerSensitivity(name, op, int(w.numel()), channels, kl[8], kl[4], kl_a8, w4_ok, a16_ok))
    return rows


# ---- the search end to end -------------------------------------------------------------------------------


def search_assignment(model: torch.nn.Module, dataset: Dataset, cfg: QuantConfig, *,
                      progress: Progress | None = None) -> SearchResult:
    """Sensitivity, trade-off curve and the chosen per-layer assignment for ``model`` (see the module doc).

    The RAM budget is ``cfg.arena_budget`` bytes of TFLM arena, else ``cfg.arena_budget_ratio`` x the
    all-int8 model's measured arena; the accuracy bound ``cfg.search_max_drop`` points on the validation
    split (the training split's first samples when there is no validation split).
    """
    import torch

    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.capture import example_like, export_for_quant
    from tinyprec.quant.loops import evaluate
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.quantizer import layer_nodes, lowered_op_type, node_rule
    from tinyprec.quant.stage import ptq
    from tinyprec.runtimes.tflm import tflm_arena_report

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    example = example_like(dataset.input_shape)
    nodes = layer_nodes(export_for_quant(model, example, train=False))
    ops = {name: lowered_op_type(node) for name, node in nodes.items()}
    x_val, y_val = dataset.inputs("val"), dataset.val.y
    notes = []
    if not len(y_val):
        x_val, y_val = dataset.inputs("train")[:512], dataset.train.y[:512]
        notes.append("no validation split: scored on the first 512 training samples")
    task = dataset.task
    fp32_val = evaluate(model.eval(), x_val, y_val, task=task)

    say("search: int8 baseline (PTQ, lowered, TFLM arena)")
    int8 = {name: INT8 for name in nodes}
    program = ptq(model, dataset, cfg, assignment=int8)
    graph = lower_to_ir(program, torch.from_numpy(x_val[:2]), name="int8")
    tflite = write_tflite(graph)
    report = tflm_arena_report(tflite)
    rest = report.arena_bytes - report.head_bytes
    int8_val = evaluate(program, x_val, y_val, task=task)

    def scored(acc: float) -> tuple[float, float]:  # (drop vs FP32, cost vs all-int8 PTQ): larger is worse
        sign = -1.0 if task == "autoencoder" else 1.0
        return sign * (fp32_val - acc), sign * (int8_val - acc)

    kernels = cfg.arena_kernels
    on_target, measured_on = _arena_meter(kernels, notes)
    int8_arena = report.arena_bytes if kernels == "reference" or on_target is None else on_target(tflite)
    arena_budget = int(cfg.arena_budget if cfg.arena_budget is not None else cfg.arena_budget_ratio * int8_arena)
    shift = int8_arena - report.arena_bytes  # the budget model works on the host's figures: translate
    est_budget = arena_budget - shift

    say(f"search: sensitivity of {len(ops)} layers")
    allowed = {name: (node_rule(node, W4, per_channel=cfg.per_channel) is None,
                      node_rule(node, A16, per_channel=cfg.per_channel) is None) for name, node in nodes.items()}
    sens = sensitivity(model, x_val[:256], ops, per_channel=cfg.per_channel, allowed=allowed)
    profile = _live_profile(graph, list(ops), cfg.int4_max_scratch, kernels)
    deltas = sorted(d for d in (max(s.kl_w4 - s.kl_w8, 0.0) for s in sens if s.w4_allowed) if d > 0)
    total = sum(deltas)
    bounds = [0.0] + ([total * (0.5 ** k) for k in range(CURVE_POINTS - 1, -1, -1)] if total > 0 else []) + [math.inf]
    from tinyprec.mcu import budget

    seen: dict[tuple[str, ...], Candidate] = {}
    programs: dict[tuple[str, ...], Any] = {}
    for bound in bounds:
        found, est = _fit(sens, bound, est_budget, graph, rest, len(tflite), profile, cfg.int4_max_scratch, kernels)
        if found is None:
            continue
        key = tuple(found[s.layer].name for s in sens)
        if key in seen:
            continue
        say(f"search: candidate {len(seen) + 1}: {', '.join(f'{k}={v}' for k, v in zip(ops, key))}")
        programs[key] = ptq(model, dataset, cfg, assignment=found)
        acc = evaluate(programs[key], x_val, y_val, task=task)
        drop, cost = scored(acc)
        seen[key] = Candidate({s.layer: found[s.layer].name for s in sens}, bound, _kl_proxy(sens, found),
                              est.flash_bytes, est.arena_bytes + shift, est.int4_scratch_bytes, acc, drop,
                              est.arena_bytes <= est_budget, val_cost=cost)
    free = solve(sens, kl_bound=math.inf, head_budget=None, profile=None)  # the curve past the RAM budget
    if free is not None and tuple(free[s.layer].name for s in sens) not in seen:
        est = budget.assignment_budget(graph, free, rest_bytes=rest, file_bytes=len(tflite),
                                       int4_max_scratch=cfg.int4_max_scratch, kernels=kernels)
        acc = evaluate(ptq(model, dataset, cfg, assignment=free), x_val, y_val, task=task)
        seen[("free",)] = Candidate({s.layer: free[s.layer].name for s in sens}, math.inf, _kl_proxy(sens, free),
                                    est.flash_bytes, est.arena_bytes + shift, est.int4_scratch_bytes, acc,
                                    scored(acc)[0], est.arena_bytes <= est_budget, val_cost=scored(acc)[1])
    base = budget.assignment_budget(graph, int8, rest_bytes=rest, file_bytes=len(tflite), kernels=kernels)
    candidates = sorted(seen.values(), key=lambda c: (c.flash_bytes, c.val_cost))
    chosen = None
    for i, c in enumerate(candidates):  # least flash first; confirmed by TFLM's measured arena of the file
        if not (c.fits and c.val_cost <= cfg.search_max_drop + 1e-9):
            continue
        key = tuple(c.assignment[s.layer] for s in sens)
        split = cfg.int4_max_scratch if budget.unpacks_int4(kernels) else None
        file_bytes, arena = _measure(programs[key], x_val[:2], split, on_target)
        if arena is None:  # no emulated core for these kernels: the estimate stands
            candidates[i] = replace(c, measured_file_bytes=file_bytes)
            chosen = i
            break
        candidates[i] = replace(c, measured_file_bytes=file_bytes, measured_arena_bytes=arena,
                                fits=arena <= arena_budget)
        if arena <= arena_budget:
            chosen = i
            break
        notes.append(f"candidate {i}: the budget model said {c.arena_bytes:,} B of arena, TFLM measured {arena:,} B "
                     f"(over the budget); next candidate")
    if chosen is not None:
        assignment = {k: PRESETS[v] for k, v in candidates[chosen].assignment.items()}
    else:
        notes.append("no candidate met max_drop within the RAM budget: all int8")
        candidates.append(Candidate({k: "int8" for k in ops}, 0.0, 0.0, base.flash_bytes, base.arena_bytes + shift, 0,
                                    int8_val, scored(int8_val)[0], True, len(tflite), int8_arena))
        chosen, assignment = len(candidates) - 1, int8
    return SearchResult(assignment, chosen, tuple(candidates), tuple(sens), len(tflite), int8_arena,
                        arena_budget, float(cfg.search_max_drop), fp32_val, round(time.perf_counter() - t0, 2),
                        tuple(notes), kernels, measured_on, int8_val)


def _arena_meter(kernels: str, notes: list[str]) -> tuple[Callable[[bytes], int] | None, str]:
    """How the search measures an arena for ``kernels``: a function of the .tflite bytes (host TFLM for the
    reference kernels, the emulated Cortex-M for CMSIS-NN) or None (no emulated core: estimates only);
    and a label saying which."""
    if kernels == "reference":
        from tinyprec.runtimes.tflm import tflm_arena_bytes

        return tflm_arena_bytes, "host TFLM (reference kernels)"
    import tempfile
    from pathlib import Path

    from tinyprec.mcu.emulated import mcu_arena_bytes, options_from_env

    opts = options_from_env(None, kernels=kernels)
    if opts.tree is None:
        notes.append(f"arena for {kernels} kernels estimated, not measured ({opts.off_reason}); the `mcu` validation "
                     "runner measures it")
        return None, f"estimate ({kernels} kernels; host TFLM's plan without INT4 unpack scratch)"

    def meter(tflite: bytes) -> int:
        with tempfile.TemporaryDirectory(prefix="tinyprec-search-") as tmp:
            return mcu_arena_bytes(tflite, opts, Path(tmp), where="search candidate")

    return meter, f"emulated {opts.target} ({kernels} kernels, QEMU)"


def _measure(program: Any, x: np.ndarray, int4_max_scratch: int | None,
             on_target: Callable[[bytes], int] | None) -> tuple[int, int | None]:
    """File bytes and the measured arena (``on_target``; None without a meter: the estimate stands) of a
    converted program, lowered as export lowers it."""
    import torch

    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.split import split_int4_layers

    graph = lower_to_ir(program, torch.from_numpy(x), name="candidate")
    if int4_max_scratch is not None:
        graph = split_int4_layers(graph, int4_max_scratch)
    tflite = write_tflite(graph)
    return len(tflite), None if on_target is None else on_target(tflite)


def choose_assignment(model: torch.nn.Module, dataset: Dataset, cfg: QuantConfig, *,
                      progress: Progress | None = None) -> dict[str, LayerPrecision]:
    """The searched assignment alone (the hook :func:`tinyprec.quant.stage.layer_assignment` calls)."""
    return search_assignment(model, dataset, cfg, progress=progress).assignment
