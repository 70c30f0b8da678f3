"""Lower a converted PT2E graph (dequantize -> op -> quantize) to the quantized-graph IR.

The converted GraphModule (``convert_pt2e`` with ``fold_quantize=True``) holds int8 weights as constants
behind ``dequantize_per_channel`` nodes, int32 biases the same way, and every activation as a
``quantize_per_tensor -> dequantize_per_tensor`` pair. Each float op between dequantize and quantize nodes
becomes IR ops through the handler table (:mod:`tinyprec.lowering.table`), in NHWC with TFLite filter
layouts, so the TFLite file computes in integers what the fake-quant graph simulates in float.

Example (needs a converted model)::

    graph = lower_to_ir(converted, example_input, name="digits_cnn")
    tflite_bytes = write_tflite(graph)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import Graph
from tinyprec.ir.layout import layout_of_rank
from tinyprec.ir.verify import verify_quantized
from tinyprec.lowering import table as lower_table
from tinyprec.lowering.common import reshape_value
from tinyprec.lowering.constants import share_constants
from tinyprec.lowering.nodes import DEQUANTIZE_OPS
from tinyprec.lowering.attention import merge_transpose_chains
from tinyprec.lowering.select import collapse_reshapes
from tinyprec.lowering.shape import cancel_transpose_pairs
from tinyprec.lowering.state import Lowering, Value

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def _record_values(gm: "fx.GraphModule", example: "torch.Tensor") -> dict[Any, Any]:
    import torch
    from torch import fx

    values: dict[Any, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            values[n] = out
            return out

    with torch.no_grad():
        _Recorder(gm).run(example)
    return values


def lower_to_ir(converted_gm: "fx.GraphModule", example_input: "torch.Tensor", *, name: str,
                linear_as_conv: bool = True) -> Graph:
    """Lower a converted PT2E GraphModule to a verified int8 :class:`~tinyprec.ir.Graph` (NHWC).

    ``example_input`` is one batch in the model's PyTorch layout (only its first sample is used, to
    fix the shapes). Every IR tensor's ``source`` names the PyTorch module that produced it.
    Raises :class:`UnsupportedOpError` for an op with no int8 TFLite equivalent and
    :class:`QuantSpecError` for a graph that breaks the int8 spec.

    ``linear_as_conv`` (default) lowers each Linear to a CONV_2D (1x1, or full-window over the map it
    flattens), which TFLM and TensorFlow Lite compute identically; False gives FULLY_CONNECTED.
    """
    return lower_with_trace(converted_gm, example_input, name=name, linear_as_conv=linear_as_conv).graph


@dataclass(frozen=True)
class Lowered:
    """A lowered graph plus, for each int8 activation of the IR, the fx quantize node that made it."""

    graph: Graph
    quant_nodes: dict[str, str]  # IR tensor name -> fx node name of its quantize node
    orders: dict[str, np.ndarray]  # flattened IR tensors: PyTorch flat index at each IR position


def lower_with_trace(converted_gm: "fx.GraphModule", example_input: "torch.Tensor", *, name: str,
                     linear_as_conv: bool = True) -> Lowered:
    """:func:`lower_to_ir`, also returning which fx quantize node each IR activation mirrors.

    Use it with :func:`fake_quant_taps` to compare a runtime's intermediate tensors layer by layer.
    """
    import torch

    example = example_input[:1].detach().float()
    values = _record_values(converted_gm, example)
    lw = Lowering(converted_gm, values, name, linear_as_conv=linear_as_conv)
    outputs: list[Value] = []
    live = _data_dependent(converted_gm)
    for node in converted_gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "call_module"):
            continue  # inputs start at their quantize node; constants are read by consumers
        if node.op == "output":
            outputs = [_output_value(lw, arg, node) for arg in _flatten_args(node.args[0])]
            continue
        if node in lw.consumed or node not in live or not isinstance(values.get(node), torch.Tensor):
            continue  # fused activations; constants and buffer updates; shape arithmetic of dynamic shapes
        handler = lower_table.HANDLERS.get(node.target)
        if handler is None:
            raise UnsupportedOpError(str(node.target), lw.where(node), lower_table.SUPPORTED_HINT)
        handler(lw, node)
    if not outputs:
        raise QuantSpecError(f"model '{name}': the converted graph has no quantized output")
    cancel_transpose_pairs(lw, [v.name for v in outputs])  # issue 11: softmax(-1) then .transpose(1, 2)
    merge_transpose_chains(lw, [v.name for v in outputs])  # issue 11: heads split by view/transpose
    collapse_reshapes(lw, [v.name for v in outputs])  # issue 11: x[:, i] then unsqueeze / stack
    _drop_dead(lw, [v.name for v in outputs])
    lw.tensors, lw.ops = share_constants(lw.tensors, lw.ops)  # a weight every time step reads: stored once
    graph = Graph(
        tensors=lw.tensors, ops=lw.ops, inputs=lw.inputs, outputs=[v.name for v in outputs], name=name,
        metadata={
            "input_layout": ",".join(lw.input_layouts),
            "output_layout": ",".join(layout_of_rank(len(v.torch_shape)) for v in outputs),
            "producer": "tinyprec.quant.lower",
        },
    )
    verify_quantized(graph)
    quant_nodes = {v.name: q.name for q, v in lw.qvals.items() if v.name in graph.tensors}
    for copy, original in lw.aliases.items():
        if original in quant_nodes and copy in graph.tensors:
            quant_nodes[copy] = quant_nodes[original]
    orders = {v.name: v.order for v in lw.qvals.values() if v.order is not None}
    return Lowered(graph, quant_nodes, orders)


def _drop_dead(lw: Lowering, outputs: list[str]) -> None:
    """Remove ops (and then tensors) nothing uses, e.g. a flatten RESHAPE a Linear-as-conv bypassed."""
    while True:
        used = set(outputs) | {n for op in lw.ops for n in op.inputs if n is not None}
        dead = [op for op in lw.ops if not any(o in used for o in op.outputs)]
        if not dead:
            break
        lw.ops = [op for op in lw.ops if op not in dead]
    used = set(outputs) | set(lw.inputs) | {n for op in lw.ops for n in (*op.inputs, *op.outputs) if n is not None}
    lw.tensors = {k: t for k, t in lw.tensors.items() if k in used}


def _data_dependent(gm: "fx.GraphModule") -> set[Any]:
    """Nodes whose value depends on a model input (the rest are constants or buffer bookkeeping)."""
    live: set[Any] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in live for a in node.all_input_nodes):
            live.add(node)
    return live


def _flatten_args(arg: Any) -> list[Any]:
    if isinstance(arg, (tuple, list)):
        return [x for a in arg for x in _flatten_args(a)]
    return [arg]


def _output_value(lw: Lowering, arg: Any, node: "fx.Node") -> Value:
    value = lw.floats.get(arg)
    if value is None:
        raise QuantSpecError(
            f"model output '{getattr(arg, 'name', arg)}' is not a dequantized int8 tensor; the quantizer "
            "must quantize the model's output"
        )
    if value.order is not None:
        raise UnsupportedOpError(
            "flatten", lw.where(node), "a flattened spatial map cannot be a model output; add a Linear"
        )
    if value.pending_pad is not None:
        lw.act(arg, node)
    if value.flat4:
        value = reshape_value(lw, value, flat4=False)
    return value


def quantized_output(converted_gm: "fx.GraphModule", x: "torch.Tensor") -> list[np.ndarray]:
    """Run the converted model on float ``x`` and return the integers of each output's final quantize node
    (int8, or int16 for a 16-bit output).

    This is the reference the int8 runtimes must reproduce (PyTorch layout, one array per output).
    """
    import torch
    from torch import fx

    wanted: list[fx.Node] = []
    dtypes: list[Any] = []
    out_node = next(n for n in converted_gm.graph.nodes if n.op == "output")
    for arg in _flatten_args(out_node.args[0]):
        if not (isinstance(arg, fx.Node) and arg.target in DEQUANTIZE_OPS):
            raise QuantSpecError(f"model output '{arg}' is not a dequantized int8 tensor")
        wanted.append(arg.args[0])
        dtypes.append(torch.int16 if arg.args[5] is torch.int16 else torch.int8)
    got: dict[fx.Node, Any] = {}

    class _Grab(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n in wanted:
                got[n] = out
            return out

    with torch.no_grad():
        _Grab(converted_gm).run(x.float())
    return [got[n].to(d).numpy() for n, d in zip(wanted, dtypes)]


def sources_of(graph: Graph) -> dict[str, str | None]:
    """IR tensor name -> PyTorch module path (the content of ir_sources.json)."""
    return {name: t.source for name, t in graph.tensors.items()}


def fake_quant_taps(converted_gm: "fx.GraphModule", x: "torch.Tensor", lowered: Lowered) -> dict[str, np.ndarray]:
    """The int8 value of every IR activation as the converted (fake-quant) model computes it.

    Keys are IR tensor names, arrays are batch-first in the IR (NHWC) layout, so they compare
    directly with TFLM's or the emulator's taps. Flattened values keep the IR storage order.
    """
    import torch
    from torch import fx

    from tinyprec.ir.layout import to_ir_layout

    by_node: dict[str, list[str]] = {}
    for t, q in lowered.quant_nodes.items():
        by_node.setdefault(q, []).append(t)
    got: dict[str, np.ndarray] = {}

    class _Grab(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            for t in by_node.get(n.name, ()):
                got[t] = out.to(torch.int16 if lowered.graph.tensors[t].dtype.value == "int16" else torch.int8).numpy()
            return out

    with torch.no_grad():
        _Grab(converted_gm).run(x.float())
    taps: dict[str, np.ndarray] = {}
    for name, arr in got.items():
        if arr.ndim in (3, 4):
            arr = to_ir_layout(arr, layout_of_rank(arr.ndim))
        elif name in lowered.orders:
            arr = arr[:, lowered.orders[name]]
        taps[name] = arr.reshape((arr.shape[0], *lowered.graph.tensors[name].shape[1:]))
    return taps
