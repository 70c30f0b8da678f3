"""The state of one lowering: the IR under construction and the values of the converted graph.

A :class:`Value` is a quantized activation; :class:`Lowering` holds the tensors and ops emitted so far and
reads the converted graph (an activation behind its dequantize, an op's output quantize node, fusing a
ReLU/ReLU6 the producer can apply). :func:`qparams_of` / :func:`act_dtype_of` read a quantize node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import Activation, DType, Op, OpType, QParams, Tensor
from tinyprec.ir.ops import NoOptions, OpOptions
from tinyprec.ir.layout import ir_shape
from tinyprec.lowering.nodes import _AXIS, QUANTIZE_OPS, aten

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


@dataclass
class Value:
    """A quantized activation as the IR holds it.

    ``torch_shape`` is the PyTorch shape with batch 1. ``order`` is set only for a 2-D value made by
    flattening a spatial map: IR position k holds the PyTorch flat element ``order[k]`` (NHWC
    storage), and the FULLY_CONNECTED that consumes it permutes its weights to match.
    """

    name: str
    qparams: QParams
    torch_shape: tuple[int, ...]
    source: str | None
    order: np.ndarray | None = None
    # A zero pad not yet emitted: (unpadded value, torch pad list) so a conv can fuse it as SAME.
    pending_pad: tuple["Value", tuple[int, ...]] | None = None
    # A 2-D value stored as an IR tensor [1, 1, 1, F] (the output of a Linear lowered to CONV_2D).
    flat4: bool = False
    # For a 2-D value made by flattening a 3-D/4-D map: that map (a Linear reads it as a full-window conv).
    flattened_from: "Value | None" = None
    dtype: DType = DType.INT8  # INT16 for a 16-bit activation (symmetric, zero point 0)


@dataclass
class Lowering:
    """State of one lowering: recorded node values, IR tensors and ops under construction."""

    gm: Any
    values: dict[Any, Any]
    name: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    qvals: dict[Any, Value] = field(default_factory=dict)  # quantize nodes -> their int8 value
    floats: dict[Any, Value] = field(default_factory=dict)  # nodes equal to a dequantized value
    consumed: set[Any] = field(default_factory=set)  # activation nodes fused into their producer
    inputs: list[str] = field(default_factory=list)
    input_layouts: list[str] = field(default_factory=list)
    linear_as_conv: bool = True
    aliases: dict[str, str] = field(default_factory=dict)  # reshaped copy -> IR tensor it reshapes

    # --- naming and sources -------------------------------------------------------------------
    def where(self, node: "fx.Node") -> str:
        """A human description of a node for error messages: module path and node name."""
        src = self.source(node)
        return f"module '{src}' (node {node.name})" if src else f"node {node.name}"

    @staticmethod
    def source(node: "fx.Node") -> str | None:
        """The PyTorch module path that produced ``node``, from torch.export's nn_module_stack."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return None
        path = list(stack.values())[-1][0]
        path = str(path).removeprefix("L['self'].").removeprefix("L__self__.")
        return path or None

    def unique(self, base: str) -> str:
        base = base or "t"
        name, k = base, 1
        while name in self.tensors:
            name, k = f"{base}_{k}", k + 1
        return name

    # --- tensors --------------------------------------------------------------------------------
    def add_const(self, base: str, data: np.ndarray, dtype: DType, qparams: QParams | None,
                  source: str | None) -> str:
        name = self.unique(base)
        arr = np.ascontiguousarray(data.astype(dtype.numpy))
        self.tensors[name] = Tensor(name, tuple(arr.shape), dtype, qparams, arr, source)
        return name

    def add_act(self, base: str, torch_shape: tuple[int, ...], qparams: QParams, source: str | None,
                order: np.ndarray | None = None, flat4: bool = False, dtype: DType = DType.INT8) -> Value:
        name = self.unique(base)
        shape = (1, 1, 1, torch_shape[1]) if flat4 else ir_shape(torch_shape)
        self.tensors[name] = Tensor(name, shape, dtype, qparams, None, source)
        return Value(name, qparams, torch_shape, source, order, flat4=flat4, dtype=dtype)

    def emit(self, op_type: OpType, inputs: tuple[str | None, ...], out: Value, options: OpOptions,
             source: str | None) -> None:
        self.ops.append(Op(op_type, inputs, (out.name,), options, name=out.name, source=source))

    # --- reading the converted graph --------------------------------------------------------------
    def val(self, arg: Any) -> Any:
        """The recorded value of a node (or the literal itself)."""
        from torch import fx

        return self.values[arg] if isinstance(arg, fx.Node) else arg

    def shape(self, node: "fx.Node") -> tuple[int, ...]:
        return tuple(int(d) for d in self.values[node].shape)

    def act(self, arg: Any, user: "fx.Node") -> Value:
        """The int8 value behind a dequantized activation argument, emitting a pending PAD."""
        value = self.act_unpadded(arg, user)
        if value.pending_pad is not None:
            materialize_pad(self, value)
        return value

    def act_unpadded(self, arg: Any, user: "fx.Node") -> Value:
        if arg not in self.floats:
            what = getattr(arg, "name", repr(arg))
            raise QuantSpecError(
                f"{self.where(user)}: input '{what}' is not a quantized activation; the quantizer must "
                "put a quantize/dequantize pair on every input of a lowered op"
            )
        return self.floats[arg]

    def tail(self, node: "fx.Node", fusable: bool) -> tuple[Activation, "fx.Node"]:
        """Follow ``node`` to the quantize node of its output: (fused activation name, quantize node)."""
        users = list(node.users)
        if fusable and len(users) == 1 and users[0].target in ACTIVATIONS:
            act_node = users[0]
            act = ACTIVATIONS[act_node.target](self, act_node)
            after = list(act_node.users)
            if len(after) == 1 and after[0].target in QUANTIZE_OPS:
                self.consumed.add(act_node)
                return act, after[0]
        if len(users) == 1 and users[0].target in QUANTIZE_OPS:
            return Activation.NONE, users[0]
        raise QuantSpecError(
            f"{self.where(node)}: the output of '{node.target}' is not quantized (expected one quantize "
            "node, optionally after a ReLU/ReLU6 the op can fuse); annotate its output in the quantizer"
        )


