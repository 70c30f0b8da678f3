"""Per-op lowering rules: one handler per aten op of the converted graph, keyed by op overload.

Each handler reads its int8 inputs (``Lowering.act``), its constant int8/int32 weights, follows
its output to the quantize node (fusing a ReLU/ReLU6 where TFLite can), and emits one IR op.
Adding an op means one row in :data:`HANDLERS` and one test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    ElementwiseOptions,
    FullyConnectedOptions,
    MeanOptions,
    NoOptions,
    OpType,
    Padding,
    PoolOptions,
    QParams,
    ReshapeOptions,
    SoftmaxOptions,
)
from tinyprec.ir.qparams import round_half_away
from tinyprec.quant.lower import Lowering, Value, act_dtype_of, qparams_of
from tinyprec.quant.lower_layout import ir_shape, layout_of_rank, storage_order



def _quantized_decomposed() -> Any:
    """The quantized_decomposed op namespace, registering it (torch registers it lazily) if needed."""
    if not hasattr(torch.ops.quantized_decomposed, "quantize_per_tensor"):
        import importlib
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("torch.ao.quantization.fx._decomposed")
    return torch.ops.quantized_decomposed


aten = torch.ops.aten
qd = _quantized_decomposed()

QUANTIZE_OPS = (qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor, qd.quantize_per_tensor.tensor2)
DEQUANTIZE_OPS = (
    qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor2,
)
_DQ_CONST_OPS = DEQUANTIZE_OPS + (qd.dequantize_per_channel.default,)
# PyTorch dim -> IR (NHWC) axis, by rank.
_AXIS = {4: (0, 3, 1, 2), 3: (0, 3, 2), 2: (0, 1)}


# --- activations (fused into the producing op) ------------------------------------------------------
def _relu(lw: Lowering, node: fx.Node) -> Activation:
    return Activation.RELU


def _hardtanh(lw: Lowering, node: fx.Node) -> Activation:
    from tinyprec.quant.optable import clamp_bounds, fused_activation

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


# --- quantize / dequantize / identity -------------------------------------------------------------------
def _quantize(lw: Lowering, node: fx.Node) -> None:
    if node in lw.qvals:
        return
    src = node.args[0]
    qp = qparams_of(lw, node)
    dtype = act_dtype_of(lw, node)
    if isinstance(src, fx.Node) and src.op == "placeholder":
        shape = lw.shape(src)
        if len(shape) not in _AXIS:
            raise UnsupportedOpError(f"input of rank {len(shape)}", src.name, "inputs must be NCHW, NCL or NF")
        value = lw.add_act(src.name, shape, qp, None, dtype=dtype)
        lw.inputs.append(value.name)
        lw.input_layouts.append(layout_of_rank(len(shape)))
        lw.qvals[node] = value
    elif src in lw.floats:
        x = lw.floats[src]
        if x.qparams == qp and x.dtype is dtype:
            lw.qvals[node] = x
            return
        # dequantize -> quantize with new qparams: a requantizing QUANTIZE, int8 -> int8 or between int8 and
        # int16 where the precision changes from one layer to the next (TFLM runs all four).
        if x.pending_pad is not None:
            materialize_pad(lw, x)
        src_name = lw.source(src) if isinstance(src, fx.Node) else None
        out = lw.add_act(f"{x.name}.requant", x.torch_shape, qp, src_name or x.source, x.order, x.flat4, dtype)
        lw.emit(OpType.QUANTIZE, (x.name,), out, NoOptions(), out.source)
        lw.qvals[node] = out
    else:
        raise QuantSpecError(f"{lw.where(node)}: quantize of an unlowered float value '{src}'")


def _dequantize(lw: Lowering, node: fx.Node) -> None:
    if node.args[0] in lw.qvals:
        lw.floats[node] = lw.qvals[node.args[0]]


def _identity(lw: Lowering, node: fx.Node) -> None:
    if node.args[0] in lw.floats:
        lw.floats[node] = lw.floats[node.args[0]]


def _ignore(lw: Lowering, node: fx.Node) -> None:
    """Constants behind dequantize_per_channel are read by their consumers."""


# --- weighted ops ----------------------------------------------------------------------------------------
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


def _conv(lw: Lowering, node: fx.Node) -> None:
    x_arg = node.args[0]
    rank = len(lw.shape(x_arg))
    stride = _pair(_arg(node, 3, "stride", 1), rank)
    padding_arg = _arg(node, 4, "padding", 0)
    dilation = _pair(_arg(node, 5, "dilation", 1), rank)
    groups = int(_arg(node, 6, "groups", 1))
    x = lw.act_unpadded(x_arg, node)
    src = _name(lw, node)
    w, w_qp = _const(lw, node.args[1], node, "the weight")
    if rank == 3:
        w = w[:, :, None, :]
    out_c, _, kh, kw = w.shape
    in_c = x.torch_shape[1]
    depthwise = groups > 1 and groups == in_c and w.shape[1] == 1
    if groups != 1 and not depthwise:
        raise UnsupportedOpError("grouped conv", lw.where(node), "use groups=1 or groups=in_channels")
    if isinstance(padding_arg, str):
        pads = (0, 0, 0, 0) if padding_arg == "valid" else None
    else:
        ph, pw = _pair(padding_arg, rank) if rank == 4 else (0, _pair(padding_arg, rank)[1])
        pads = (ph, ph, pw, pw)
    if pads == (0, 0, 0, 0) and x.pending_pad is not None:
        base, tp = x.pending_pad
        if len(tp) <= 4 and not any(tp[4:]):
            tp4 = tuple(tp) + (0,) * (4 - len(tp))
            cand = (tp4[2], tp4[3], tp4[0], tp4[1]) if rank == 4 else (0, 0, tp4[0], tp4[1])
            if cand != (0, 0, 0, 0) and _is_same(base.torch_shape, cand, (kh, kw), stride, dilation):
                x, pads = base, None
    if x.pending_pad is not None:
        materialize_pad(lw, x)
    if pads is None or pads == (0, 0, 0, 0):
        padding = Padding.SAME if pads is None else Padding.VALID
    elif _is_same(x.torch_shape, pads, (kh, kw), stride, dilation):
        padding = Padding.SAME
    else:
        x = _explicit_pad(lw, x, pads, src)
        padding = Padding.VALID
    act, qnode = lw.tail(node, fusable=True)
    w_type = weight_dtype(lw, node.args[1], node)
    if depthwise:
        filt = np.transpose(w, (1, 2, 3, 0))
        f_qp = QParams(w_qp.scale, w_qp.zero_point, 3 if w_qp.scale.size > 1 else None)
        options: Any = DepthwiseConv2DOptions(stride[0], stride[1], padding, out_c // in_c,
                                              dilation[0], dilation[1], act)
        op_type = OpType.DEPTHWISE_CONV_2D
    else:
        filt = np.transpose(w, (0, 2, 3, 1))
        f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
        options = Conv2DOptions(stride[0], stride[1], padding, dilation[0], dilation[1], act)
        op_type = OpType.CONV_2D
    w_name = lw.add_const(f"{src}.weight", filt, w_type, f_qp, lw.source(node))
    b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)
    _finish(lw, node, op_type, (x.name, w_name, b_name), options, qnode)


def _is_same(shape: tuple[int, ...], pads: tuple[int, int, int, int], kernel: tuple[int, int],
             stride: tuple[int, int], dilation: tuple[int, int]) -> bool:
    h, w = _hw(shape)
    return (pads[0], pads[1]) == same_pads(h, kernel[0], stride[0], dilation[0]) and (
        pads[2], pads[3]) == same_pads(w, kernel[1], stride[1], dilation[1])


def _explicit_pad(lw: Lowering, x: Value, pads: tuple[int, int, int, int], src: str) -> Value:
    if len(x.torch_shape) == 4:
        tp = (pads[2], pads[3], pads[0], pads[1])
        n, c, h, w = x.torch_shape
        shape: tuple[int, ...] = (n, c, h + pads[0] + pads[1], w + pads[2] + pads[3])
    else:
        tp = (pads[2], pads[3])
        n, c, length = x.torch_shape
        shape = (n, c, length + pads[2] + pads[3])
    value = Value("", x.qparams, shape, src, None, (x, tp), dtype=x.dtype)
    materialize_pad(lw, value)
    return value


def _linear(lw: Lowering, node: fx.Node) -> None:
    """Linear -> CONV_2D (default) or FULLY_CONNECTED.

    As CONV_2D, a Linear after a flatten reads the flattened map itself with a full-window VALID conv
    (filter OHWI = the weights in NHWC order), and any other Linear reads its input as [1, 1, 1, F] with
    a 1x1 conv. TFLM and TensorFlow Lite's reference kernels compute CONV_2D identically, while their
    FULLY_CONNECTED multipliers differ (per-tensor: float32 vs double product), which flips an output
    LSB now and then. The IR flag ``linear_as_conv`` on the lowering selects FULLY_CONNECTED instead.
    """
    x = lw.act(node.args[0], node)
    if len(x.torch_shape) == 3:
        from tinyprec.quant.lower_norm import linear_sequence

        linear_sequence(lw, node, x)  # issue 11: (N, T, F)
        return
    if len(x.torch_shape) != 2:
        raise UnsupportedOpError("linear on a tensor of rank > 3", lw.where(node), "use (N, F) or (N, T, F)")
    w, w_qp = _const(lw, node.args[1], node, "the weight")
    w_type = weight_dtype(lw, node.args[1], node)
    src = _name(lw, node)
    act, qnode = lw.tail(node, fusable=True)
    if not lw.linear_as_conv and w_type is DType.INT4 and w_qp.scale.size > 1:
        raise QuantSpecError(f"{lw.where(node)}: per-channel INT4 weights have no FULLY_CONNECTED kernel in TFLM; "
                             "lower with linear_as_conv=True (the default) or quantize with per_channel=false")
    if not lw.linear_as_conv:
        if x.flat4:
            from tinyprec.quant.lower_table import reshape_value

            x = reshape_value(lw, x, flat4=False)
        if x.order is not None:
            w = w[:, x.order]  # IR position k holds PyTorch element order[k]
        f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
        w_name = lw.add_const(f"{src}.weight", w, w_type, f_qp, lw.source(node))
        b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)
        _finish(lw, node, OpType.FULLY_CONNECTED, (x.name, w_name, b_name), FullyConnectedOptions(act), qnode)
        return
    if x.flattened_from is not None and x.flattened_from.pending_pad is None:
        base = x.flattened_from
        order = x.order if x.order is not None else np.arange(w.shape[1])
        filt = w[:, order].reshape((w.shape[0], *lw.tensors[base.name].shape[1:]))
    else:
        if not x.flat4:
            from tinyprec.quant.lower_table import reshape_value

            x = reshape_value(lw, x, flat4=True)
        base = x
        filt = (w[:, x.order] if x.order is not None else w).reshape(w.shape[0], 1, 1, w.shape[1])
    f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
    w_name = lw.add_const(f"{src}.weight", filt, w_type, f_qp, lw.source(node))
    b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)
    options = Conv2DOptions(1, 1, Padding.VALID, 1, 1, act)
    _finish(lw, node, OpType.CONV_2D, (base.name, w_name, b_name), options, qnode, flat4=True)
