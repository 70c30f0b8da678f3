"""Write an :class:`ir.Graph` as an integer ``.tflite`` flatbuffer for TensorFlow Lite Micro.

int8 and int16 activations, int8 and INT4 weights (INT4 packed two per byte, see :func:`pack_int4`),
int32 and int64 biases.

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

from typing import Any

import numpy as np

from tinyprec.errors import ModelFormatError, UnsupportedOpError
from tinyprec.formats.tflite_ops import OP_TABLE, TENSOR_TYPE, finish_options
from tinyprec.ir.graph import DType, Graph, Op, Tensor
from tinyprec.ir.ops import OpType
from tinyprec.ir.qparams import QParams

MAX_NAME_LEN = 32
BUFFER_ALIGNMENT = 16
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


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


def pack_int4(values: np.ndarray) -> bytes:
    """INT4 values in [-8, 7] -> bytes, two per byte in row-major order: element 2i in bits 0-3, 2i+1 in
    bits 4-7, two's complement; an odd count leaves the last high nibble 0.

    >>> pack_int4(np.array([1, -1, -8], np.int8)).hex()
    'f108'
    """
    flat = np.asarray(values, np.int8).reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def _with_conv_bias(graph: Graph) -> Graph:
    """A copy of ``graph`` where each bias-less CONV_2D / DEPTHWISE_CONV_2D gets an all-zero bias
    (int32 for int8 inputs, int64 for int16 inputs).

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
        bias_type = DType.INT64 if x.dtype is DType.INT16 else DType.INT32
        tensors[name] = Tensor(name, (channels,), bias_type, qparams, np.zeros(channels, bias_type.numpy))
        ops[ops.index(op)] = Op(op.type, (op.inputs[0], op.inputs[1], name), op.outputs, op.options,
                                name=op.name, source=op.source)
    return Graph(tensors, ops, list(graph.inputs), list(graph.outputs), name=graph.name,
                 metadata=dict(graph.metadata))


def _with_float_io(graph: Graph) -> Graph:
    """A copy of ``graph`` with a QUANTIZE after each float input and a DEQUANTIZE before each output."""
    from tinyprec.ir.ops import NoOptions

    tensors = dict(graph.tensors)
    ops = list(graph.ops)
    inputs: list[str] = []
    outputs: list[str] = []
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
        if t.dtype is DType.INT4:
            raw = pack_int4(t.data)
        else:
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
            options = finish_options(spec.options(s, op.options, op), op, g)
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
