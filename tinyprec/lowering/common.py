"""Helpers every lowering handler shares: arguments, constants, output values, reshapes.

Imports only :mod:`.state` and :mod:`.nodes` of this package, so handler modules import it freely and
the table (:mod:`.table`) sits above them all: no module of the package imports one above it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import DType, ElementwiseOptions, Op, OpType, QParams, ReshapeOptions
from tinyprec.ir.qparams import round_half_away
from tinyprec.ir.layout import ir_shape, storage_order
from tinyprec.lowering.nodes import _AXIS, _DQ_CONST_OPS, qd
from tinyprec.lowering.state import ACTIVATIONS, Lowering, Value, act_dtype_of, qparams_of


# --- helpers --------------------------------------------------------------------------------------------
def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _pair(v: Any, rank: int) -> tuple[int, int]:
    """Normalize a stride/padding/dilation/kernel argument to (h, w); conv1d/pool1d have h = 1 (or 0)."""
    vals = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    if rank == 3:
        return (1, vals[0]) if len(vals) else (1, 1)
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) along one dimension.

    >>> same_pads(49, 10, 2)
    (4, 5)
    >>> same_pads(32, 3, 2)
    (0, 1)
    """
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _hw(torch_shape: tuple[int, ...]) -> tuple[int, int]:
    return (torch_shape[2], torch_shape[3]) if len(torch_shape) == 4 else (1, torch_shape[2])


def _const(lw: Lowering, arg: Any, user: fx.Node, what: str) -> tuple[np.ndarray, QParams]:
    """The integer data and qparams of a constant behind a dequantize node (weights, bias)."""
    if not (isinstance(arg, fx.Node) and arg.target in _DQ_CONST_OPS):
        raise QuantSpecError(f"{lw.where(user)}: {what} is not quantized; the quantizer must quantize it")
    data = lw.val(arg.args[0])
    if not isinstance(data, torch.Tensor) or data.is_floating_point():
        raise QuantSpecError(f"{lw.where(user)}: {what} is not a constant integer tensor")
    if arg.target is qd.dequantize_per_channel.default:
        scale = lw.val(arg.args[1]).detach().float().numpy()
        zp = lw.val(arg.args[2]).detach().numpy().astype(np.int64)
        qp = QParams(scale, zp, int(arg.args[3]))
    else:
        scale = float(torch.as_tensor(lw.val(arg.args[1])).reshape(-1)[0])
        zp = int(torch.as_tensor(lw.val(arg.args[2])).reshape(-1)[0])
        qp = QParams.per_tensor(scale, zp)
    return data.detach().numpy(), qp


def weight_dtype(lw: Lowering, arg: Any, user: fx.Node) -> DType:
    """INT8 ([-127, 127]) or INT4 ([-7, 7], held unpacked in int8) from the weight's dequantize range."""
    per_channel = arg.target is qd.dequantize_per_channel.default
    qmin, qmax = (int(lw.val(a)) for a in (arg.args[4:6] if per_channel else arg.args[3:5]))
    if (qmin, qmax) == (-7, 7):
        return DType.INT4
    if (qmin, qmax) == (-127, 127):
        return DType.INT8
    raise QuantSpecError(f"{lw.where(user)}: weights must be int8 in [-127, 127] or int4 in [-7, 7], got "
                         f"[{qmin}, {qmax}]")


def _bias(lw: Lowering, arg: Any, user: fx.Node, x: Value, w_qp: QParams, src: str) -> str | None:
    """The bias: INT32 for int8 inputs, INT64 for int16 inputs (16x8; the fake-quant graph holds int32)."""
    if arg is None:
        return None
    b_type = DType.INT64 if x.dtype is DType.INT16 else DType.INT32
    if isinstance(arg, fx.Node) and arg.target in _DQ_CONST_OPS:
        data, qp = _const(lw, arg, user, "bias")
        if data.dtype != np.int32:
            raise QuantSpecError(f"{lw.where(user)}: bias must be int32, got {data.dtype}")
        return lw.add_const(f"{src}.bias", data, b_type, QParams(qp.scale, qp.zero_point, 0), src)
    # A float bias: quantize it as TFLite does (scale = input_scale * weight_scale, half away from zero).
    real = lw.val(arg).detach().double().numpy()
    scale = (np.float64(x.qparams.scale[0]) * w_qp.scale.astype(np.float64)).astype(np.float32)
    scale = np.broadcast_to(scale, real.shape)
    q = np.array([round_half_away(float(r / s)) for r, s in zip(real, scale.astype(np.float64))], np.int64)
    q = np.clip(q, -(2**31), 2**31 - 1)
    return lw.add_const(f"{src}.bias", q, b_type, QParams(scale, np.zeros(scale.shape, np.int64), 0), src)


def _name(lw: Lowering, node: fx.Node) -> str:
    return lw.source(node) or node.name


