"""The firmware bundle: everything a TFLM application needs to run the exported model.

``write_bundle`` writes, into ``out_dir`` (a run's ``firmware/`` folder):

=================  ===============  ==========================================================
file               role             content
=================  ===============  ==========================================================
model_data.h       c_header         ``alignas(16) extern const unsigned char g_model_data[]``
model_data.cc      c_source         the .tflite bytes and ``g_model_data_len``
model_settings.h   settings_header  I/O shape, type, scale, zero point; class labels; the
                                    preprocessing raw -> normalized -> int8; kTensorArenaSize
op_resolver.h      resolver_header  ``RegisterModelOps``: a MicroMutableOpResolver with exactly
                                    the builtin ops of the .tflite
golden_vectors.h   golden_header    a few inputs and the outputs TFLM gives for them
=================  ===============  ==========================================================

``kTensorArenaSize`` is the smallest arena with which TFLM's interpreter allocates the model
(measured on the host and passed in) plus ``arena_margin_bytes`` (default 1024), rounded up to 16.
The margin covers what the host measurement does not: up to 15 bytes lost aligning the arena start,
allocations a firmware adds (profiler, extra interpreter instances' bookkeeping) and differences
between TFLM versions. The host is 64-bit; a 32-bit MCU needs slightly less, so the sum is safe.

All texts are built first and written afterwards, each file atomically; bad input leaves nothing.
Every header compiles with ``g++ -std=c++17 -Wall -Wextra -Werror`` (op_resolver.h needs TFLM's
headers on the include path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tinyprec._io import atomic_write_text
from tinyprec.errors import DataError, UnsupportedOpError
from tinyprec.formats.c_array import c_header, c_source, guard_for
from tinyprec.ir.graph import Graph
from tinyprec.ir.ops import OpType

DEFAULT_ARENA_MARGIN = 1024
_EMPTY_LABEL = '""'  # C++ has no zero-length arrays
ARRAY_NAME = "g_model_data"

FILES: dict[str, str] = {
    "c_header": "model_data.h",
    "c_source": "model_data.cc",
    "settings_header": "model_settings.h",
    "resolver_header": "op_resolver.h",
    "golden_header": "golden_vectors.h",
}

# MicroMutableOpResolver method registering each op (tensorflow/lite/micro/micro_mutable_op_resolver.h).
RESOLVER_METHOD: dict[OpType, str] = {
    OpType.CONV_2D: "AddConv2D",
    OpType.DEPTHWISE_CONV_2D: "AddDepthwiseConv2D",
    OpType.FULLY_CONNECTED: "AddFullyConnected",
    OpType.ADD: "AddAdd",
    OpType.MUL: "AddMul",
    OpType.AVERAGE_POOL_2D: "AddAveragePool2D",
    OpType.MAX_POOL_2D: "AddMaxPool2D",
    OpType.MEAN: "AddMean",
    OpType.RESHAPE: "AddReshape",
    OpType.CONCATENATION: "AddConcatenation",
    OpType.PAD: "AddPad",
    OpType.SOFTMAX: "AddSoftmax",
    OpType.LOGISTIC: "AddLogistic",
    OpType.TANH: "AddTanh",
    OpType.QUANTIZE: "AddQuantize",
    OpType.DEQUANTIZE: "AddDequantize",
    OpType.HARD_SWISH: "AddHardSwish",
    OpType.LEAKY_RELU: "AddLeakyRelu",
    OpType.SUB: "AddSub",
    OpType.MAXIMUM: "AddMaximum",
    OpType.MINIMUM: "AddMinimum",
    OpType.ABS: "AddAbs",
    OpType.TRANSPOSE: "AddTranspose",
    OpType.STRIDED_SLICE: "AddStridedSlice",
    OpType.PRELU: "AddPrelu",
    OpType.RESIZE_NEAREST_NEIGHBOR: "AddResizeNearestNeighbor",
    OpType.RESIZE_BILINEAR: "AddResizeBilinear",
    OpType.TRANSPOSE_CONV: "AddTransposeConv",
    OpType.DEPTH_TO_SPACE: "AddDepthToSpace",
    OpType.BATCH_MATMUL: "AddBatchMatMul",
    OpType.ELU: "AddElu",
    OpType.REDUCE_MAX: "AddReduceMax",
    OpType.RSQRT: "AddRsqrt",
}

_C_TYPE = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
           np.dtype(np.float32): "float"}
# TFLite TensorType code -> numpy dtype, for the file's input/output tensors.
_TFLITE_TYPE: dict[int, np.dtype] = {0: np.dtype(np.float32), 3: np.dtype(np.uint8), 7: np.dtype(np.int16), 9: np.dtype(np.int8)}


class PreprocessLike(Protocol):
    """What the bundle needs of the dataset's preprocessing: ``normalized = (raw - mean) / std``."""

    mean: float | Sequence[float]
    std: float | Sequence[float]


