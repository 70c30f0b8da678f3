"""Check a lowered model against the converted PyTorch model it came from, on the real runtimes.

The reference is the int8 the converted (fake-quant) graph produces at its final quantize node;
TFLM's interpreter and TensorFlow's TFLite interpreter run the written .tflite on the same int8
input. Used by the export tests, the benchmarks and validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.ir import Graph, QParams
from tinyprec.ir.layout import from_ir_layout, to_ir_layout

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


@dataclass(frozen=True)
class Agreement:
    """How a runtime's int8 output agrees with the converted model's (element-wise)."""

    elements: int
    exact_fraction: float  # TFLM vs the converted model
    max_abs_diff: int
    tflm_equals_tflite: bool  # TFLM and TF Lite's reference kernels give identical int8
    tflite_max_abs_diff: int = 0  # largest |TFLM - TF Lite reference|

    def within(self, min_exact: float = 0.99, max_diff: int = 1) -> bool:
        """True when at least ``min_exact`` of the elements are equal and none differs by more than ``max_diff``."""
        return self.tflm_equals_tflite and self.exact_fraction >= min_exact and self.max_abs_diff <= max_diff


def quantize_input(x: np.ndarray, qparams: QParams) -> np.ndarray:
    """Quantize a float batch as the converted graph's input quantize node does (half to even)."""
    scale = np.float32(qparams.scale[0])
    q = np.round(x.astype(np.float32) * (np.float32(1.0) / scale)) + int(qparams.zero_point[0])
    return np.clip(q, -128, 127).astype(np.int8)


def float_input_for(q: np.ndarray, qparams: QParams) -> np.ndarray:
    """Float input that the graph's input quantize maps exactly back to the int8 batch ``q``."""
    return ((q.astype(np.float32) - np.float32(qparams.zero_point[0])) * qparams.scale[0]).astype(np.float32)


def reference_output(converted_gm: "fx.GraphModule", graph: Graph, q: np.ndarray) -> np.ndarray:
    """The converted model's int8 output for the int8 input batch ``q`` (PyTorch layout)."""
    import torch

    from tinyprec.lowering.driver import quantized_output

    xf = float_input_for(q, graph.tensors[graph.inputs[0]].qparams)  # type: ignore[arg-type]
    return quantized_output(converted_gm, torch.from_numpy(xf))[0]


def compare_with_converted(converted_gm: "fx.GraphModule", graph: Graph, tflite_bytes: bytes,
                           x: np.ndarray) -> Agreement:
    """Run float batch ``x`` (PyTorch layout) through the converted model, TFLM and TF Lite; compare int8.

    The input is quantized once with the graph's input qparams so all three see the same int8.
    TF Lite runs its reference kernels: its optimized kernels round some per-channel convolutions
    differently from TFLM (seen on conv1d models), so only the reference kernels are comparable.
    """
    from tinyprec.runtimes.tflite import run_tflite
    from tinyprec.runtimes.tflm import run_tflm

    in_qp = graph.tensors[graph.inputs[0]].qparams
    assert in_qp is not None
    q = quantize_input(x, in_qp)
    ref = reference_output(converted_gm, graph, q)
    x_ir = to_ir_layout(q, graph.metadata.get("input_layout", "NF"))
    tflm = np.asarray(run_tflm(tflite_bytes, x_ir))
    tfl = np.asarray(run_tflite(tflite_bytes, x_ir, kernels="reference")).reshape(tflm.shape)
    got = from_ir_layout(tflm.reshape((tflm.shape[0], *graph.tensors[graph.outputs[0]].shape[1:])),
                         graph.metadata.get("output_layout", "NF"))
    diff = np.abs(got.astype(np.int64) - ref.reshape(got.shape).astype(np.int64))
    rt_diff = int(np.abs(tflm.astype(np.int64) - tfl.astype(np.int64)).max(initial=0))
    return Agreement(int(diff.size), float((diff == 0).mean()), int(diff.max(initial=0)), rt_diff == 0, rt_diff)


def describe(agreement: Agreement) -> dict[str, Any]:
    """The agreement as plain JSON-able data."""
    return {
        "elements": agreement.elements,
        "exact_fraction": agreement.exact_fraction,
        "max_abs_diff": agreement.max_abs_diff,
        "tflm_equals_tflite": agreement.tflm_equals_tflite,
        "tflite_max_abs_diff": agreement.tflite_max_abs_diff,
    }


@dataclass(frozen=True)
class OpAgreement:
    """One IR op fed TFLM's own inputs: how often its int8 output differs from the converted graph's."""

    tensor: str
    op: str
    source: str | None
    mismatch_fraction: float
    max_abs_diff: int


def per_op_agreement(converted_gm: "fx.GraphModule", lowered: Any, tflite_bytes: bytes,
                     x: np.ndarray) -> list[OpAgreement]:
    """Isolate each op: run the converted graph with every IR activation replaced by TFLM's value.

    ``lowered`` is a :class:`tinyprec.lowering.driver.Lowered`. The mismatch of an op is then its own
    (rounding) disagreement, not one propagated from earlier layers, which is what a lowering bug
    (wrong layout, weights or padding) would blow up.
    """
    import torch
    from torch import fx

    from tinyprec.ir.layout import layout_of_rank
    from tinyprec.runtimes.tflm import run_tflm_with_taps

    graph: Graph = lowered.graph
    in_qp = graph.tensors[graph.inputs[0]].qparams
    assert in_qp is not None
    q = quantize_input(x, in_qp)
    taps = run_tflm_with_taps(tflite_bytes, to_ir_layout(q, graph.metadata.get("input_layout", "NF")))
    by_node: dict[str, str] = {}
    for name, qnode in lowered.quant_nodes.items():
        if name in taps and name not in graph.inputs:
            by_node.setdefault(qnode, name)
    found: dict[str, tuple[float, int]] = {}

    class _Inject(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            name = by_node.get(n.name)
            if name is None:
                return out
            ir = taps[name].reshape((q.shape[0], *graph.tensors[name].shape[1:]))
            mine = out.to(torch.int8).numpy()
            if mine.ndim in (3, 4):
                theirs = from_ir_layout(ir, layout_of_rank(mine.ndim))
            elif name in lowered.orders:
                theirs = np.empty_like(mine)
                theirs[:, lowered.orders[name]] = ir.reshape(mine.shape)
            else:
                theirs = ir.reshape(mine.shape)
            diff = np.abs(mine.astype(np.int64) - theirs.astype(np.int64))
            found[name] = (float((diff != 0).mean()), int(diff.max(initial=0)))
            return torch.from_numpy(theirs.astype(np.float32)).to(out.dtype)

    with torch.no_grad():
        _Inject(converted_gm).run(torch.from_numpy(float_input_for(q, in_qp)))
    result = []
    for op in graph.ops:
        name = op.outputs[0]
        if name in found:
            frac, worst = found[name]
            result.append(OpAgreement(name, op.type.value, op.source, frac, worst))
    return result
