"""Read any .tflite flatbuffer (ours or TensorFlow's converter's) into the IR.

The file is untrusted: every vector length, index and shape is checked against the file before it is
used, and any flatbuffer access that runs off the buffer becomes a :class:`ModelFormatError` with a
one-line reason. Nothing is allocated beyond the constant data the file really holds.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyprec.errors import ModelFormatError
from tinyprec.formats.tflite_reader_options import OPTION_READERS
from tinyprec.ir import DType, Graph, Op, OpType, QParams, Tensor

# Elements one activation tensor may have; a flipped bit in a shape must not become a huge allocation.
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_RANK = 8
_MIN_FILE_BYTES = 16

# TFLite TensorType code -> IR dtype.
_TENSOR_TYPES: dict[int, DType] = {0: DType.FLOAT32, 2: DType.INT32, 3: DType.UINT8, 4: DType.INT64,
                                   7: DType.INT16, 9: DType.INT8, 17: DType.INT4}
_TYPE_NAMES = {1: "FLOAT16", 5: "STRING", 6: "BOOL", 8: "COMPLEX64", 10: "FLOAT64", 18: "BFLOAT16"}

# TFLite BuiltinOperator code -> IR op.
_BUILTINS: dict[int, OpType] = {
    0: OpType.ADD, 1: OpType.AVERAGE_POOL_2D, 2: OpType.CONCATENATION, 3: OpType.CONV_2D,
    4: OpType.DEPTHWISE_CONV_2D, 6: OpType.DEQUANTIZE, 9: OpType.FULLY_CONNECTED, 14: OpType.LOGISTIC,
    17: OpType.MAX_POOL_2D, 18: OpType.MUL, 22: OpType.RESHAPE, 25: OpType.SOFTMAX, 28: OpType.TANH,
    34: OpType.PAD, 40: OpType.MEAN, 60: OpType.PAD, 114: OpType.QUANTIZE,
    41: OpType.SUB, 55: OpType.MAXIMUM, 57: OpType.MINIMUM, 98: OpType.LEAKY_RELU, 101: OpType.ABS,
    117: OpType.HARD_SWISH, 39: OpType.TRANSPOSE, 45: OpType.STRIDED_SLICE, 54: OpType.PRELU,
    97: OpType.RESIZE_NEAREST_NEIGHBOR, 23: OpType.RESIZE_BILINEAR, 67: OpType.TRANSPOSE_CONV,
    5: OpType.DEPTH_TO_SPACE, 126: OpType.BATCH_MATMUL,
    111: OpType.ELU, 82: OpType.REDUCE_MAX, 76: OpType.RSQRT,
}


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _builtin_name(code: int) -> str:
    ops = _schema().BuiltinOperator
    for key, value in vars(ops).items():
        if value == code and not key.startswith("_"):
            return str(key)
    return f"builtin #{code}"


class _Reader:
    """One pass over one file; ``fail`` builds errors that name the file and the place."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where
        self.size = len(data)

    def fail(self, place: str, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {place}: {what}")

    def count(self, n: int, place: str, elem_bytes: int = 4) -> int:
        """A vector length, bounded by the bytes the file could hold (keeps loops and arrays small)."""
        if n < 0 or n * elem_bytes > self.size:
            raise self.fail(place, f"vector length {n} exceeds the file size ({self.size} bytes); the file is corrupt")
        return n

    def ints(self, arr: Any, place: str) -> list[int]:
        """A scalar vector read through the schema's *AsNumpy (a view that np.frombuffer bounds-checks)."""
        if isinstance(arr, int):  # the schema returns 0 for an absent vector
            return []
        return [int(v) for v in np.asarray(arr).reshape(-1)[: self.count(int(np.asarray(arr).size), place)]]


def read_tflite(data: bytes, *, where: str = "<bytes>") -> Graph:
    """Read a .tflite flatbuffer into an :class:`~tinyprec.ir.Graph` (first subgraph).

    Tensor names are the file's names (made unique with ``#<index>`` where needed); constants carry
    their data as numpy arrays; per-channel qparams keep the file's ``quantized_dimension`` as ``axis``.
    ``graph.metadata["kind"]`` says how the model is quantized (see :meth:`Graph.quant_kind`).
    Raises :class:`ModelFormatError` with a one-line reason for a truncated, corrupt or unsupported file.
    """
    graph, _ = read_tflite_indexed(data, where=where)
    return graph


def read_tflite_indexed(data: bytes, *, where: str = "<bytes>") -> tuple[Graph, list[str]]:
    """:func:`read_tflite`, also returning the IR tensor name of each TFLite tensor index."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"{where}: expected the bytes of a .tflite file, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _MIN_FILE_BYTES:
        raise ModelFormatError(f"{where}: {len(data)} bytes is too short for a .tflite file (truncated?)")
    if data[4:8] != b"TFL3":
        raise ModelFormatError(
            f"{where}: not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected b'TFL3'); "
            "pass a .tflite file written by tinyprec or TensorFlow's converter")
    reader = _Reader(data, where)
    try:
        return _read_model(reader)
    except ModelFormatError:
        raise
    except (struct.error, ValueError, IndexError, TypeError, OverflowError, UnicodeDecodeError,
            AttributeError, KeyError, MemoryError, RecursionError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFormatError(
            f"{where}: corrupt flatbuffer ({type(err).__name__}: {reason[:120]}); "
            "the file is truncated or damaged, re-export it") from None


def _read_model(r: _Reader) -> tuple[Graph, list[str]]:
    fb = _schema()
    model = fb.Model.GetRootAs(r.data, 0)
    version = model.Version()
    if version != 3:
        raise r.fail("model", f"schema version {version} is not supported (expected 3)")
    n_sub = r.count(model.SubgraphsLength(), "subgraphs")
    if n_sub < 1:
        raise r.fail("model", "has no subgraph")
    n_codes = r.count(model.OperatorCodesLength(), "operator_codes")
    codes: list[int | str] = []
    for i in range(n_codes):
        oc = model.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == 32:  # CUSTOM
            custom = oc.CustomCode()
            codes.append(f"CUSTOM:{custom.decode('utf-8', 'replace') if custom else '?'}")
        else:
            codes.append(code)
    n_buffers = r.count(model.BuffersLength(), "buffers")
    sub = model.Subgraphs(0)
    n_tensors = r.count(sub.TensorsLength(), "subgraph 0 tensors")
    names: list[str] = []
    tensors: dict[str, Tensor] = {}
    for i in range(n_tensors):
        t = _read_tensor(r, model, sub.Tensors(i), i, n_buffers)
        if t.name in tensors or not t.name:
            t.name = f"{t.name or 'tensor'}#{i}"
        tensors[t.name] = t
        names.append(t.name)

    def tensor_ref(idx: int, place: str) -> str:
        if not 0 <= idx < n_tensors:
            raise r.fail(place, f"tensor index {idx} is out of range (the subgraph has {n_tensors} tensors)")
        return names[idx]

    inputs = [tensor_ref(i, "subgraph inputs") for i in r.ints(sub.InputsAsNumpy(), "subgraph inputs")]
    outputs = [tensor_ref(i, "subgraph outputs") for i in r.ints(sub.OutputsAsNumpy(), "subgraph outputs")]
    if not inputs or not outputs:
        raise r.fail("subgraph 0", "declares no inputs or no outputs")
    ops: list[Op] = []
    n_ops = r.count(sub.OperatorsLength(), "subgraph 0 operators")
    for i in range(n_ops):
        ops.append(_read_op(r, sub.Operators(i), i, codes, tensor_ref, tensors))
    desc = model.Description()
    sub_name = sub.Name()
    name = (sub_name or desc or b"model").decode("utf-8", "replace")
    graph = Graph(tensors=tensors, ops=ops, inputs=inputs, outputs=outputs, name=name or "model")
    graph.metadata["format"] = "tflite"
    graph.metadata["kind"] = graph.quant_kind()
    if n_sub > 1:
        graph.metadata["extra_subgraphs"] = str(n_sub - 1)
    return graph, names


def _read_tensor(r: _Reader, model: Any, t: Any, index: int, n_buffers: int) -> Tensor:
    place = f"tensor {index}"
    raw_name = t.Name()
    name = raw_name.decode("utf-8", "replace") if raw_name else ""
    place = f"tensor {index} '{name if len(name) <= 48 else name[:45] + '...'}'"
    code = int(t.Type())
    if code not in _TENSOR_TYPES:
        raise r.fail(place, f"type {_TYPE_NAMES.get(code, f'#{code}')} is not supported "
                            "(tinyprec reads float32, int4, int8, uint8, int16, int32 and int64 tensors)")
    dtype = _TENSOR_TYPES[code]
    shape = tuple(r.ints(t.ShapeAsNumpy(), place + " shape"))
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise r.fail(place, f"invalid shape {list(shape)}")
    elements = math.prod(shape)
    if elements > MAX_TENSOR_ELEMENTS:
        raise r.fail(place, f"shape {list(shape)} has {elements} elements, more than {MAX_TENSOR_ELEMENTS}")
    if t.Sparsity() is not None:
        raise r.fail(place, "sparse tensors are not supported; export the model dense")
    data = _read_buffer(r, model, int(t.Buffer()), n_buffers, place)
    array = None
    if data is not None and len(data) > 0:
        expected = (elements + 1) // 2 if dtype is DType.INT4 else elements * dtype.numpy.itemsize
        if len(data) != expected:
            raise r.fail(place, f"constant buffer holds {len(data)} bytes but shape {list(shape)} "
                                f"of {dtype.value} needs {expected}")
        if dtype is DType.INT4:
            array = unpack_int4(data, elements).reshape(shape)
        else:
            array = np.frombuffer(data, dtype=dtype.numpy.newbyteorder("<")).astype(dtype.numpy).reshape(shape)
    qparams = _read_qparams(r, t.Quantization(), shape, place)
    return Tensor(name=name, shape=shape, dtype=dtype, qparams=qparams, data=array)


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """Packed INT4 bytes -> ``count`` int8 values in [-8, 7] (element 2i in bits 0-3, 2i+1 in bits 4-7).

    >>> unpack_int4(bytes.fromhex("f108"), 3).tolist()
    [1, -1, -8]
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    nibbles = np.empty(raw.size * 2, np.uint8)
    nibbles[0::2] = raw & 0x0F
    nibbles[1::2] = raw >> 4
    return ((nibbles[:count].astype(np.int8) ^ 8) - 8).astype(np.int8)


def _read_buffer(r: _Reader, model: Any, index: int, n_buffers: int, place: str) -> bytes | None:
    if index == 0:
        return None
    if index >= n_buffers:
        raise r.fail(place, f"buffer index {index} is out of range (the file has {n_buffers} buffers)")
    buf = model.Buffers(index)
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1:  # large models keep the bytes after the flatbuffer, addressed from the file start
        if offset + size > r.size:
            raise r.fail(place, f"buffer {index} at offset {offset} with size {size} runs past the file end")
        return r.data[offset:offset + size]
    arr = buf.DataAsNumpy()
    if isinstance(arr, int):
        return None
    return bytes(np.asarray(arr, dtype=np.uint8))


def _read_qparams(r: _Reader, q: Any, shape: tuple[int, ...], place: str) -> QParams | None:
    if q is None:
        return None
    scale = q.ScaleAsNumpy()
    if isinstance(scale, int) or np.asarray(scale).size == 0:
        return None
    scale = np.asarray(scale, dtype=np.float32).copy()
    r.count(scale.size, place + " scales")
    zp_raw = q.ZeroPointAsNumpy()
    zp = np.zeros(scale.shape, np.int64) if isinstance(zp_raw, int) else np.asarray(zp_raw, np.int64).copy()
    if zp.size != scale.size:
        if zp.size == 0:
            zp = np.zeros(scale.shape, np.int64)
        else:
            raise r.fail(place, f"{scale.size} scales but {zp.size} zero points")
    if not np.all(np.isfinite(scale)) or np.any(scale < 0):
        raise r.fail(place, "quantization scale is negative, NaN or infinite")
    if np.any(np.abs(zp) > (1 << 31)):
        raise r.fail(place, "quantization zero point is out of the int32 range")
    axis: int | None = None
    if scale.size > 1:
        axis = int(q.QuantizedDimension())
        if not 0 <= axis < len(shape) or shape[axis] != scale.size:
            raise r.fail(place, f"{scale.size} per-channel scales do not match dimension {axis} of shape "
                                f"{list(shape)}")
    return QParams(scale, zp, axis)


# Inputs each op must have (before optional ones), outputs it must have.
_MIN_INPUTS = {OpType.CONV_2D: 2, OpType.DEPTHWISE_CONV_2D: 2, OpType.FULLY_CONNECTED: 2, OpType.ADD: 2,
               OpType.MUL: 2, OpType.MEAN: 2, OpType.PAD: 2, OpType.SUB: 2, OpType.MAXIMUM: 2, OpType.MINIMUM: 2,
               OpType.TRANSPOSE: 2, OpType.STRIDED_SLICE: 4, OpType.PRELU: 2,
               OpType.RESIZE_NEAREST_NEIGHBOR: 2, OpType.RESIZE_BILINEAR: 2,
               OpType.TRANSPOSE_CONV: 3, OpType.BATCH_MATMUL: 2,
               OpType.REDUCE_MAX: 2}


def _read_op(r: _Reader, op: Any, index: int, codes: list[int | str], tensor_ref: Callable[[int, str], str],
             tensors: dict[str, Tensor]) -> Op:
    place = f"operator {index}"
    code_index = int(op.OpcodeIndex())
    if not 0 <= code_index < len(codes):
        raise r.fail(place, f"opcode index {code_index} is out of range ({len(codes)} operator codes)")
    code = codes[code_index]
    if isinstance(code, str) or code not in _BUILTINS:
        shown = code if isinstance(code, str) else _builtin_name(code)
        supported = ", ".join(sorted({t.value for t in _BUILTINS.values()}))
        raise r.fail(place, f"op {shown} is not supported by tinyprec (supported: {supported}); "
                            "re-export the model without it")
    op_type = _BUILTINS[code]
    place = f"operator {index} ({op_type.value})"
    inputs: list[str | None] = [None if i < 0 else tensor_ref(i, place + " inputs")
                                for i in r.ints(op.InputsAsNumpy(), place + " inputs")]
    outputs = [tensor_ref(i, place + " outputs") for i in r.ints(op.OutputsAsNumpy(), place + " outputs")]
    if len(outputs) != 1:
        raise r.fail(place, f"has {len(outputs)} outputs, expected 1")
    if len(inputs) < _MIN_INPUTS.get(op_type, 1) or inputs[0] is None:
        raise r.fail(place, f"has too few inputs ({len(inputs)})")
    class_name, read_options, optional = OPTION_READERS[op_type]
    options_table = None
    if class_name is not None:
        expected_type = int(getattr(_schema().BuiltinOptions, class_name))
        got_type = int(op.BuiltinOptionsType())
        if got_type == expected_type:
            table = op.BuiltinOptions()
            options_table = getattr(_schema(), class_name)()
            options_table.Init(table.Bytes, table.Pos)
        elif got_type != 0 or not optional:
            raise r.fail(place, f"builtin options type #{got_type} does not match the op (expected {class_name})")
    options = read_options(r, options_table, place, inputs, tensors, outputs)
    return Op(type=op_type, inputs=tuple(inputs), outputs=tuple(outputs), options=options,
              name=outputs[0])
