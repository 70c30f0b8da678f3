"""``inspect``: what an int8 .tflite holds and what it needs on a microcontroller.

Works on any .tflite the reader accepts (ours or TensorFlow's converter's): the op table with
shapes, qparams, parameters and MACs; constant and file bytes; the TFLM arena, measured with TFLM's
own interpreter; the MicroMutableOpResolver calls; an estimated latency on a target core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.errors import ArtifactError, TinyprecError
from tinyprec.ir import Graph, QParams
from tinyprec.mcu.boards import target_for
from tinyprec.mcu.flash import FLASH_LABEL, resources
from tinyprec.mcu.latency import LatencyEstimate, estimate_latency, parse_target
from tinyprec.mcu.macs import MAC_OPS, op_costs


@dataclass(frozen=True)
class TensorRow:
    """A graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    qparams: str


@dataclass(frozen=True)
class OpRow:
    """One row of the op table (per sample)."""

    index: int
    op: str
    name: str
    output_shape: tuple[int, ...]
    dtype: str
    qparams: str
    params: int
    macs: int
    source: str | None


@dataclass(frozen=True)
class InspectResult:
    """Everything ``tinyprec inspect`` reports. Latency and runtime code size are estimates."""

    path: str
    kind: str
    file_bytes: int
    const_bytes: int
    params: int
    macs: int
    inputs: tuple[TensorRow, ...]
    outputs: tuple[TensorRow, ...]
    ops: tuple[OpRow, ...]
    arena_bytes: int | None
    arena_head_bytes: int | None
    arena_tail_bytes: int | None
    arena_note: str
    resolver: tuple[str, ...]
    runtime_code_bytes_estimate: int
    flash_note: str
    latency: LatencyEstimate | None
    latency_note: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``--json``)."""
        data = asdict(self)
        if self.latency is not None:
            data["latency"] = {
                "target": self.latency.target,
                "ms": self.latency.ms,
                "label": self.latency.label,
                "per_op_ms": [{"name": n, "op": o, "ms": ms} for n, o, ms in self.latency.per_op_ms],
            }
        return data


def format_qparams(q: QParams | None) -> str:
    """``s=0.0235 zp=-128`` per tensor; ``per-channel[64] s=1e-3..4e-3 axis=0`` otherwise."""
    if q is None:
        return "-"
    if q.scale.size == 1 and q.axis is None:
        return f"s={float(q.scale[0]):.6g} zp={int(q.zero_point[0])}"
    lo, hi = float(np.min(q.scale)), float(np.max(q.scale))
    return f"per-channel[{q.scale.size}] s={lo:.3g}..{hi:.3g} axis={q.axis}"


def _tensor_row(graph: Graph, name: str) -> TensorRow:
    t = graph.tensors[name]
    return TensorRow(name, tuple(t.shape), t.dtype.value, format_qparams(t.qparams))


def _unique_params(graph: Any) -> int:
    """Weights and biases of the MAC ops, each constant counted once (an unrolled GRU reads one weight at
    every time step)."""
    names = {n for op in graph.ops if op.type in MAC_OPS for n in op.inputs[1:]
             if n is not None and graph.tensors[n].data is not None}
    return sum(int(graph.tensors[n].data.size) for n in names)


def inspect_tflite(data: bytes, *, target: str = "cortex-m4", where: str = "<bytes>",
                   measure_arena: bool = True, sources: dict[str, str | None] | None = None) -> InspectResult:
    """Inspect the bytes of a .tflite model. Raises ModelFormatError for unreadable files.

    ``sources`` (tensor name -> PyTorch module, as in model/ir_sources.json) names the op rows.
    """
    from tinyprec.formats.tflite_reader import read_tflite

    parsed_target = parse_target(target_for(target))
    graph = read_tflite(data, where=where)
    for name, src in (sources or {}).items():
        if name in graph.tensors and src:
            graph.tensors[name].source = src
    kind = graph.metadata.get("kind") or graph.quant_kind()
    costs = op_costs(graph)
    rows = []
    for c, op in zip(costs, graph.ops):
        out = graph.tensors[op.outputs[0]]
        rows.append(OpRow(c.index, c.op.value, c.name, tuple(out.shape), out.dtype.value,
                          format_qparams(out.qparams), c.params, c.macs, op.source or out.source))
    arena = head = tail = None
    arena_note = "measured with TFLM's interpreter (smallest arena_size that allocates, 64-bit host)"
    if measure_arena:
        from tinyprec.runtimes.tflm import tflm_arena_report_isolated

        try:
            report = tflm_arena_report_isolated(data, where=where)
            arena, head, tail = report.arena_bytes, report.head_bytes, report.tail_bytes
        except TinyprecError as err:
            arena_note = f"not measured: {err}"
    else:
        arena_note = "not measured"
    res = resources(graph, len(data), arena or 0)
    if kind == "int8":
        estimate = estimate_latency(costs, parsed_target)
        latency: LatencyEstimate | None = estimate
        latency_note = estimate.label
    else:
        latency, latency_note = None, f"no estimate: the model is {kind}, the latency model covers int8 kernels only"
    return InspectResult(
        path=where,
        kind=kind,
        file_bytes=len(data),
        const_bytes=graph.const_bytes(),
        params=_unique_params(graph),
        macs=sum(c.macs for c in costs if c.op in MAC_OPS),
        inputs=tuple(_tensor_row(graph, n) for n in graph.inputs),
        outputs=tuple(_tensor_row(graph, n) for n in graph.outputs),
        ops=tuple(rows),
        arena_bytes=arena,
        arena_head_bytes=head,
        arena_tail_bytes=tail,
        arena_note=arena_note,
        resolver=res.resolver,
        runtime_code_bytes_estimate=res.runtime_code_bytes_estimate,
        flash_note=FLASH_LABEL,
        latency=latency,
        latency_note=latency_note,
    )


def inspect_file(path: Path, *, target: str = "cortex-m4", measure_arena: bool = True) -> InspectResult:
    """:func:`inspect_tflite` on a file; a missing file raises ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file; pass the path of a .tflite model")
    sources = None
    beside = path.parent / "ir_sources.json"
    if beside.is_file():  # an export of ours: name the rows after the PyTorch modules
        import json

        try:
            loaded = json.loads(beside.read_text())
            sources = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            sources = None
    return inspect_tflite(path.read_bytes(), target=target, where=str(path), measure_arena=measure_arena,
                          sources=sources)