def qparams_of(lw: Lowering, qnode: "fx.Node") -> QParams:
    """Per-tensor qparams of a quantize_per_tensor node, checked to be int8 [-128, 127] or int16
    [-32767, 32767] with zero point 0 (see :func:`act_dtype_of`)."""
    scale = float(np.asarray(lw.val(qnode.args[1]), dtype=np.float64).reshape(-1)[0])
    zp = int(np.asarray(lw.val(qnode.args[2])).reshape(-1)[0])
    if act_dtype_of(lw, qnode) is DType.INT16 and zp != 0:
        raise QuantSpecError(f"{lw.where(qnode)}: int16 activations must be symmetric (zero point 0), got {zp}")
    return QParams.per_tensor(scale, zp)


def act_dtype_of(lw: Lowering, qnode: "fx.Node") -> DType:
    """INT8 or INT16: the activation type a quantize_per_tensor node produces."""
    qmin, qmax, dtype = (lw.val(a) for a in qnode.args[3:6])
    if (int(qmin), int(qmax)) == (-128, 127) and "int8" in str(dtype):
        return DType.INT8
    if (int(qmin), int(qmax)) == (-32767, 32767) and "int16" in str(dtype):
        return DType.INT16
    raise QuantSpecError(
        f"{lw.where(qnode)}: activations must be int8 in [-128, 127] or int16 in [-32767, 32767], got {dtype} "
        f"[{qmin}, {qmax}]"
    )


# --- activations (fused into the producing op) ------------------------------------------------------
def _relu(lw: Lowering, node: fx.Node) -> Activation:
    return Activation.RELU


def _hardtanh(lw: Lowering, node: fx.Node) -> Activation:
    from tinyprec.optable.table import clamp_bounds, fused_activation

    found = fused_activation(node)
    if found is None:
        raise UnsupportedOpError(f"clamp{clamp_bounds(node)}", lw.where(node), "only (0, 6), (-1, 1) and (0, inf) fuse")
    return Activation[found]


ACTIVATIONS: dict[Any, Callable[[Lowering, fx.Node], Activation]] = {
    aten.relu.default: _relu,
    aten.relu_.default: _relu,
    aten.hardtanh.default: _hardtanh,
    aten.hardtanh_.default: _hardtanh,
    aten.relu6.default: lambda lw, n: Activation.RELU6,
    aten.clamp.default: _hardtanh,  # fused only with bounds the quantizer fuses (optable.fused_activation)
    aten.clamp_.default: _hardtanh,
}


def materialize_pad(lw: Lowering, value: Value) -> None:
    """Emit the PAD op of a zero pad that no conv could fuse."""
    assert value.pending_pad is not None
    base, pads = value.pending_pad
    rank = len(base.torch_shape)
    ir_pads = np.zeros((4 if rank in (3, 4) else 2, 2), np.int32)
    for i in range(len(pads) // 2):
        ir_pads[_AXIS[rank][rank - 1 - i]] = (pads[2 * i], pads[2 * i + 1])
    padded = lw.add_act(value.source or "pad", value.torch_shape, value.qparams, value.source, dtype=value.dtype)
    const = lw.add_const(f"{padded.name}.paddings", ir_pads, DType.INT32, None, value.source)
    lw.emit(OpType.PAD, (base.name, const), padded, NoOptions(), value.source)
    value.name, value.pending_pad = padded.name, None
