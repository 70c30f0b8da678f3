"""model_data.cc / .h: compile with the firmware flags, and the bytes in the array are the .tflite."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyprec.errors import DataError
from tinyprec.formats.c_array import c_header, c_source

CXX = shutil.which("g++")
FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]
needs_cxx = pytest.mark.skipif(CXX is None, reason="g++ is not installed")


def parse_c_array(text: str, name: str) -> bytes:
    """The bytes of ``name[] = {...}`` in a generated source, checked against ``name_len``."""
    body = re.search(rf"{name}\[\] = \{{(.*?)\}};", text, re.S)
    length = re.search(rf"{name}_len = (\d+);", text)
    assert body and length
    data = bytes(int(tok, 16) for tok in re.findall(r"0x([0-9a-f]{2})", re.sub(r"//.*", "", body.group(1))))
    n = int(length.group(1))
    assert len(data) == max(n, 1)  # an empty input still needs one element in C++
    return data[:n]


def test_round_trip_text(kws_tflite: bytes) -> None:
    assert parse_c_array(c_source("g_model_data", kws_tflite), "g_model_data") == kws_tflite
    assert parse_c_array(c_source("g_empty", b""), "g_empty") == b""


def test_bad_names_are_rejected() -> None:
    with pytest.raises(DataError, match="not a C identifier"):
        c_source("1model", b"\x00")
    with pytest.raises(DataError, match="not a C identifier"):
        c_header("model-data")
    with pytest.raises(DataError, match="ending in .h"):
        c_source("g", b"\x00", header="../x.hpp")


@needs_cxx
def test_compiles_links_and_holds_the_bytes_aligned(tmp_path: Path, kws_tflite: bytes) -> None:
    (tmp_path / "model_data.h").write_text(c_header("g_model_data"))
    (tmp_path / "model_data.cc").write_text(c_source("g_model_data", kws_tflite))
    (tmp_path / "dump.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;\n"
        "  std::fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n"
    )
    subprocess.run([CXX, *FLAGS, "-c", "model_data.cc", "-o", "model_data.o"], cwd=tmp_path, check=True)
    subprocess.run([CXX, *FLAGS, "dump.cc", "model_data.o", "-o", "dump"], cwd=tmp_path, check=True)
    out = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True)
    assert out.stdout == kws_tflite
