"""Write an :class:`ir.Graph` as an int8 ONNX model in QDQ form (built with ``onnx.helper``).

Conventions of the file:

* **Input**: one float32 tensor ``input`` holding the *normalized* model input (the dataset's
  ``Preprocess.apply(raw)``) in PyTorch layout, batch dimension ``N`` symbolic: ``graph.metadata
  ["input_layout"]`` "NCHW" (default for a 4-D IR input), "NCL" (a conv1d model, IR ``[1, 1, L, C]``)
  or "NF". A QuantizeLinear with the IR input's scale / zero point follows it.
* **Output**: one float32 tensor ``output``, the DequantizeLinear of the IR output, in the layout
  ``graph.metadata["output_layout"]`` names. Its int8 value is ``round(output / scale) + zero_point``
  (exact, since it is ``scale * (q - zero_point)``).
* **Inside**: 4-D activations are NCHW (ONNX Conv's layout); an op whose meaning depends on the layout
  (RESHAPE, FULLY_CONNECTED on a 4-D input) sees the IR's NHWC order through a Transpose, so the
  arithmetic is the IR's. Every int8 activation is a QuantizeLinear -> DequantizeLinear pair with
  exactly the IR's scale and zero point; weights are int8 initializers with DequantizeLinear
  (per-axis along the output channel for per-channel weights); biases int32 initializers with
  DequantizeLinear (scale input_scale * weight_scale). The ``doc_string`` of each activation's
  QuantizeLinear and of each weight's DequantizeLinear is the IR tensor's name.
* **Low bits** (:mod:`onnx_lowbits`, opset 21): int16 activations as int16 Q/DQ pairs, INT4 weights as
  INT4 initializers with the same scales, a 16x8 layer's INT64 bias as int32.

ONNX Runtime evaluates the pairs in float (or fuses them into its own integer kernels), so its int8
outputs may differ from TFLM's by a least-significant bit where the two round differently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyprec.errors import ModelFormatError, UnsupportedOpError
from tinyprec.formats.onnx_lowbits import bias_data, boundary_shape, int4_initializer, opset_for
from tinyprec.ir.graph import DType, Graph, Op, Tensor
from tinyprec.ir.ops import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    ElementwiseOptions,
    FullyConnectedOptions,
    MeanOptions,
    OpType,
    Padding,
    PoolOptions,
    SoftmaxOptions,
)
from tinyprec.ir.qparams import QParams
from tinyprec.formats.onnx_more import MORE_EMITTERS  # noqa: I001  (issue 11's emitters)
from tinyprec.formats.onnx_shape import SHAPE_EMITTERS  # noqa: I001  (issue 11's shape ops)

PRODUCER = "tinyprec"
# IR (NHWC) axis -> ONNX (NCHW) axis, for 4-D activations.
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def _reduce_mean(b: "_Builder", x: str, base: str, axes: list[int], keep: bool) -> str:
    """ReduceMean: axes an attribute up to opset 17, an int64 input from opset 18 (int16/INT4 files: 21)."""
    if opset_for(b.graph)[0] >= 18:
        return b.node("ReduceMean", [x, b.const(f"{base}_axes", np.array(axes, np.int64))], base, keepdims=int(keep))
    return b.node("ReduceMean", [x], base, axes=axes, keepdims=int(keep))


def _where(op: Op, index: int) -> str:
    return f"node {index} '{op.name or op.type.value}'" + (f" ({op.source})" if op.source else "")


class _Builder:
    """Nodes, initializers and the float ONNX value standing for each IR tensor."""

    def __init__(self, graph: Graph) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.graph = graph
        self.nodes: list[Any] = []
        self.inits: dict[str, Any] = {}
        self.values: dict[str, str] = {}  # IR tensor name -> float ONNX value (layout: see module doc)
        self.used: set[str] = set()
        self.const_keys: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], base: str, doc: str | None = None, **attrs: Any) -> str:
        out = self.fresh(base)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=self.fresh(f"{base}/{op_type}"),
                                                doc_string=doc, **attrs))
        return out

    def const(self, base: str, arr: np.ndarray) -> str:
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self.const_keys:
            name = self.fresh(base)
            self.inits[name] = self.numpy_helper.from_array(arr, name)
            self.const_keys[key] = name
        return self.const_keys[key]

    def qparams_inputs(self, qp: QParams, zp_dtype: type, base: str, per_axis: bool) -> list[str]:
        scale: np.ndarray = qp.scale.astype(np.float32) if per_axis else np.array(qp.scale[0], np.float32)
        zp: np.ndarray = (qp.zero_point.astype(zp_dtype) if per_axis
                          else np.array(qp.zero_point[0], dtype=zp_dtype))
        return [self.const(f"{base}_scale", scale), self.const(f"{base}_zero_point", zp)]

    def quantized(self, ir_name: str, float_value: str) -> None:
        """Attach QuantizeLinear -> DequantizeLinear with the IR tensor's qparams to ``float_value``."""
        t = self.graph.tensors[ir_name]
        if t.dtype not in (DType.INT8, DType.INT16) or t.qparams is None or t.qparams.scale.size != 1:
            self.values[ir_name] = float_value
            return
        qp = self.qparams_inputs(t.qparams, t.dtype.numpy.type, "q", per_axis=False)
        q = self.node("QuantizeLinear", [float_value, *qp], f"{ir_name}_q", doc=ir_name)
        self.values[ir_name] = self.node("DequantizeLinear", [q, *qp], ir_name)

    def weight(self, t: Tensor, onnx_data: np.ndarray, axis: int) -> str:
        """An integer initializer (in ONNX layout) dequantized per-axis along ``axis`` if per-channel."""
        assert t.qparams is not None
        onnx_data = bias_data(t, onnx_data)
        zp_type = {np.dtype(np.int8): np.int8, np.dtype(np.int16): np.int16}.get(onnx_data.dtype, np.int32)
        per_axis = t.qparams.scale.size > 1
        qp = self.qparams_inputs(t.qparams, zp_type, t.name, per_axis)
        if t.dtype is DType.INT4:
            qp[1], data = self.fresh(f"{t.name}_zero_point"), self.fresh(f"{t.name}_quantized")
            self.inits[qp[1]] = int4_initializer(qp[1], np.zeros(t.qparams.scale.shape if per_axis else (), np.int8))
            self.inits[data] = int4_initializer(data, onnx_data)
        else:
            data = self.const(f"{t.name}_quantized", onnx_data)
        attrs = {"axis": axis} if per_axis else {}
        return self.node("DequantizeLinear", [data, *qp], f"{t.name}_dequantized", doc=t.name, **attrs)

    def value(self, ir_name: str | None, op: Op, index: int) -> str:
        if ir_name is None or ir_name not in self.values:
            raise ModelFormatError(f"{_where(op, index)} reads tensor '{ir_name}' before any op writes it; "
                                   "ops must be in execution order")
        return self.values[ir_name]

    def rank(self, ir_name: str) -> int:
        return len(self.graph.tensors[ir_name].shape)

    def activation(self, x: str, act: Activation, base: str) -> str:
        if act is Activation.NONE:
            return x
        if act is Activation.RELU:
            return self.node("Relu", [x], base)
        lo, hi = (0.0, 6.0) if act is Activation.RELU6 else (-1.0, 1.0)
        return self.node("Clip", [x, self.const("clip_lo", np.array(lo, np.float32)),
                                  self.const("clip_hi", np.array(hi, np.float32))], base)

    def transpose(self, x: str, perm: tuple[int, ...], base: str) -> str:
        return self.node("Transpose", [x], base, perm=list(perm))


