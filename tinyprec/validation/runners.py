"""The runners of stage 4, side by side on the same held-out data.

Each runner is fed what firmware would feed it: raw input -> preprocessing -> (int8 with the model's
input qparams). Float runners (FP32 PyTorch, fake-quant PyTorch, FP32 ONNX) get the preprocessed float
in PyTorch layout; the int8 runners (TFLM, TF Lite, int8 ONNX, emulator) get the same int8 batch in the
IR layout (NHWC), or the float in IR layout where a model takes float input (``float_io``).
Every runner returns float scores in the IR output layout, and its int8 output where it has one.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyprec.errors import DataError
from tinyprec.ir import DType, Graph, QParams
from tinyprec.ir.layout import LAYOUT_BY_RANK, to_ir_layout


class Runner(enum.Enum):
    FP32 = "fp32"
    FAKE_QUANT = "fake_quant"
    FAKE_QUANT_TFLM = "fake_quant_tflm"
    TFLM = "tflm"
    TFLITE = "tflite"
    ONNX_INT8 = "onnx_int8"
    ONNX_FP32 = "onnx_fp32"
    EMULATOR = "emulator"
    MCU = "mcu"


RUNNER_TITLES: dict[Runner, str] = {
    Runner.FP32: "FP32 PyTorch (baseline)",
    Runner.FAKE_QUANT: "fake-quant PyTorch (converted QAT/PTQ graph)",
    Runner.FAKE_QUANT_TFLM: "fake-quant PyTorch in TFLM's integer arithmetic (tflm_exact)",
    Runner.TFLM: "TFLM interpreter (emulated MCU)",
    Runner.TFLITE: "TF Lite interpreter",
    Runner.ONNX_INT8: "ONNX Runtime, int8 QDQ",
    Runner.ONNX_FP32: "ONNX Runtime, FP32",
    Runner.EMULATOR: "tinyprec emulator",
    Runner.MCU: "TFLM firmware on an emulated Cortex-M (QEMU)",
}


def quantize(x: np.ndarray, qp: QParams, dtype: type = np.int8) -> np.ndarray:
    """Float -> int8 (or int16) as firmware does it: round(x / scale) half away from zero, + zero point, saturate."""
    scaled = np.asarray(x, np.float32) / np.float32(qp.scale[0])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    info = np.iinfo(dtype)
    return np.clip(rounded.astype(np.int64) + int(qp.zero_point[0]), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, qp: QParams) -> np.ndarray:
    """int8 (or int16) -> float32 with per-tensor qparams."""
    return ((q.astype(np.float32) - np.float32(qp.zero_point[0])) * np.float32(qp.scale[0])).astype(np.float32)


@dataclass(frozen=True)
class Feed:
    """One held-out batch in every form a runner may need; all derived from the same raw data."""

    float_torch: np.ndarray | None  # preprocessed, PyTorch layout (None for a foreign model)
    float_ir: np.ndarray  # preprocessed, IR layout
    int8_ir: np.ndarray  # what firmware feeds an int8-input model
    model_input: np.ndarray  # int8_ir, or float_ir for a float-input model


@dataclass(frozen=True)
class Models:
    """What the runners run. Absent members (None) make their runners skip with a reason."""

    graph: Graph
    tflite: bytes
    onnx_int8: bytes | None = None
    onnx_fp32: bytes | None = None
    torch_fp32: Any = None  # torch.nn.Module
    torch_float: Any = None  # the same network's own float weights after QAT (None: the stage-1 weights)
    fake_quant: Any = None  # torch.fx.GraphModule (converted)
    input_layout: str = "NF"
    output_layout: str = "NF"
    where: str = "<model>"
    mcu: Any = None  # tinyprec.mcu.emulated.McuOptions; None: found from $TINYPREC_TFLM_TREE


@dataclass(frozen=True)
class RunnerOutput:
    """One runner's results on the feed."""

    runner: Runner
    scores: np.ndarray | None  # float, IR output layout; None when skipped
    q: np.ndarray | None  # int8 output when the runner computes one
    seconds: float
    note: str = ""

    @property
    def ran(self) -> bool:
        return self.scores is not None


