"""The graph plumbing (quantize, dequantize, identity) and the weighted ops (conv, linear) handlers.

Each handler reads its int8 inputs (``Lowering.act``), its constant int8/int32 weights, follows
its output to the quantize node (fusing a ReLU/ReLU6 where TFLite can), and emits its IR op(s).
The handlers are registered by name in :data:`tinyprec.lowering.table.LOWERINGS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx

from tinyprec.errors import QuantSpecError, UnsupportedOpError
from tinyprec.ir import (
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    NoOptions,
    OpType,
    Padding,
    QParams,
)
from tinyprec.ir.layout import layout_of_rank
from tinyprec.lowering.common import (
    _arg,
    _bias,
    _const,
    _finish,
    _hw,
    _name,
    _pair,
    reshape_value,
    same_pads,
    weight_dtype,
)
from tinyprec.lowering.nodes import _AXIS
from tinyprec.lowering.norm import linear_sequence
from tinyprec.lowering.state import Lowering, Value, act_dtype_of, materialize_pad, qparams_of


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

            x = reshape_value(lw, x, flat4=True)
        base = x
        filt = (w[:, x.order] if x.order is not None else w).reshape(w.shape[0], 1, 1, w.shape[1])
    f_qp = QParams(w_qp.scale, w_qp.zero_point, 0 if w_qp.scale.size > 1 else None)
    w_name = lw.add_const(f"{src}.weight", filt, w_type, f_qp, lw.source(node))
    b_name = _bias(lw, _arg(node, 2, "bias", None), node, x, w_qp, src)
    options = Conv2DOptions(1, 1, Padding.VALID, 1, 1, act)
    _finish(lw, node, OpType.CONV_2D, (base.name, w_name, b_name), options, qnode, flat4=True)
