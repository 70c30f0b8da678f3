"""Write an :class:`ir.Graph` as an int8 ``.tflite`` flatbuffer for TensorFlow Lite Micro.

The file is built with the object API that tflite-micro ships (``schema_py_generated``) and the
``flatbuffers`` builder; nothing is packed by hand. Choices that keep the file small and TFLM-ready:

* buffer 0 is the empty sentinel; every activation points at it, every constant has its own buffer
  (identical constant bytes share one), and constant data starts on a 16-byte boundary;
* one quantization record per tensor (scale + zero point + axis, no float min/max arrays); identical
  records and identical scale / zero-point vectors are written once and referenced (a flatbuffer may
  point at one table or vector from many places);
* tensor names are the IR names when at most :data:`MAX_NAME_LEN` characters, else ``t<index>``;
  no metadata, no signature defs, no description;
* int8 input and output by default; ``float_io=True`` adds a QUANTIZE after a float32 input and a
  DEQUANTIZE before a float32 output.

The same graph always gives byte-identical output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyprec.errors import ModelFormatError, UnsupportedOpError
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
    ReshapeOptions,
    SoftmaxOptions,
)
from tinyprec.ir.qparams import QParams

MAX_NAME_LEN = 32
BUFFER_ALIGNMENT = 16
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

# TFLite schema enum values (schema.fbs); kept here so importing this module stays light.
TENSOR_TYPE: dict[DType, int] = {
    DType.FLOAT32: 0, DType.INT32: 2, DType.UINT8: 3, DType.INT64: 4, DType.INT16: 7, DType.INT8: 9,
}
PADDING_CODE: dict[Padding, int] = {Padding.SAME: 0, Padding.VALID: 1}
ACTIVATION_CODE: dict[Activation, int] = {
    Activation.NONE: 0, Activation.RELU: 1, Activation.RELU_N1_TO_1: 2, Activation.RELU6: 3,
}


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _dtype(graph: Graph, name: str | None) -> DType | None:
    return None if name is None else graph.tensors[name].dtype


# --- op versions: the rules of TensorFlow's op_version.cc for the types we write ---------------

def _v_int8_3(op: Op, g: Graph) -> int:
    return 3 if _dtype(g, op.inputs[0]) is DType.INT8 else 1


def _v_int8_2(op: Op, g: Graph) -> int:
    return 2 if _dtype(g, op.inputs[0]) is DType.INT8 else 1


def _v_depthwise(op: Op, g: Graph) -> int:
    if _dtype(g, op.inputs[0]) is DType.INT8:
        return 3
    opts = op.options
    assert isinstance(opts, DepthwiseConv2DOptions)
    return 2 if (opts.dilation_h, opts.dilation_w) != (1, 1) else 1


def _v_fully_connected(op: Op, g: Graph) -> int:
    opts = op.options
    assert isinstance(opts, FullyConnectedOptions)
    if len(op.inputs) == 2:
        return 6
    if opts.keep_num_dims:
        return 5
    return 4 if _dtype(g, op.inputs[0]) is DType.INT8 else 1


def _v_mul(op: Op, g: Graph) -> int:
    a, b, y = (g.tensors[n] for n in (op.inputs[0], op.inputs[1], op.outputs[0]))  # type: ignore[index]
    if a.qparams is not None and b.qparams is not None and y.qparams is not None:
        s1, s2, so = (float(t.qparams.scale[0]) for t in (a, b, y))  # type: ignore[union-attr]
        if s1 and s2 and so and s1 * s2 / so >= 1.0:
            return 3
    return 2 if a.dtype is DType.INT8 else 1


def _v_pad(op: Op, g: Graph) -> int:
    if len(g.tensors[op.inputs[0]].shape) > 4:  # type: ignore[index]
        return 4
    return _v_int8_2(op, g)


def _v_dequantize(op: Op, g: Graph) -> int:
    x = g.tensors[op.inputs[0]]  # type: ignore[index]
    if x.dtype is DType.INT8:
        return 5 if x.qparams is not None and x.qparams.scale.size > 1 else 2
    return 3 if x.dtype is DType.INT16 else 1


def _v_quantize(op: Op, g: Graph) -> int:
    y = g.tensors[op.outputs[0]]
    if y.qparams is not None and y.qparams.scale.size > 1:
        return 3
    return 2 if y.dtype is DType.INT16 else 1


def _v_one(op: Op, g: Graph) -> int:
    return 1


# --- builtin options -------------------------------------------------------------------------

def _o_conv(s: Any, o: Conv2DOptions, op: Op) -> Any:
    return s.Conv2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        fusedActivationFunction=ACTIVATION_CODE[o.activation],
        dilationWFactor=o.dilation_w, dilationHFactor=o.dilation_h,
    )


def _o_depthwise(s: Any, o: DepthwiseConv2DOptions, op: Op) -> Any:
    return s.DepthwiseConv2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        depthMultiplier=o.depth_multiplier, fusedActivationFunction=ACTIVATION_CODE[o.activation],
        dilationWFactor=o.dilation_w, dilationHFactor=o.dilation_h,
    )


def _o_fc(s: Any, o: FullyConnectedOptions, op: Op) -> Any:
    return s.FullyConnectedOptionsT(
        fusedActivationFunction=ACTIVATION_CODE[o.activation], keepNumDims=o.keep_num_dims
    )


def _o_add(s: Any, o: ElementwiseOptions, op: Op) -> Any:
    return s.AddOptionsT(fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_mul(s: Any, o: ElementwiseOptions, op: Op) -> Any:
    return s.MulOptionsT(fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_pool(s: Any, o: PoolOptions, op: Op) -> Any:
    return s.Pool2DOptionsT(
        padding=PADDING_CODE[o.padding], strideW=o.stride_w, strideH=o.stride_h,
        filterWidth=o.filter_w, filterHeight=o.filter_h,
        fusedActivationFunction=ACTIVATION_CODE[o.activation],
    )


def _o_mean(s: Any, o: MeanOptions, op: Op) -> Any:
    return s.ReducerOptionsT(keepDims=o.keep_dims)


def _o_reshape(s: Any, o: ReshapeOptions, op: Op) -> Any:
    # The shape travels as the second input when the IR has it; the options are the fallback.
    if len(op.inputs) >= 2 and op.inputs[1] is not None:
        return None
    return s.ReshapeOptionsT(newShape=[int(d) for d in o.new_shape])


def _o_concat(s: Any, o: ConcatenationOptions, op: Op) -> Any:
    return s.ConcatenationOptionsT(axis=o.axis, fusedActivationFunction=ACTIVATION_CODE[o.activation])


def _o_softmax(s: Any, o: SoftmaxOptions, op: Op) -> Any:
    return s.SoftmaxOptionsT(beta=float(o.beta))


def _o_none(s: Any, o: object, op: Op) -> Any:
    return None


@dataclass(frozen=True)
class _OpSpec:
    """How one IR op type is written: builtin code, options (type name in BuiltinOptions), version."""

    code: int
    options_kind: str
    options: Callable[[Any, Any, Op], Any]
    version: Callable[[Op, Graph], int]


# BuiltinOperator codes from schema.fbs.
OP_TABLE: dict[OpType, _OpSpec] = {
    OpType.CONV_2D: _OpSpec(3, "Conv2DOptions", _o_conv, _v_int8_3),
    OpType.DEPTHWISE_CONV_2D: _OpSpec(4, "DepthwiseConv2DOptions", _o_depthwise, _v_depthwise),
    OpType.FULLY_CONNECTED: _OpSpec(9, "FullyConnectedOptions", _o_fc, _v_fully_connected),
    OpType.ADD: _OpSpec(0, "AddOptions", _o_add, _v_int8_2),
    OpType.MUL: _OpSpec(18, "MulOptions", _o_mul, _v_mul),
    OpType.AVERAGE_POOL_2D: _OpSpec(1, "Pool2DOptions", _o_pool, _v_int8_2),
    OpType.MAX_POOL_2D: _OpSpec(17, "Pool2DOptions", _o_pool, _v_int8_2),
    OpType.MEAN: _OpSpec(40, "ReducerOptions", _o_mean, _v_int8_2),
    OpType.RESHAPE: _OpSpec(22, "ReshapeOptions", _o_reshape, _v_one),
    OpType.CONCATENATION: _OpSpec(2, "ConcatenationOptions", _o_concat, _v_int8_2),
    OpType.PAD: _OpSpec(34, "NONE", _o_none, _v_pad),
    OpType.SOFTMAX: _OpSpec(25, "SoftmaxOptions", _o_softmax, _v_int8_2),
    OpType.LOGISTIC: _OpSpec(14, "NONE", _o_none, _v_int8_2),
    OpType.TANH: _OpSpec(28, "NONE", _o_none, _v_int8_2),
    OpType.QUANTIZE: _OpSpec(114, "NONE", _o_none, _v_quantize),
    OpType.DEQUANTIZE: _OpSpec(6, "NONE", _o_none, _v_dequantize),
}


def _op_where(op: Op, index: int) -> str:
    src = f" ({op.source})" if op.source else ""
    return f"node {index} '{op.name or op.type.value}'{src}"


def _check(graph: Graph) -> None:
    """Reject, before anything is built, a graph the writer cannot express."""
    for i, op in enumerate(graph.ops):
        if op.type not in OP_TABLE:
            raise UnsupportedOpError(
                op.type.value, _op_where(op, i),
                f"the TFLite writer supports {', '.join(t.value for t in OP_TABLE)}",
            )
        for name in (*op.inputs, *op.outputs):
            if name is not None and name not in graph.tensors:
                raise ModelFormatError(
                    f"{_op_where(op, i)} uses tensor '{name}' that the graph does not define; "
                    "fix the lowering that built the graph"
                )
    for name in (*graph.inputs, *graph.outputs):
        if name not in graph.tensors:
            raise ModelFormatError(f"graph input/output '{name}' is not a tensor of the graph")


def _with_conv_bias(graph: Graph) -> Graph:
    """A copy of ``graph`` where each bias-less CONV_2D / DEPTHWISE_CONV_2D gets an all-zero int32 bias.

    TensorFlow Lite's int8 convolution kernels require the bias input (TFLM does not); a zero bias
    with scale input_scale * weight_scale leaves the arithmetic unchanged.
    """
    needs = [op for op in graph.ops if op.type in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D)
             and (len(op.inputs) < 3 or op.inputs[2] is None)]
    if not needs:
        return graph
    tensors = dict(graph.tensors)
    ops = list(graph.ops)
    for op in needs:
        x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]  # type: ignore[index]
        channels = w.shape[0] if op.type is OpType.CONV_2D else w.shape[3]
        qparams = None
        if x.qparams is not None and w.qparams is not None:
            scale = (x.qparams.scale.astype(np.float64) * w.qparams.scale.astype(np.float64))
            qparams = QParams(scale.astype(np.float32), np.zeros(scale.size, np.int64),
                              0 if scale.size > 1 else None)
        name = f"{w.name}_zero_bias"
        tensors[name] = Tensor(name, (channels,), DType.INT32, qparams, np.zeros(channels, np.int32))
        ops[ops.index(op)] = Op(op.type, (op.inputs[0], op.inputs[1], name), op.outputs, op.options,
                                name=op.name, source=op.source)
    return Graph(tensors, ops, list(graph.inputs), list(graph.outputs), name=graph.name,
                 metadata=dict(graph.metadata))


def _with_float_io(graph: Graph) -> Graph:
    """A copy of ``graph`` with a QUANTIZE after each float input and a DEQUANTIZE before each output."""
    from tinyprec.ir.ops import NoOptions

    tensors = dict(graph.tensors)
    ops = list(graph.ops)
    inputs, outputs = [], []
    for name in graph.inputs:
        t = graph.tensors[name]
        f = Tensor(f"{name}_float", t.shape, DType.FLOAT32, source=t.source)
        tensors[f.name] = f
        ops.insert(len(inputs), Op(OpType.QUANTIZE, (f.name,), (name,), NoOptions(), name=f"quantize_{name}"))
        inputs.append(f.name)
    for name in graph.outputs:
        t = graph.tensors[name]
        f = Tensor(f"{name}_float", t.shape, DType.FLOAT32, source=t.source)
        tensors[f.name] = f
        ops.append(Op(OpType.DEQUANTIZE, (name,), (f.name,), NoOptions(), name=f"dequantize_{name}"))
        outputs.append(f.name)
    return Graph(tensors, ops, inputs, outputs, name=graph.name, metadata=dict(graph.metadata))


class _Writer:
    """One write: tensor and buffer numbering plus the memo of shared flatbuffer objects."""

    def __init__(self, graph: Graph) -> None:
        self.s = _schema()
        self.graph = graph
        self.memo: dict[tuple[Any, ...], int] = {}
        self.tensor_index: dict[str, int] = {}
        self.buffers: list[Any] = [self.s.BufferT()]
        self.buffer_of: dict[bytes, int] = {}

    def used_tensors(self) -> list[str]:
        used: set[str] = set(self.graph.inputs) | set(self.graph.outputs)
        for op in self.graph.ops:
            used.update(n for n in (*op.inputs, *op.outputs) if n is not None)
        return [name for name in self.graph.tensors if name in used]

    def buffer_for(self, t: Tensor) -> int:
        if t.data is None:
            return 0
        raw = np.ascontiguousarray(t.data, dtype=t.dtype.numpy.newbyteorder("<")).tobytes()
        if not raw:
            return 0
        if raw not in self.buffer_of:
            self.buffer_of[raw] = len(self.buffers)
            self.buffers.append(_AlignedBuffer(raw))
        return self.buffer_of[raw]

    def tensor(self, t: Tensor, index: int) -> Any:
        name = t.name if len(t.name) <= MAX_NAME_LEN else f"t{index}"
        tt = self.s.TensorT(
            shape=np.asarray(t.shape, dtype=np.int32), type=TENSOR_TYPE[t.dtype],
            buffer=self.buffer_for(t), name=name,
        )
        if t.qparams is not None:
            tt.quantization = _SharedQuantization(self.s, t.qparams, self.memo)
        return tt

    def build(self) -> bytes:
        import flatbuffers

        s, g = self.s, self.graph
        names = self.used_tensors()
        self.tensor_index = {n: i for i, n in enumerate(names)}
        tensors = [self.tensor(g.tensors[n], i) for i, n in enumerate(names)]

        codes: dict[OpType, list[int]] = {}  # op type -> [code index, max version]
        operators = []
        for op in g.ops:
            spec = OP_TABLE[op.type]
            version = spec.version(op, g)
            entry = codes.setdefault(op.type, [len(codes), version])
            entry[1] = max(entry[1], version)
            options = spec.options(s, op.options, op)
            operators.append(s.OperatorT(
                opcodeIndex=entry[0],
                inputs=np.array([-1 if n is None else self.tensor_index[n] for n in op.inputs], np.int32),
                outputs=np.array([self.tensor_index[n] for n in op.outputs], np.int32),
                builtinOptionsType=0 if options is None else getattr(s.BuiltinOptions, spec.options_kind),
                builtinOptions=options,
            ))
        opcodes = []
        for op_type, (_, version) in codes.items():
            code = OP_TABLE[op_type].code
            # deprecated_builtin_code is an int8 field: codes past 127 store the placeholder 127.
            opcodes.append(s.OperatorCodeT(
                deprecatedBuiltinCode=min(code, 127), version=version, builtinCode=code
            ))

        subgraph = s.SubGraphT(
            tensors=tensors, operators=operators,
            inputs=np.array([self.tensor_index[n] for n in g.inputs], np.int32),
            outputs=np.array([self.tensor_index[n] for n in g.outputs], np.int32),
        )
        model = s.ModelT(version=SCHEMA_VERSION, operatorCodes=opcodes, subgraphs=[subgraph],
                         buffers=self.buffers)
        size_hint = 4096 + sum(len(b.data) + BUFFER_ALIGNMENT for b in self.buffers[1:])
        builder = flatbuffers.Builder(size_hint)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def _memo_vector(builder: Any, memo: dict[tuple[Any, ...], int], arr: np.ndarray) -> int:
    key = ("vec", arr.dtype.str, arr.tobytes())
    if key not in memo:
        memo[key] = builder.CreateNumpyVector(arr)
    return memo[key]


class _SharedQuantization:
    """A QuantizationParameters table written once per distinct (scale, zero point, axis)."""

    def __init__(self, s: Any, qp: QParams, memo: dict[tuple[Any, ...], int]) -> None:
        self.s = s
        self.scale = np.asarray(qp.scale, dtype="<f4")
        self.zero_point = np.asarray(qp.zero_point, dtype="<i8")
        self.axis = int(qp.axis or 0)
        self.memo = memo

    def Pack(self, builder: Any) -> int:  # noqa: N802 (the object API's method name)
        s = self.s
        key = ("quant", self.scale.tobytes(), self.zero_point.tobytes(), self.axis)
        if key not in self.memo:
            scale = _memo_vector(builder, self.memo, self.scale)
            zero_point = _memo_vector(builder, self.memo, self.zero_point)
            s.QuantizationParametersStart(builder)
            s.QuantizationParametersAddScale(builder, scale)
            s.QuantizationParametersAddZeroPoint(builder, zero_point)
            s.QuantizationParametersAddQuantizedDimension(builder, self.axis)
            self.memo[key] = s.QuantizationParametersEnd(builder)
        return self.memo[key]


class _AlignedBuffer:
    """A Buffer table whose data vector starts on a :data:`BUFFER_ALIGNMENT` boundary."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802
        s = _schema()
        arr = np.frombuffer(self.data, dtype=np.uint8)
        # Pad so that the vector's first element lands on the boundary (the length prefix sits
        # just before it); the builder then keeps the whole file aligned to it.
        builder.Prep(BUFFER_ALIGNMENT, arr.size)
        data = builder.CreateNumpyVector(arr)
        s.BufferStart(builder)
        s.BufferAddData(builder, data)
        return int(s.BufferEnd(builder))


def write_tflite(graph: Graph, *, float_io: bool = False) -> bytes:
    """Serialize ``graph`` as a ``.tflite`` flatbuffer that TFLM and TensorFlow Lite load.

    ``float_io=False`` (default) keeps the graph's int8 input and output; ``True`` adds QUANTIZE /
    DEQUANTIZE so the file takes and returns float32. Raises :class:`UnsupportedOpError` for an op
    the writer cannot express, before anything is built.

    >>> from tinyprec.ir import Graph
    >>> write_tflite(Graph({}, [], [], []))[4:8]
    b'TFL3'
    """
    _check(graph)
    graph = _with_conv_bias(graph)
    if float_io:
        graph = _with_float_io(graph)
    return _Writer(graph).build()
