"""The assignment step of :mod:`tinyprec.quant.search`: a mixed-integer program over (INT4 weights,
int16 activations) per layer, with scipy.optimize.milp, checked against TFLM's greedy plan."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyprec.quant.bits import PRESETS, LayerPrecision

INT8, W4, A16 = PRESETS["int8"], PRESETS["w4a8"], PRESETS["a16w8"]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer: its size and the output KL (nats per sample, x1e3) each precision alone causes."""

    layer: str
    op: str
    weights: int
    channels: int
    kl_w8: float
    kl_w4: float
    kl_a8: float
    w4_allowed: bool
    a16_allowed: bool


# ---- the assignment: a MILP over (w4, a16) per layer ------------------------------------------------------


def _live_profile(graph: Any, layers: list[str], int4_max_scratch: int | None = None, kernels: str = "reference"
                  ) -> tuple[list[int], list[dict[str, int]], list[dict[str, int]]]:
    """Per op of the int8 graph: live bytes (inputs, outputs, longer-lived tensors, fixed scratch), the extra
    bytes each layer's int16 choice adds there (tensors whose width that layer sets), and what each layer's
    INT4 choice adds at its op (the unpack scratch; split: a piece's scratch plus the pieces kept for the
    CONCATENATION; nothing with CMSIS-NN kernels, which read INT4 packed). Same lifetimes as TFLM's planner
    (:func:`tinyprec.mcu.budget.graph_buffers`)."""
    from tinyprec.mcu import budget

    buffers = budget.graph_buffers(graph)
    owner: dict[str, str] = {}
    for op in graph.ops:
        module = budget.op_module(graph, op)
        if budget._weight(graph, op) is not None and module in layers:
            for n in op.outputs:
                owner[n] = module
        elif op.inputs and op.inputs[0] in owner:
            for n in op.outputs:
                owner[n] = owner[op.inputs[0]]
    steps = len(graph.ops)
    live = [0] * (steps + 1)
    extra: list[dict[str, int]] = [{} for _ in range(steps + 1)]
    scratch: list[dict[str, int]] = [{} for _ in range(steps + 1)]
    for b in buffers:
        for t in range(b.first, b.last + 1):
            live[t] += budget.align(b.size)
            if b.name in owner:
                extra[t][owner[b.name]] = extra[t].get(owner[b.name], 0) + budget.align(b.size)
    for i, op in enumerate(graph.ops, start=1):
        module = budget.op_module(graph, op)
        w = budget._weight(graph, op)
        if w is not None and module in layers and budget.unpacks_int4(kernels):
            wc, k = int(math.prod(graph.tensors[w].shape)), _pieces(graph, op, int4_max_scratch)
            out = budget.align(budget.tensor_bytes(graph, op.outputs[0]))
            scratch[i][module] = budget.align(wc // k) + (out if k > 1 else 0)
    return live, extra, scratch


def _pieces(graph: Any, op: Any, int4_max_scratch: int | None) -> int:
    from tinyprec.mcu import budget

    wc = int(math.prod(graph.tensors[op.inputs[1]].shape))
    if int4_max_scratch is None or wc <= int4_max_scratch or op.type not in budget.SPLITTABLE:
        return 1
    return budget.pieces_for(wc, budget._channels(graph, op), int4_max_scratch)


def _split_costs(graph: Any, sens: list[LayerSensitivity], int4_max_scratch: int | None, kernels: str = "reference"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, what its INT4 choice adds to the file and to the arena's rest when it is split."""
    from tinyprec.mcu import budget

    if not budget.unpacks_int4(kernels):
        int4_max_scratch = None  # nothing to split for: no unpack scratch

    pieces = {budget.op_module(graph, op): _pieces(graph, op, int4_max_scratch) for op in graph.ops
              if budget._weight(graph, op) is not None}
    k = np.array([pieces.get(s.layer, 1) for s in sens], float)
    k[k == 1] = 0
    return budget.SPLIT_FILE_BYTES * k, budget.SPLIT_REST_BYTES * k


def solve(sens: list[LayerSensitivity], *, kl_bound: float, head_budget: int | None,
          profile: tuple[list[int], list[dict[str, int]], list[dict[str, int]]] | None,
          split: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, LayerPrecision] | None:
    """The least-flash assignment with summed KL proxy <= ``kl_bound`` and planned head (plus the rest a
    split or a QUANTIZE adds) <= ``head_budget`` (scipy.optimize.milp; None when infeasible).

    Variables per layer ``i`` (in execution order, taken as a chain): ``x`` INT4 weights, ``y`` computes in
    int16; per edge ``z_i = y_i AND y_i+1`` (layer i's output error goes away only when its consumer reads
    int16 too: otherwise a QUANTIZE back to int8 sits in front of it); per boundary ``q`` a QUANTIZE
    (int8 <-> int16 between layers, and at the model's int8 input and output).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    from tinyprec.mcu.budget import EXTRA_OP_FILE_BYTES, EXTRA_OP_REST_BYTES

    n = len(sens)
    nv = 4 * n + 1  # x[0:n], y[n:2n], z[2n:3n] (the last one unused), q[3n:4n+1]
    X, Y, Z, Q = 0, n, 2 * n, 3 * n
    idx = {s.layer: i for i, s in enumerate(sens)}
    kl_w4 = np.array([max(s.kl_w4 - s.kl_w8, 0.0) for s in sens])
    saved = np.array([s.weights - (s.weights + 1) // 2 for s in sens], float)
    split_file, split_rest = split if split is not None else (np.zeros(n), np.zeros(n))
    c = np.zeros(nv)
    c[X:X + n] = -saved + split_file + 1e-6 * kl_w4 * max(float(saved.max(initial=1.0)), 1.0)  # ties: less error
    c[Y:Y + n] = [4.0 * s.channels + 1.0 for s in sens]  # INT64 bias instead of INT32
    c[Q:Q + n + 1] = EXTRA_OP_FILE_BYTES
    rows, lo, hi = [], [], []

    def row(entries: dict[int, float], upper: float, lower: float = -np.inf) -> None:
        r = np.zeros(nv)
        for k, v in entries.items():
            r[k] += v
        rows.append(r), lo.append(lower), hi.append(upper)

    for i in range(n):
        row({X + i: 1, Y + i: 1}, 1)  # INT4 only where the layer computes in int8
        if i + 1 < n:
            row({Z + i: 1, Y + i: -1}, 0)
            row({Z + i: 1, Y + i + 1: -1}, 0)
    for i in range(n + 1):  # q_i >= |y_i - y_i-1| with int8 before the first layer and after the last
        prev, cur = (Y + i - 1 if i > 0 else None), (Y + i if i < n else None)
        for sign in (1, -1):
            entries = {Q + i: -1.0}
            if cur is not None:
                entries[cur] = entries.get(cur, 0) + sign
            if prev is not None:
                entries[prev] = entries.get(prev, 0) - sign
            row(entries, 0)
    kl = {X + i: kl_w4[i] for i in range(n)}
    kl.update({Z + i: -max(sens[i].kl_a8, 0.0) for i in range(n - 1)})
    row(kl, kl_bound)
    if head_budget is not None and profile is not None:
        live, extra, scratch = profile
        for t in range(len(live)):
            entries: dict[int, float] = {X + i: split_rest[i] for i in range(n)}
            entries.update({Q + i: float(EXTRA_OP_REST_BYTES) for i in range(n + 1)})
            for layer, size in extra[t].items():
                entries[Y + idx[layer]] = entries.get(Y + idx[layer], 0) + size
            for layer, size in scratch[t].items():
                entries[X + idx[layer]] = entries.get(X + idx[layer], 0) + size
            row(entries, head_budget - live[t])
    ub = np.ones(nv)
    ub[X:X + n] = [float(s.w4_allowed) for s in sens]
    ub[Y:Y + n] = [float(s.a16_allowed) for s in sens]
    ub[Z + n - 1] = 0 if n else 1
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(nv),
               bounds=Bounds(np.zeros(nv), ub))
    if res.status != 0 or res.x is None:
        return None
    x = np.round(res.x).astype(int)
    return {s.layer: (W4 if x[X + i] else A16 if x[Y + i] else INT8) for i, s in enumerate(sens)}


def _kl_proxy(sens: list[LayerSensitivity], assignment: Mapping[str, LayerPrecision]) -> float:
    total = 0.0
    prec = [assignment.get(s.layer, INT8) for s in sens]
    for i, s in enumerate(sens):
        total += max(s.kl_w4 - s.kl_w8, 0.0) if prec[i].weight_bits == 4 else 0.0
        if i + 1 < len(sens) and prec[i].act_bits == 16 and prec[i + 1].act_bits == 16:
            total -= max(s.kl_a8, 0.0)
    return total


def _fit(sens: list[LayerSensitivity], kl_bound: float, arena_budget: int, graph: Any, rest: int, file_bytes: int,
         profile: Any, int4_max_scratch: int | None, kernels: str = "reference"
         ) -> tuple[dict[str, LayerPrecision] | None, Any]:
    """Solve, check with TFLM's greedy plan of the changed graph, tighten the head bound until it fits."""
    from tinyprec.mcu import budget

    head_budget = arena_budget - rest
    split = _split_costs(graph, sens, int4_max_scratch, kernels)
    for _ in range(6):
        found = solve(sens, kl_bound=kl_bound, head_budget=head_budget, profile=profile, split=split)
        if found is None:
            return None, None
        est = budget.assignment_budget(graph, found, rest_bytes=rest, file_bytes=file_bytes,
                                       int4_max_scratch=int4_max_scratch, kernels=kernels)
        if est.arena_bytes <= arena_budget:
            return found, est
        head_budget -= est.arena_bytes - arena_budget
    return None, None