def _f32(x: float) -> str:
    v = np.float32(x)
    if not np.isfinite(v):
        raise DataError(f"cannot write the non-finite value {x} into a C header; check the model's qparams")
    return np.format_float_scientific(v, unique=True) + "f"


def _ints(values: Sequence[int] | np.ndarray) -> str:
    return ", ".join(str(int(v)) for v in values)


def _file_facts(tflite_bytes: bytes) -> tuple[list[OpType], np.dtype, np.dtype]:
    """The op types (first-use order) and the input/output element types the .tflite declares."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    from tinyprec.formats.tflite_writer import OP_TABLE

    by_code = {spec.code: op_type for op_type, spec in OP_TABLE.items()}
    model = s.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    sub = model.subgraphs[0]
    ops: list[OpType] = []
    for op in sub.operators or []:
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code not in by_code:
            raise UnsupportedOpError(str(code), "the .tflite given to the firmware bundle",
                                     f"the bundle registers only {', '.join(t.value for t in RESOLVER_METHOD)}")
        if by_code[code] not in ops:
            ops.append(by_code[code])
    if len(sub.inputs) != 1 or len(sub.outputs) != 1:
        raise DataError("the firmware bundle supports models with one input and one output; "
                        f"this one has {len(sub.inputs)} and {len(sub.outputs)}")
    types = [sub.tensors[i].type for i in (sub.inputs[0], sub.outputs[0])]
    if any(t not in _TFLITE_TYPE for t in types):
        raise DataError(f"model input/output tensor types {types} are not int8, uint8, int16 or float32")
    return ops, _TFLITE_TYPE[types[0]], _TFLITE_TYPE[types[1]]


def _per_channel(values: float | Sequence[float], channels: int, what: str) -> list[float]:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.size == 1:
        return [float(arr[0])]
    if arr.size != channels:
        raise DataError(f"preprocessing {what} has {arr.size} values; give one or one per input channel "
                        f"({channels}, the last axis of the NHWC input)")
    return [float(v) for v in arr]


def settings_header(graph: Graph, *, input_type: np.dtype, output_type: np.dtype, arena_bytes: int,
                    arena_margin_bytes: int, preprocess: PreprocessLike | None,
                    class_labels: Sequence[str]) -> str:
    """model_settings.h: shapes, types, qparams, labels, preprocessing and the arena size."""
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    if x.qparams is None or y.qparams is None:
        raise DataError("the model's input and output tensors need quantization parameters for the bundle")
    channels = int(x.shape[-1])
    mean = _per_channel(preprocess.mean if preprocess else 0.0, channels, "mean")
    std = _per_channel(preprocess.std if preprocess else 1.0, channels, "std")
    if len(mean) != len(std):
        mean, std = mean * channels if len(mean) == 1 else mean, std * channels if len(std) == 1 else std
    if any(s == 0.0 for s in std):
        raise DataError("preprocessing std contains 0; a zero std cannot normalize the input")
    arena = -(-(int(arena_bytes) + int(arena_margin_bytes)) // 16) * 16
    guard = guard_for(FILES["settings_header"])
    labels = ", ".join('"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"' for label in class_labels)
    in_c, out_c = _C_TYPE[np.dtype(input_type)], _C_TYPE[np.dtype(output_type)]
    lines = [
        f"// Generated by tinyprec for model '{graph.name}'. Input layout is NHWC (channels last).",
        f"#ifndef {guard}", f"#define {guard}", "", "#include <cmath>", "#include <cstdint>", "",
        f"using ModelInputType = {in_c};  // the .tflite's input tensor type",
        f"using ModelOutputType = {out_c};  // the .tflite's output tensor type",
        f"constexpr bool kInputIsQuantized = {'true' if in_c != 'float' else 'false'};",
        "",
        f"constexpr int kInputDims = {len(x.shape)};",
        f"constexpr int kInputShape[kInputDims] = {{{_ints(x.shape)}}};",
        f"constexpr int kInputElements = {int(np.prod(x.shape))};",
        f"constexpr float kInputScale = {_f32(x.qparams.scale[0])};",
        f"constexpr int kInputZeroPoint = {int(x.qparams.zero_point[0])};",
        f"constexpr int kOutputDims = {len(y.shape)};",
        f"constexpr int kOutputShape[kOutputDims] = {{{_ints(y.shape)}}};",
        f"constexpr int kOutputElements = {int(np.prod(y.shape))};",
        f"constexpr float kOutputScale = {_f32(y.qparams.scale[0])};",
        f"constexpr int kOutputZeroPoint = {int(y.qparams.zero_point[0])};",
        "",
        f"constexpr int kCategoryCount = {len(class_labels)};",
        "// One name per output class (a single empty name when the model has no class labels).",
        f"constexpr const char* kCategoryLabels[{max(len(class_labels), 1)}] = {{{labels or _EMPTY_LABEL}}};",
    ]
    lines += [
        "",
        f"// Smallest arena TFLM allocates this model with, measured on the host ({int(arena_bytes)} bytes),",
        f"// plus a margin of {int(arena_margin_bytes)} bytes, rounded up to 16 (see tinyprec.formats.firmware).",
        f"constexpr int kArenaMeasuredBytes = {int(arena_bytes)};",
        f"constexpr int kTensorArenaSize = {arena};",
        "",
        "// Preprocessing, raw sensor value -> normalized -> int8 input:",
        "//   q = clamp(round(((raw - mean) / std) / kInputScale) + kInputZeroPoint, -128, 127)",
        "// round() goes half away from zero, as TFLite's QUANTIZE. mean/std: one value, or one per channel.",
        f"constexpr int kNormChannels = {len(mean)};",
        f"constexpr float kInputMean[kNormChannels] = {{{', '.join(_f32(v) for v in mean)}}};",
        f"constexpr float kInputStd[kNormChannels] = {{{', '.join(_f32(v) for v in std)}}};",
        "",
        "inline float NormalizeInput(float raw, int channel) {",
        "  const int c = kNormChannels == 1 ? 0 : channel;",
        "  return (raw - kInputMean[c]) / kInputStd[c];",
        "}",
        "",
        "inline int8_t QuantizeInput(float raw, int channel) {",
        "  const float scaled = NormalizeInput(raw, channel) / kInputScale;",
        "  const long q = std::lround(scaled) + kInputZeroPoint;",
        "  return static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));",
        "}",
        "",
        "// Quantizes a whole raw input laid out NHWC (kInputElements values).",
        "inline void QuantizeInputBuffer(const float* raw, int8_t* out) {",
        "  for (int i = 0; i < kInputElements; ++i) {",
        f"    out[i] = QuantizeInput(raw[i], i % {channels});",
        "  }",
        "}",
        "",
        "inline float DequantizeOutput(int8_t q) {",
        "  return kOutputScale * static_cast<float>(static_cast<int>(q) - kOutputZeroPoint);",
        "}",
        "",
    ]
    lines += frontend_lines(getattr(preprocess, "frontend", None))
    lines += [f"#endif  // {guard}"]
    return "\n".join(lines) + "\n"


def frontend_lines(frontend: object) -> list[str]:
    """The feature extractor's record (an object with ``to_dict``), as constants ``kFeature<Key>``.

    Numbers become constexpr int/float, text a comment; nothing when the raw values are the features.
    """
    if frontend is None:
        return []
    record = frontend.to_dict()  # type: ignore[attr-defined]
    lines = [
        "// Feature front end applied to the raw signal before the preprocessing above; its output is the raw",
        "// input of QuantizeInputBuffer (the model's NHWC input order). See tinyprec.data.mfcc for the steps.",
        "constexpr bool kHasFeatureFrontEnd = true;",
    ]
    for key, value in record.items():
        name = "kFeature" + "".join(part.capitalize() for part in str(key).split("_"))
        if isinstance(value, bool):
            lines.append(f"constexpr bool {name} = {'true' if value else 'false'};")
        elif isinstance(value, int):
            lines.append(f"constexpr int {name} = {value};")
        elif isinstance(value, float):
            lines.append(f"constexpr float {name} = {_f32(value)};")
        else:
            lines.append(f"// {key}: {str(value).replace(chr(10), ' ')}")
    return lines + [""]


def resolver_header(ops: Sequence[OpType]) -> str:
    """op_resolver.h: ``ModelOpResolver`` sized for exactly ``ops`` and ``RegisterModelOps``."""
    guard = guard_for(FILES["resolver_header"])
    adds = "\n".join(f"  if (resolver.{RESOLVER_METHOD[op]}() != kTfLiteOk) return kTfLiteError;" for op in ops)
    return (
        f"// Generated by tinyprec: the builtin ops of the model, and nothing else.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"constexpr int kModelOpCount = {len(ops)};  // {', '.join(op.value for op in ops)}\n"
        "using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;\n\n"
        "inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {\n"
        f"{adds}\n"
        "  return kTfLiteOk;\n}\n\n"
        f"#endif  // {guard}\n"
    )


def _c_values(arr: np.ndarray) -> str:
    if arr.dtype == np.float32:
        return ", ".join(_f32(v) for v in arr.reshape(-1))
    return _ints(arr.reshape(-1))


def golden_header(inputs: np.ndarray, outputs: np.ndarray) -> str:
    """golden_vectors.h: ``kGoldenInputs[kGoldenCount][...]`` and the expected ``kGoldenOutputs``."""
    guard = guard_for(FILES["golden_header"])
    count = int(inputs.shape[0])
    n_in, n_out = int(np.prod(inputs.shape[1:])), int(np.prod(outputs.shape[1:]))
    rows = max(count, 1)  # C++ has no zero-length arrays; kGoldenCount says how many rows are real
    pad_in = np.zeros((rows, n_in), inputs.dtype)
    pad_out = np.zeros((rows, n_out), outputs.dtype)
    pad_in[:count] = inputs.reshape(count, n_in)
    pad_out[:count] = outputs.reshape(count, n_out)
    in_rows = ",\n".join(f"    {{{_c_values(r)}}}" for r in pad_in)
    out_rows = ",\n".join(f"    {{{_c_values(r)}}}" for r in pad_out)
    return (
        "// Generated by tinyprec: inputs and the outputs TFLM's reference kernels give for them.\n"
        f"#ifndef {guard}\n#define {guard}\n\n#include <cstdint>\n\n"
        f"constexpr int kGoldenCount = {count};\n"
        f"constexpr int kGoldenInputElements = {n_in};\n"
        f"constexpr int kGoldenOutputElements = {n_out};\n\n"
        f"alignas(16) constexpr {_C_TYPE[inputs.dtype]} kGoldenInputs[{rows}][kGoldenInputElements] = {{\n"
        f"{in_rows}\n}};\n\n"
        f"constexpr {_C_TYPE[outputs.dtype]} kGoldenOutputs[{rows}][kGoldenOutputElements] = {{\n"
        f"{out_rows}\n}};\n\n"
        f"#endif  // {guard}\n"
    )


def _check_golden(graph: Graph, name: str, arr: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    want = tuple(graph.tensors[name].shape[1:])
    if arr.ndim < 1 or tuple(arr.shape[1:]) != want:
        raise DataError(f"golden {what} have shape {arr.shape}; the model's {what} take (N, {', '.join(map(str, want))})")
    if arr.dtype != dtype:
        raise DataError(f"golden {what} are {arr.dtype}; the .tflite's {what} tensor is {dtype.name}")
    return arr


def write_bundle(graph: Graph, tflite_bytes: bytes, out_dir: Path, *, arena_bytes: int,
                 preprocess: PreprocessLike | None, class_labels: Sequence[str],
                 golden_inputs: np.ndarray, golden_outputs: np.ndarray,
                 arena_margin_bytes: int = DEFAULT_ARENA_MARGIN) -> dict[str, Path]:
    """Write the firmware bundle for ``tflite_bytes`` (written from ``graph``) into ``out_dir``.

    Returns role -> path (roles: c_header, c_source, settings_header, resolver_header, golden_header).
    ``golden_inputs`` / ``golden_outputs`` carry a leading batch dimension and the .tflite's I/O types.
    """
    if arena_bytes <= 0 or arena_margin_bytes < 0:
        raise DataError(f"arena_bytes ({arena_bytes}) must be positive and the margin ({arena_margin_bytes}) "
                        "not negative; measure the arena with tinyprec.runtimes.tflm.tflm_arena_bytes")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataError("the firmware bundle supports models with one input and one output")
    ops, in_type, out_type = _file_facts(tflite_bytes)
    gin = _check_golden(graph, graph.inputs[0], golden_inputs, in_type, "inputs")
    gout = _check_golden(graph, graph.outputs[0], golden_outputs, out_type, "outputs")
    if gin.shape[0] != gout.shape[0]:
        raise DataError(f"{gin.shape[0]} golden inputs but {gout.shape[0]} golden outputs; give one output per input")
    texts: Mapping[str, str] = {
        "c_header": c_header(ARRAY_NAME, header=FILES["c_header"]),
        "c_source": c_source(ARRAY_NAME, tflite_bytes, header=FILES["c_header"]),
        "settings_header": settings_header(
            graph, input_type=in_type, output_type=out_type, arena_bytes=arena_bytes,
            arena_margin_bytes=arena_margin_bytes, preprocess=preprocess, class_labels=class_labels),
        "resolver_header": resolver_header(ops),
        "golden_header": golden_header(gin, gout),
    }
    out_dir = Path(out_dir)
    return {role: atomic_write_text(out_dir / FILES[role], text) for role, text in texts.items()}