def _same_pads(in_hw: tuple[int, int], k_hw: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], padding: Padding) -> list[int]:
    """ONNX pads [top, left, bottom, right] reproducing TFLite's SAME / VALID."""
    if padding is Padding.VALID:
        return [0, 0, 0, 0]
    before, after = [], []
    for size, k, s, d in zip(in_hw, k_hw, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


def _emit_conv(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, (Conv2DOptions, DepthwiseConv2DOptions))
    x_ir, w_ir = b.graph.tensors[op.inputs[0]], b.graph.tensors[op.inputs[1]]  # type: ignore[index]
    assert w_ir.data is not None
    if op.type is OpType.CONV_2D:
        w = np.transpose(w_ir.data, (0, 3, 1, 2))  # OHWI -> OIHW
        group = 1
    else:
        w = np.transpose(w_ir.data, (3, 0, 1, 2))  # 1HW(C*m) -> (C*m)1HW
        group = int(x_ir.shape[3])
    inputs = [b.value(op.inputs[0], op, i), b.weight(w_ir, np.ascontiguousarray(w), 0)]
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        bias = b.graph.tensors[op.inputs[2]]
        assert bias.data is not None
        inputs.append(b.weight(bias, np.asarray(bias.data, np.int32), 0))
    k = (int(w_ir.shape[1]), int(w_ir.shape[2]))
    pads = _same_pads((x_ir.shape[1], x_ir.shape[2]), k, (o.stride_h, o.stride_w),
                      (o.dilation_h, o.dilation_w), o.padding)
    y = b.node("Conv", inputs, f"{op.outputs[0]}_conv", kernel_shape=list(k), strides=[o.stride_h, o.stride_w],
               dilations=[o.dilation_h, o.dilation_w], pads=pads, group=group)
    return b.activation(y, o.activation, f"{op.outputs[0]}_act")


def _emit_fully_connected(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, FullyConnectedOptions)
    w_ir = b.graph.tensors[op.inputs[1]]  # type: ignore[index]
    assert w_ir.data is not None
    x = b.value(op.inputs[0], op, i)
    rank = b.rank(op.inputs[0])  # type: ignore[arg-type]
    if o.keep_num_dims and rank > 2:
        raise UnsupportedOpError("FULLY_CONNECTED", _where(op, i), "keep_num_dims on a tensor of rank > 2 "
                                 "has no ONNX QDQ form here; flatten before the layer")
    if rank == 4:
        x = b.transpose(x, TO_NHWC, f"{op.outputs[0]}_nhwc")
    if rank != 2:
        x = b.node("Reshape", [x, b.const("shape", np.array([-1, w_ir.shape[1]], np.int64))],
                   f"{op.outputs[0]}_flat")
    inputs = [x, b.weight(w_ir, np.asarray(w_ir.data, np.int8), 0)]
    if len(op.inputs) > 2 and op.inputs[2] is not None:
        bias = b.graph.tensors[op.inputs[2]]
        inputs.append(b.weight(bias, np.asarray(bias.data, np.int32), 0))
    y = b.node("Gemm", inputs, f"{op.outputs[0]}_gemm", transB=1)
    return b.activation(y, o.activation, f"{op.outputs[0]}_act")


def _emit_binary(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, ElementwiseOptions)
    ranks = {b.rank(n) for n in op.inputs if n is not None}
    if len(ranks) != 1:
        raise UnsupportedOpError(op.type.value, _where(op, i), "broadcasting between tensors of different "
                                 "rank is not written to ONNX; give both inputs the same rank")
    inputs = []
    for n in op.inputs:
        t = b.graph.tensors[n]  # type: ignore[index]
        if t.is_const and n not in b.values:
            _const_activation(b, t)
        inputs.append(b.value(n, op, i))
    y = b.node("Add" if op.type is OpType.ADD else "Mul", inputs, f"{op.outputs[0]}_{op.type.value.lower()}")
    return b.activation(y, o.activation, f"{op.outputs[0]}_act")


def _const_activation(b: _Builder, t: Tensor) -> None:
    """A constant operand of an elementwise op: int8 data dequantized (in ONNX layout)."""
    assert t.data is not None and t.qparams is not None
    data = np.asarray(t.data)
    if data.ndim == 4:
        data = np.transpose(data, TO_NCHW)
    b.values[t.name] = b.weight(t, np.ascontiguousarray(data.astype(t.dtype.numpy)), 1)


def _emit_pool(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, PoolOptions)
    x_ir = b.graph.tensors[op.inputs[0]]  # type: ignore[index]
    pads = _same_pads((x_ir.shape[1], x_ir.shape[2]), (o.filter_h, o.filter_w), (o.stride_h, o.stride_w),
                      (1, 1), o.padding)
    kind = "AveragePool" if op.type is OpType.AVERAGE_POOL_2D else "MaxPool"
    y = b.node(kind, [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_pool",
               kernel_shape=[o.filter_h, o.filter_w], strides=[o.stride_h, o.stride_w], pads=pads)
    return b.activation(y, o.activation, f"{op.outputs[0]}_act")


def _const_ints(b: _Builder, op: Op, i: int, pos: int) -> np.ndarray:
    name = op.inputs[pos] if len(op.inputs) > pos else None
    t = b.graph.tensors.get(name) if name else None  # type: ignore[arg-type]
    if t is None or t.data is None:
        raise UnsupportedOpError(op.type.value, _where(op, i), f"input {pos} must be a constant")
    return np.asarray(t.data, np.int64)


def _emit_mean(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, MeanOptions)
    rank = b.rank(op.inputs[0])  # type: ignore[arg-type]
    axes = sorted({int(a) % rank for a in _const_ints(b, op, i, 1).reshape(-1)})
    x = b.value(op.inputs[0], op, i)
    if rank != 4:
        return _reduce_mean(b, x, f"{op.outputs[0]}_mean", axes, o.keep_dims)
    y = _reduce_mean(b, x, f"{op.outputs[0]}_mean", sorted(NHWC_TO_NCHW_AXIS[a] for a in axes), o.keep_dims)
    if o.keep_dims:
        return y
    # The kept axes come out in NCHW order; the IR keeps them in NHWC order.
    kept_onnx = [a for a in TO_NCHW if a not in axes]
    kept_ir = [a for a in range(4) if a not in axes]
    perm = [kept_onnx.index(a) for a in kept_ir]
    return y if perm == sorted(perm) else b.transpose(y, tuple(perm), f"{op.outputs[0]}_order")


def _emit_reshape(b: _Builder, op: Op, i: int) -> str:
    x = b.value(op.inputs[0], op, i)
    if b.rank(op.inputs[0]) == 4:  # type: ignore[arg-type]
        x = b.transpose(x, TO_NHWC, f"{op.outputs[0]}_nhwc")
    shape = list(b.graph.tensors[op.outputs[0]].shape)
    if shape and shape[0] == b.graph.tensors[op.inputs[0]].shape[0] == 1:  # type: ignore[index]
        shape[0] = -1  # keep the batch dimension free
    y = b.node("Reshape", [x, b.const("shape", np.array(shape, np.int64))], f"{op.outputs[0]}_reshape")
    return b.transpose(y, TO_NCHW, f"{op.outputs[0]}_nchw") if len(shape) == 4 else y


def _emit_concat(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, ConcatenationOptions)
    rank = b.rank(op.outputs[0])
    axis = o.axis % rank
    axis = NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis
    y = b.node("Concat", [b.value(n, op, i) for n in op.inputs], f"{op.outputs[0]}_concat", axis=axis)
    return b.activation(y, o.activation, f"{op.outputs[0]}_act")


def _emit_pad(b: _Builder, op: Op, i: int) -> str:
    pads = _const_ints(b, op, i, 1).reshape(-1, 2)
    if len(pads) == 4:
        pads = pads[list(TO_NCHW)]
    onnx_pads = np.concatenate([pads[:, 0], pads[:, 1]]).astype(np.int64)
    # The pad value is the zero point, i.e. real 0.0 in the dequantized domain.
    return b.node("Pad", [b.value(op.inputs[0], op, i), b.const("pads", onnx_pads),
                          b.const("zero", np.array(0.0, np.float32))], f"{op.outputs[0]}_pad", mode="constant")


def _emit_softmax(b: _Builder, op: Op, i: int) -> str:
    o = op.options
    assert isinstance(o, SoftmaxOptions)
    x = b.value(op.inputs[0], op, i)
    if o.beta != 1.0:
        x = b.node("Mul", [x, b.const("beta", np.array(o.beta, np.float32))], f"{op.outputs[0]}_beta")
    axis = 1 if b.rank(op.inputs[0]) == 4 else -1  # type: ignore[arg-type]
    return b.node("Softmax", [x], f"{op.outputs[0]}_softmax", axis=axis)


def _unary(kind: str) -> Callable[[_Builder, Op, int], str]:
    def emit(b: _Builder, op: Op, i: int) -> str:
        return b.node(kind, [b.value(op.inputs[0], op, i)], f"{op.outputs[0]}_{kind.lower()}")

    return emit


def _emit_passthrough(b: _Builder, op: Op, i: int) -> str:
    # QUANTIZE re-quantizes with the output's qparams (added by the caller); DEQUANTIZE is the identity
    # on the dequantized value.
    return b.value(op.inputs[0], op, i)


EMITTERS: dict[OpType, Callable[[_Builder, Op, int], str]] = {
    OpType.CONV_2D: _emit_conv,
    OpType.DEPTHWISE_CONV_2D: _emit_conv,
    OpType.FULLY_CONNECTED: _emit_fully_connected,
    OpType.ADD: _emit_binary,
    OpType.MUL: _emit_binary,
    OpType.AVERAGE_POOL_2D: _emit_pool,
    OpType.MAX_POOL_2D: _emit_pool,
    OpType.MEAN: _emit_mean,
    OpType.RESHAPE: _emit_reshape,
    OpType.CONCATENATION: _emit_concat,
    OpType.PAD: _emit_pad,
    OpType.SOFTMAX: _emit_softmax,
    OpType.LOGISTIC: _unary("Sigmoid"),
    OpType.TANH: _unary("Tanh"),
    OpType.QUANTIZE: _emit_passthrough,
    OpType.DEQUANTIZE: _emit_passthrough,
    **MORE_EMITTERS,  # issue 11's ops, in their own module
    **SHAPE_EMITTERS,  # issue 11's shape ops (formats/onnx_shape.py)
}


def write_onnx_qdq(graph: Graph) -> bytes:
    """Serialize ``graph`` as an ONNX QDQ model (float32 input and output; see the module doc).

    Raises :class:`UnsupportedOpError` for an op it cannot express, before anything is returned.
    """
    import onnx
    from onnx import TensorProto, helper

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError("graph", f"model '{graph.name}'", "the ONNX writer takes one input and one output")
    for i, op in enumerate(graph.ops):
        if op.type not in EMITTERS:
            raise UnsupportedOpError(op.type.value, _where(op, i),
                                     f"the ONNX writer supports {', '.join(t.value for t in EMITTERS)}")
    b = _Builder(graph)
    x_ir, y_ir = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    in_layout = graph.metadata.get("input_layout", "NCHW")
    out_layout = graph.metadata.get("output_layout", "NCHW")
    b.used.update({"input", "output"})
    x = "input"
    if len(x_ir.shape) == 4 and in_layout == "NCL":
        x = b.node("Unsqueeze", [x, b.const("axis2", np.array([2], np.int64))], "input_nchw")
    b.quantized(x_ir.name, x)
    for i, op in enumerate(graph.ops):
        out = EMITTERS[op.type](b, op, i)
        b.quantized(op.outputs[0], out)
    if y_ir.name not in b.values:
        raise ModelFormatError(f"graph output '{y_ir.name}' is written by no op of model '{graph.name}'")
    y = b.values[y_ir.name]
    if len(y_ir.shape) == 4 and out_layout == "NCL":
        y = b.node("Squeeze", [y, b.const("axis2", np.array([2], np.int64))], "output_ncl")
    b.nodes.append(helper.make_node("Identity", [y], ["output"], name="output/Identity"))

    onnx_graph = helper.make_graph(
        b.nodes, graph.name or "model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, boundary_shape(x_ir, in_layout))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, boundary_shape(y_ir, out_layout))],
        initializer=list(b.inits.values()),
    )
    opset, ir_version = opset_for(graph)
    model = helper.make_model(onnx_graph, producer_name=PRODUCER, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version  # the IR version of the opset; onnxruntime reads it
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())
