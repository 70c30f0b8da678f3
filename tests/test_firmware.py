"""The firmware bundle: every file compiles with the firmware flags and says what the model is.

op_resolver.h includes TFLM's micro_mutable_op_resolver.h, whose sources are not here; the test
compiles it against a stub of that header, written below, that has the real header's method names
(checked against tensorflow/tflite-micro's micro_mutable_op_resolver.h) and records each call.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests._micro import MICRO_MODELS, random_inputs, run_tflm
from tests.test_c_array import parse_c_array
from tinyprec.errors import DataError
from tinyprec.formats.firmware import FILES, settings_header, write_bundle
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import OpType, QParams
from tinyprec.runtimes.tflm import tflm_arena_bytes

CXX = shutil.which("g++")
FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]
pytestmark = pytest.mark.skipif(CXX is None, reason="g++ is not installed")

# Method of tflite::MicroMutableOpResolver -> builtin op it registers (from TFLM's header).
TFLM_METHODS = {
    "AddAdd": "ADD", "AddAveragePool2D": "AVERAGE_POOL_2D", "AddConcatenation": "CONCATENATION",
    "AddConv2D": "CONV_2D", "AddDepthwiseConv2D": "DEPTHWISE_CONV_2D", "AddDequantize": "DEQUANTIZE",
    "AddFullyConnected": "FULLY_CONNECTED", "AddLogistic": "LOGISTIC", "AddMaxPool2D": "MAX_POOL_2D",
    "AddMean": "MEAN", "AddMul": "MUL", "AddPad": "PAD", "AddQuantize": "QUANTIZE", "AddReshape": "RESHAPE",
    "AddSoftmax": "SOFTMAX", "AddTanh": "TANH",
}


@dataclass(frozen=True)
class _Pre:
    mean: float
    std: float


def _stub_tflm(root: Path) -> Path:
    inc = root / "stub" / "tensorflow" / "lite" / "micro"
    inc.mkdir(parents=True)
    methods = "\n".join(f'  TfLiteStatus {m}() {{ return Add("{op}"); }}' for m, op in TFLM_METHODS.items())
    (inc / "micro_mutable_op_resolver.h").write_text(
        "#pragma once\n#include <string>\n#include <vector>\n"
        "enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 };\n"
        "inline std::vector<std::string>& Registered() { static std::vector<std::string> v; return v; }\n"
        "namespace tflite {\ntemplate <unsigned int N> class MicroMutableOpResolver {\n public:\n"
        "  TfLiteStatus Add(const char* op) {\n    if (count_ >= N) return kTfLiteError;\n"
        "    ++count_;\n    Registered().push_back(op);\n    return kTfLiteOk;\n  }\n"
        f"{methods}\n private:\n  unsigned int count_ = 0;\n}};\n}}  // namespace tflite\n"
    )
    return root / "stub"


def _run_cc(tmp: Path, name: str, body: str, *includes: str, extra: tuple[str, ...] = ()) -> str:
    src = tmp / f"{name}.cc"
    src.write_text("".join(f'#include "{h}"\n' for h in includes) + "#include <cstdio>\n" + body)
    subprocess.run([CXX, *FLAGS, *extra, str(src), "-o", str(tmp / name)], cwd=tmp, check=True)  # type: ignore[list-item]
    return subprocess.run([str(tmp / name)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    rng = np.random.default_rng(0)
    graph = MICRO_MODELS["depthwise_conv2d"](rng)
    data = write_tflite(graph)
    golden_in = random_inputs(graph, rng, 3)[0]
    golden_out = run_tflm(data, [golden_in])
    arena = tflm_arena_bytes(data)
    out = tmp_path_factory.mktemp("fw")
    paths = write_bundle(graph, data, out, arena_bytes=arena, preprocess=_Pre(0.5, 0.25),
                         class_labels=("a \"quoted\" label", "b"), golden_inputs=golden_in,
                         golden_outputs=golden_out)
    return graph, data, arena, golden_in, golden_out, out, paths


def test_roles_and_model_bytes(bundle) -> None:  # noqa: ANN001
    graph, data, _, _, _, out, paths = bundle
    assert paths == {role: out / name for role, name in FILES.items()}
    assert parse_c_array(paths["c_source"].read_text(), "g_model_data") == data
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())  # no temp files left


def test_every_header_compiles_alone(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    out = bundle[5]
    stub = _stub_tflm(tmp_path)
    for name in FILES.values():
        if name.endswith(".h"):
            subprocess.run([CXX, *FLAGS, "-fsyntax-only", "-I", str(stub), "-x", "c++", str(out / name)],  # type: ignore[list-item]
                           check=True)
    subprocess.run([CXX, *FLAGS, "-c", str(out / "model_data.cc"), "-o", str(tmp_path / "m.o")], check=True)  # type: ignore[list-item]


def test_resolver_registers_exactly_the_model_ops(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    out = bundle[5]
    stub = _stub_tflm(tmp_path)
    body = ("int main() {\n  ModelOpResolver r;\n  if (RegisterModelOps(r) != kTfLiteOk) return 2;\n"
            "  for (const auto& op : Registered()) std::printf(\"%s\\n\", op.c_str());\n  return 0;\n}\n")
    printed = _run_cc(tmp_path, "resolver", body, str(out / "op_resolver.h"), extra=("-I", str(stub)))
    assert printed.split() == ["DEPTHWISE_CONV_2D"]
    text = (out / "op_resolver.h").read_text()
    assert "MicroMutableOpResolver<kModelOpCount>" in text and "kModelOpCount = 1;" in text


def test_settings_values_and_input_quantization(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    graph, data, arena, _, _, out, _ = bundle
    x_qp = graph.tensors["x"].qparams
    y_qp = graph.tensors["y"].qparams
    raws = np.random.default_rng(3).uniform(-4, 4, 40).astype(np.float32)
    raw_list = ", ".join(np.format_float_scientific(v, unique=True) + "f" for v in raws)
    body = (
        f"const float raws[] = {{{raw_list}}};\n"
        "int main() {\n"
        "  std::printf(\"%d %d %d %d %d %d\\n\", kTensorArenaSize, kArenaMeasuredBytes, kInputElements,\n"
        "              kInputZeroPoint, kOutputZeroPoint, kCategoryCount);\n"
        "  std::printf(\"%.9g %.9g %s\\n\", kInputScale, kOutputScale, kCategoryLabels[0]);\n"
        "  for (float r : raws) std::printf(\"%d \", QuantizeInput(r, 1));\n"
        "  std::printf(\"\\n%.9g\\n\", DequantizeOutput(static_cast<int8_t>(-7)));\n  return 0;\n}\n"
    )
    lines = _run_cc(tmp_path, "settings", body, str(out / "model_settings.h")).splitlines()
    ints = [int(v) for v in lines[0].split()]
    assert ints == [-(-(arena + 1024) // 16) * 16, arena, 196, int(x_qp.zero_point[0]), int(y_qp.zero_point[0]), 2]
    assert np.float32(lines[1].split()[0]) == x_qp.scale[0] and np.float32(lines[1].split()[1]) == y_qp.scale[0]
    assert lines[1].split(" ", 2)[2] == 'a "quoted" label'
    # Reference: float32 arithmetic, round half away from zero (TFLite QUANTIZE), clamp.
    scaled = ((raws - np.float32(0.5)) / np.float32(0.25)) / x_qp.scale[0]
    expected = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + x_qp.zero_point[0], -128, 127)
    assert [int(v) for v in lines[2].split()] == expected.astype(int).tolist()
    assert np.float32(lines[3]) == np.float32(y_qp.scale[0]) * np.float32(-7 - int(y_qp.zero_point[0]))
    # The arena in the header is enough for TFLM.
    assert run_tflm(data, [np.zeros((1, 7, 7, 4), np.int8)], arena_size=ints[0]).shape == (1, 5, 5, 8)


def test_input_quantization_rounds_ties_away_from_zero(tmp_path: Path) -> None:
    graph = MICRO_MODELS["fully_connected"](np.random.default_rng(0))
    graph.tensors["x"].qparams = QParams.per_tensor(0.0625, 3)  # exact float steps: true ties
    text = settings_header(graph, input_type=np.dtype(np.int8), output_type=np.dtype(np.int8),
                           arena_bytes=100, arena_margin_bytes=0, preprocess=_Pre(0.5, 0.25), class_labels=())
    (tmp_path / "model_settings.h").write_text(text)
    raws = np.float32(0.5) + np.float32(0.25 * 0.0625) * np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 400.0, -400.0],
                                                                  np.float32)
    body = ("const float raws[] = {" + ", ".join(f"{v!r}f" for v in raws.tolist()) + "};\n"
            "int main() {\n  for (float r : raws) std::printf(\"%d \", QuantizeInput(r, 0));\n  return 0;\n}\n")
    got = [int(v) for v in _run_cc(tmp_path, "ties", body, str(tmp_path / "model_settings.h")).split()]
    assert got == [0, 1, 2, 4, 5, 6, 127, -128]  # -3, -2, -1, 1, 2, 3 away from zero, + zp 3; clamped


def test_golden_vectors_compile_and_match(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    _, _, _, gin, gout, out, _ = bundle
    body = (
        "int main() {\n  std::printf(\"%d\\n\", kGoldenCount);\n"
        "  for (int i = 0; i < kGoldenCount; ++i) {\n"
        "    for (int j = 0; j < kGoldenInputElements; ++j) std::printf(\"%d \", kGoldenInputs[i][j]);\n"
        "    std::printf(\"\\n\");\n"
        "    for (int j = 0; j < kGoldenOutputElements; ++j) std::printf(\"%d \", kGoldenOutputs[i][j]);\n"
        "    std::printf(\"\\n\");\n  }\n  return 0;\n}\n"
    )
    lines = _run_cc(tmp_path, "golden", body, str(out / "golden_vectors.h")).splitlines()
    assert int(lines[0]) == 3
    for i in range(3):
        assert [int(v) for v in lines[1 + 2 * i].split()] == gin[i].reshape(-1).tolist()
        assert [int(v) for v in lines[2 + 2 * i].split()] == gout[i].reshape(-1).tolist()


def test_float_io_bundle_registers_quantize_ops(tmp_path: Path) -> None:
    graph = MICRO_MODELS["fully_connected"](np.random.default_rng(0))
    data = write_tflite(graph, float_io=True)
    gin = np.zeros((1, 16), np.float32)
    gout = run_tflm(data, [gin])
    paths = write_bundle(graph, data, tmp_path, arena_bytes=2000, preprocess=None, class_labels=(),
                         golden_inputs=gin, golden_outputs=gout)
    text = paths["resolver_header"].read_text()
    assert re.findall(r"resolver\.(\w+)\(\)", text) == ["AddQuantize", "AddFullyConnected", "AddDequantize"]
    settings = paths["settings_header"].read_text()
    assert "using ModelInputType = float;" in settings and "kCategoryCount = 0;" in settings
    assert 'kCategoryLabels[1] = {""};' in settings
    assert OpType.QUANTIZE not in graph.op_types()  # the bundle read the ops from the file


def test_bad_golden_shape_writes_nothing(tmp_path: Path) -> None:
    graph = MICRO_MODELS["fully_connected"](np.random.default_rng(0))
    data = write_tflite(graph)
    with pytest.raises(DataError, match="golden inputs have shape"):
        write_bundle(graph, data, tmp_path / "fw", arena_bytes=2000, preprocess=None, class_labels=(),
                     golden_inputs=np.zeros((2, 15), np.int8), golden_outputs=np.zeros((2, 5), np.int8))
    with pytest.raises(DataError, match="golden inputs are float32"):
        write_bundle(graph, data, tmp_path / "fw", arena_bytes=2000, preprocess=None, class_labels=(),
                     golden_inputs=np.zeros((2, 16), np.float32), golden_outputs=np.zeros((2, 5), np.int8))
    assert not (tmp_path / "fw").exists()