def _finish(lw: Lowering, node: fx.Node, op_type: OpType, inputs: tuple[str | None, ...], options: Any,
            qnode: fx.Node, *, qparams: QParams | None = None, order: np.ndarray | None = None,
            flat4: bool = False) -> Value:
    """Create the output tensor (shape from the quantize node), emit the op, register the value."""
    src = lw.source(node)
    qp = qparams if qparams is not None else qparams_of(lw, qnode)
    out = lw.add_act(_name(lw, node), lw.shape(qnode), qp, src, order, flat4=flat4, dtype=act_dtype_of(lw, qnode))
    lw.emit(op_type, inputs, out, options, src)
    lw.qvals[qnode] = out
    return out


def _require_shared(lw: Lowering, node: fx.Node, x: Value, qnode: fx.Node) -> QParams:
    qp = qparams_of(lw, qnode)
    if qp != x.qparams or act_dtype_of(lw, qnode) is not x.dtype:
        raise QuantSpecError(
            f"{lw.where(node)}: '{node.target}' must keep its input's scale and zero point (TFLM does not "
            "rescale it); annotate its output with a SharedQuantizationSpec"
        )
    return qp


def _no_order(lw: Lowering, node: fx.Node, *values: Value) -> None:
    if any(v.order is not None for v in values):
        raise UnsupportedOpError(
            str(node.target), lw.where(node),
            "a flattened spatial map may only feed a Linear layer (NCHW vs NHWC flatten order)",
        )


def _emit_reshape(lw: Lowering, node: fx.Node, x: Value, qnode: fx.Node) -> None:
    qp = _require_shared(lw, node, x, qnode)
    out_shape = lw.shape(qnode)
    if len(out_shape) not in _AXIS:
        raise UnsupportedOpError(f"reshape to rank {len(out_shape)}", lw.where(node), "ranks 2, 3 and 4 only")
    have = x.order if x.order is not None else storage_order(x.torch_shape)
    want = storage_order(out_shape)
    order = None
    if not np.array_equal(have, want):
        if len(out_shape) != 2:
            raise UnsupportedOpError(
                str(node.target), lw.where(node),
                "this reshape reorders NHWC data (it would need a TRANSPOSE); only flatten before a Linear",
            )
        order = have
    src = lw.source(node)
    # -1 for the batch, as TensorFlow's converter writes it, so a runtime may resize the batch.
    new_shape = (-1, *ir_shape(out_shape)[1:])
    shape_const = lw.add_const(f"{src or node.name}.shape", np.array(new_shape, np.int32), DType.INT32, None, src)
    out = _finish(lw, node, OpType.RESHAPE, (x.name, shape_const), ReshapeOptions(tuple(new_shape)), qnode,
                  qparams=qp, order=order)
    if len(out_shape) == 2 and len(x.torch_shape) in (3, 4):
        out.flattened_from = x


def reshape_value(lw: Lowering, x: Value, *, flat4: bool) -> Value:
    """A 2-D value re-expressed as an IR tensor [1, F] (flat4 False) or [1, 1, 1, F] (True), via RESHAPE."""
    out = lw.add_act(f"{x.name}.{'4d' if flat4 else '2d'}", x.torch_shape, x.qparams, x.source, x.order, flat4,
                     x.dtype)
    new_shape = (-1, *lw.tensors[out.name].shape[1:])
    const = lw.add_const(f"{out.name}.shape", np.array(new_shape, np.int32), DType.INT32, None, x.source)
    lw.emit(OpType.RESHAPE, (x.name, const), out, ReshapeOptions(tuple(new_shape)), x.source)
    lw.aliases[out.name] = lw.aliases.get(x.name, x.name)
    return out


def _standalone_activation(lw: Lowering, node: fx.Node) -> None:
    """A ReLU/ReLU6 with its own output qparams: MUL by an exact int8 1.0 with the fused activation.

    TFLite has no int8 RELU in our op set; MUL(x, 1.0) requantizes once from the input's to the output's
    qparams and clamps, which is what the fake-quant relu -> quantize computes.
    """
    x = lw.act(node.args[0], node)
    act = ACTIVATIONS[node.target](lw, node)
    _, qnode = lw.tail(node, fusable=False)
    src = lw.source(node)
    # 1.0 as int8 1 with scale 1: the requantizing multiplier is then exactly s_in / s_out, and TFLM's
    # MUL applies it with one rounding (a small int8 value would need a large right shift and round twice).
    # Of x's rank: the ONNX writer broadcasts only between tensors of one rank.
    one = lw.add_const(f"{src or node.name}.one", np.ones((1,) * len(lw.tensors[x.name].shape), x.dtype.numpy),
                       x.dtype, QParams.per_tensor(1.0, 0), src)
    _finish(lw, node, OpType.MUL, (x.name, one), ElementwiseOptions(act), qnode, order=x.order, flat4=x.flat4)


def reader_counts(ops: list[Op]) -> dict[str, int]:
    """How many op inputs read each tensor (a graph pass may fuse into an op only what nothing else reads)."""
    readers: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            if name is not None:
                readers[name] = readers.get(name, 0) + 1
    return readers
