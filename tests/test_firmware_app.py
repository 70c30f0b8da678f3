"""export/firmware/main.cc, the example TFLM application, type-checks against a generated bundle.

TFLM's sources are not here, so the app is compiled (-fsyntax-only, the firmware flags) against
stubs of the four TFLM headers it includes, declaring the real API it uses (MicroInterpreter's
constructor/AllocateTensors/Invoke/input/output/arena_used_bytes, GetModel, MicroPrintf with printf
format checking, MicroMutableOpResolver's Add* methods).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests._micro import MICRO_MODELS, random_inputs, run_tflm
from tests.test_firmware import TFLM_METHODS
from tinyprec.formats.firmware import write_bundle
from tinyprec.formats.tflite_writer import write_tflite

CXX = shutil.which("g++")
APP = Path(__file__).resolve().parents[1] / "export" / "firmware" / "main.cc"

_STUBS = {
    "tensorflow/lite/micro/micro_mutable_op_resolver.h": (
        "#pragma once\n#include <cstddef>\n#include <cstdint>\n"
        "enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 };\n"
        "struct TfLiteTensor { union { char* raw; int8_t* int8; float* f; } data; size_t bytes; };\n"
        "namespace tflite {\nclass MicroOpResolver {};\n"
        "template <unsigned int N> class MicroMutableOpResolver : public MicroOpResolver {\n public:\n"
        "{methods}\n}};\n}}  // namespace tflite\n"
    ),
    "tensorflow/lite/micro/micro_interpreter.h": (
        "#pragma once\n#include \"tensorflow/lite/micro/micro_mutable_op_resolver.h\"\n"
        "#include \"tensorflow/lite/schema/schema_generated.h\"\nnamespace tflite {\n"
        "class MicroInterpreter {\n public:\n"
        "  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,\n"
        "                   size_t tensor_arena_size);\n"
        "  TfLiteStatus AllocateTensors();\n  TfLiteStatus Invoke();\n"
        "  TfLiteTensor* input(size_t index);\n  TfLiteTensor* output(size_t index);\n"
        "  size_t arena_used_bytes() const;\n};\n}  // namespace tflite\n"
    ),
    "tensorflow/lite/micro/micro_log.h": (
        "#pragma once\nvoid MicroPrintf(const char* format, ...) __attribute__((format(printf, 1, 2)));\n"
    ),
    "tensorflow/lite/schema/schema_generated.h": (
        "#pragma once\n#include <cstdint>\nnamespace tflite {\n"
        "struct Model { uint32_t version() const; };\nconst Model* GetModel(const void* buf);\n}  // namespace tflite\n"
    ),
}


@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
@pytest.mark.parametrize("model", ["multi_op", "fully_connected"])
def test_example_app_compiles_with_a_bundle(model: str, tmp_path: Path) -> None:
    graph = MICRO_MODELS[model](np.random.default_rng(0))
    float_io = model == "fully_connected"  # the app handles float I/O bundles too
    data = write_tflite(graph, float_io=float_io)
    gin = random_inputs(graph, np.random.default_rng(1), 2)[0]
    if float_io:
        gin = gin.astype(np.float32)
    write_bundle(graph, data, tmp_path / "bundle", arena_bytes=4096, preprocess=None,
                 class_labels=tuple(f"c{i}" for i in range(6)) if model == "multi_op" else (),
                 golden_inputs=gin, golden_outputs=run_tflm(data, [gin]))
    methods = "\n".join(f"  TfLiteStatus {m}();" for m in TFLM_METHODS)
    for rel, text in _STUBS.items():
        path = tmp_path / "stub" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{methods}", methods).replace("{{", "{").replace("}}", "}"))
    subprocess.run([CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wformat=2", "-fsyntax-only",  # type: ignore[list-item]
                    "-I", str(tmp_path / "bundle"), "-I", str(tmp_path / "stub"), str(APP)], check=True)