def make_feed(models: Models, float_torch: np.ndarray | None, float_ir: np.ndarray | None = None) -> Feed:
    """Build the feed from preprocessed float input (PyTorch layout, or IR layout for a foreign model)."""
    g = models.graph
    inp = g.tensors[g.inputs[0]]
    if float_ir is None:
        if float_torch is None:
            raise DataError("make_feed needs float input in PyTorch or IR layout")
        float_ir = to_ir_layout(np.asarray(float_torch, np.float32), models.input_layout)
    want = tuple(inp.shape[1:])
    if tuple(float_ir.shape[1:]) != want:
        if int(np.prod(float_ir.shape[1:])) != int(np.prod(want)):
            raise DataError(f"{models.where}: data samples have shape {tuple(float_ir.shape[1:])}; "
                            f"the model's input is {want}")
        float_ir = float_ir.reshape((float_ir.shape[0], *want))
    qp = _input_qparams(g)
    int8_ir = quantize(float_ir, qp) if qp is not None else float_ir.astype(np.int8)
    model_input = int8_ir if inp.dtype is DType.INT8 else float_ir.astype(inp.dtype.numpy)
    return Feed(float_torch, float_ir, int8_ir, model_input)


def _input_qparams(g: Graph) -> QParams | None:
    """The int8 qparams firmware quantizes with: the input's, or the first QUANTIZE's output for float I/O."""
    t = g.tensors[g.inputs[0]]
    if t.dtype is DType.INT8:
        return t.qparams
    for op in g.ops:
        if op.inputs and op.inputs[0] == g.inputs[0]:
            out = g.tensors[op.outputs[0]]
            return out.qparams if out.dtype is DType.INT8 else None
    return None


_INT_OUTPUTS = (DType.INT8, DType.INT16)


def output_dtype(g: Graph) -> type:
    """The integer type of the model's output: int8, or int16 when its last layer computes in 16 bits."""
    t = g.tensors[g.outputs[0]]
    if t.dtype in _INT_OUTPUTS:
        return t.dtype.numpy.type
    for op in g.ops:
        if op.outputs[0] == g.outputs[0] and op.inputs and op.inputs[0] is not None:
            src = g.tensors[op.inputs[0]]
            return src.dtype.numpy.type if src.dtype in _INT_OUTPUTS else np.int8
    return np.int8


def output_qparams(g: Graph) -> QParams | None:
    """The int8/int16 qparams of the model's output (the tensor before DEQUANTIZE for float I/O)."""
    t = g.tensors[g.outputs[0]]
    if t.dtype in _INT_OUTPUTS:
        return t.qparams
    for op in g.ops:
        if op.outputs[0] == g.outputs[0] and op.inputs and op.inputs[0] is not None:
            src = g.tensors[op.inputs[0]]
            return src.qparams if src.dtype in _INT_OUTPUTS else None
    return None


