"""The Python API on a user's own nn.Module and numpy arrays: the example in tinyprec.api's docstring runs."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinyprec
import tinyprec.api
from tinyprec.errors import DataError

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains


def _docstring_example() -> str:
    doc = tinyprec.api.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_docstring_example_runs_through_all_four_stages(tmp_path: Path) -> None:
    code = _docstring_example()
    assert "tinyprec.validate(" in code
    out = tmp_path / "my_digits"
    code = code.replace('"export/my_digits"', repr(str(out)))
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "tinyprec.api docstring", "exec"), namespace)
    tflm_acc, passed = printed.getvalue().split()
    assert float(tflm_acc) > 85.0 and passed == "True"
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    assert report["accuracy"]["fp32"] - report["accuracy"]["tflm"] <= 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"tflite_int8", "onnx_int8", "report_json"} <= set(manifest["artifacts"])


def test_dataloader_is_accepted() -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x = np.random.default_rng(0).normal(size=(40, 1, 4, 4)).astype(np.float32)
    y = np.arange(40) % 4
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    ds = tinyprec.api.as_dataset(loader)
    assert ds.num_classes == 4 and len(ds.train) + len(ds.val) + len(ds.test) == 40


def test_bad_data_is_one_line_error() -> None:
    with pytest.raises(DataError, match="DataLoader|Dataset"):
        tinyprec.api.as_dataset([1, 2, 3])