def _mcu_output(models: Models, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    qp = output_qparams(models.graph)
    if out.dtype in (np.int8, np.int16) and qp is not None:
        return dequantize(out, qp), out
    scores = out.astype(np.float32)
    return scores, (quantize(scores, qp, output_dtype(models.graph)) if qp is not None else None)


def _torch_scores(models: Models, out: Any) -> np.ndarray:
    arr = out.detach().float().cpu().numpy() if hasattr(out, "detach") else np.asarray(out, np.float32)
    return to_ir_layout(arr, LAYOUT_BY_RANK.get(arr.ndim, "NF")) if arr.ndim in (3, 4) else arr


def _run_torch(module: Any, x: np.ndarray, chunk: int = 512) -> Any:
    import torch

    parts = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            out = module(torch.from_numpy(np.ascontiguousarray(x[start : start + chunk])))
            parts.append(out[0] if isinstance(out, (tuple, list)) else out)
    return torch.cat(parts, 0) if parts else torch.zeros(0)


def _fp32(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if models.torch_fp32 is None or feed.float_torch is None:
        return _skip("no PyTorch FP32 model (foreign model)")
    models.torch_fp32.eval()
    return _torch_scores(models, _run_torch(models.torch_fp32, feed.float_torch)), None, ""


def _fake_quant(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if models.fake_quant is None or feed.float_torch is None:
        return _skip("no converted fake-quant graph (foreign model)")
    scores = _torch_scores(models, _run_torch(models.fake_quant, feed.float_torch))
    qp = output_qparams(models.graph)
    return scores, (quantize(scores, qp, output_dtype(models.graph)) if qp is not None else None), ""


def _fake_quant_tflm(models: Models, feed: Feed,
                     progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if models.fake_quant is None or feed.float_torch is None:
        return _skip("no converted fake-quant graph (foreign model)")
    from dataclasses import replace

    from tinyprec.quant.exact import tflm_exact

    return _fake_quant(replace(models, fake_quant=tflm_exact(models.fake_quant)), feed, progress)


def _tflm(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    from tinyprec.runtimes.tflm import run_tflm

    out = run_tflm(models.tflite, feed.model_input, progress=progress, where=models.where)
    return (*_mcu_output(models, out), "")


def _tflite(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.runtimes.tflite import run_tflite, tf_lite_compatible

    twin = tf_lite_compatible(models.graph)
    data, note = models.tflite, "TF Lite builtin optimized kernels"
    if twin is not models.graph:
        data, note = write_tflite(twin), note + "; QUANTIZE int8->int16 run as DEQUANTIZE + QUANTIZE (TF Lite refuses it)"
    out = run_tflite(data, feed.model_input, kernels="optimized", where=models.where)
    return (*_mcu_output(models, out), note)


def _onnx_feed(onnx_bytes: bytes, feed: Feed, prefer_torch: bool, where: str) -> np.ndarray:
    from tinyprec.runtimes.ort import onnx_input_spec

    shape, dtype = onnx_input_spec(onnx_bytes, where=where)
    if dtype == np.int8:
        candidates = [feed.int8_ir]
    else:
        candidates = [c for c in ((feed.float_torch, feed.float_ir) if prefer_torch else (feed.float_ir, feed.float_torch)) if c is not None]
    for c in candidates:
        if len(shape) == c.ndim and all(d is None or d == s for d, s in zip(shape[1:], c.shape[1:])):
            return c.astype(dtype)
    raise DataError(f"{where}: ONNX input {shape} matches neither the PyTorch nor the IR layout of the data")


def _onnx_int8(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if models.onnx_int8 is None:
        return _skip("no int8 ONNX model (export.onnx = false or foreign model)")
    from tinyprec.runtimes.ort import run_onnx

    out = run_onnx(models.onnx_int8, _onnx_feed(models.onnx_int8, feed, False, models.where), where=models.where)
    if out.ndim in (3, 4) and out.shape[1:] != models.graph.tensors[models.graph.outputs[0]].shape[1:]:
        out = to_ir_layout(out, LAYOUT_BY_RANK[out.ndim])
    return (*_mcu_output(models, out), "QDQ graph evaluated unfused (session.disable_quant_qdq): ORT's fused u8s8 kernels saturate on CPUs without VNNI")


def _onnx_fp32(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if models.onnx_fp32 is None:
        return _skip("no FP32 ONNX model (export.onnx = false or foreign model)")
    from tinyprec.runtimes.ort import run_onnx

    out = run_onnx(models.onnx_fp32, _onnx_feed(models.onnx_fp32, feed, True, models.where), where=models.where)
    return _torch_scores(models, out), None, ""


def _emulator(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    try:
        from tinyprec.emulator import Emulator  # type: ignore[attr-defined]
    except ImportError:
        return _skip("the emulator is not available in this build")
    out = Emulator(models.graph).run(feed.model_input)
    return (*_mcu_output(models, np.asarray(out)), "double rounding")


def _mcu(models: Models, feed: Feed, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    from tinyprec.mcu.emulated import mcu_runner_outputs

    out, note = mcu_runner_outputs(models, feed.model_input)
    if out is None:
        return _skip(note)
    return (*_mcu_output(models, out), note)


def _skip(reason: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    raise _Skipped(reason)


class _Skipped(Exception):
    pass


RUNNERS: dict[Runner, Callable[[Models, Feed, Callable[[int, int], None] | None], tuple[np.ndarray, np.ndarray | None, str]]] = {
    Runner.FP32: _fp32,
    Runner.FAKE_QUANT: _fake_quant,
    Runner.FAKE_QUANT_TFLM: _fake_quant_tflm,
    Runner.TFLM: _tflm,
    Runner.TFLITE: _tflite,
    Runner.ONNX_INT8: _onnx_int8,
    Runner.ONNX_FP32: _onnx_fp32,
    Runner.EMULATOR: _emulator,
    Runner.MCU: _mcu,
}


def run_all(models: Models, feed: Feed, *, runners: tuple[Runner, ...] = tuple(Runner),
            progress: Callable[[str, int, int], None] | None = None) -> dict[Runner, RunnerOutput]:
    """Run each runner on ``feed``; a runner without its model is recorded as skipped with the reason.

    A runner that fails on a present model raises (TFLM refusing the exported file is an error, not a skip).
    """
    results: dict[Runner, RunnerOutput] = {}
    n = int(feed.model_input.shape[0])
    for runner in runners:
        def step(done: int, total: int, _r: Runner = runner) -> None:
            if progress is not None:
                progress(_r.value, done, total)

        start = time.perf_counter()
        try:
            scores, q, note = RUNNERS[runner](models, feed, step)
        except _Skipped as skipped:
            results[runner] = RunnerOutput(runner, None, None, 0.0, f"skipped: {skipped}")
            continue
        step(n, n)
        results[runner] = RunnerOutput(runner, np.asarray(scores, np.float32).reshape(n, -1) if scores.ndim > 1 else scores,
                                       None if q is None else q.reshape(n, -1), time.perf_counter() - start, note)
    return results
