"""TensorFlow Lite Micro's own interpreter (reference kernels), driven from Python.

This is the emulated microcontroller: the same C++ kernels and memory planner that run on the
board, compiled for the host. It runs one sample at a time; :func:`run_tflm` loops over a batch.
:func:`tflm_arena_bytes` finds the smallest ``arena_size`` with which the interpreter allocates
(the ``kTensorArenaSize`` a firmware needs on this 64-bit host; a 32-bit MCU needs slightly less
for the persistent structures).

Native messages (allocation failures, the recording allocator's report) are captured, never printed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyprec.errors import DataError, ModelFormatError
from tinyprec.runtimes._capture import captured_native_output

Progress = Callable[[int, int], None]

_MAX_ARENA = 256 << 20
_PROGRESS_EVERY = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model's first subgraph, as the flatbuffer declares it."""

    index: int
    name: str
    shape: tuple[int, ...]
    is_const: bool


@dataclass(frozen=True)
class ArenaReport:
    """The arena TFLM needs, measured: the smallest size that allocates, and its recorded split."""

    arena_bytes: int
    head_bytes: int
    tail_bytes: int
    breakdown: dict[str, int] = field(default_factory=dict)


def _runtime() -> Any:
    from tinyprec._quiet import quiet_third_party

    quiet_third_party()
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def model_tensors(tflite_bytes: bytes, *, where: str = "<bytes>") -> list[TensorInfo]:
    """The tensors of subgraph 0 (index, name, shape, constant or not), read from the flatbuffer.

    Raises :class:`ModelFormatError` for data that is not a readable .tflite flatbuffer.
    """
    check_tflite_bytes(tflite_bytes, where=where)
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

    try:
        model = schema_fb.Model.GetRootAs(tflite_bytes, 0)
        sub = model.Subgraphs(0)
        _walk(model, sub)
        result = []
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            is_const = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
            name = (t.Name() or b"").decode("utf-8", errors="replace") or f"tensor_{i}"
            result.append(TensorInfo(i, name, tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (), is_const))
    except Exception as err:  # a corrupt flatbuffer fails in many ways; the reader names them precisely
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise ModelFormatError(f"{where}: not a readable .tflite flatbuffer ({reason}); re-export the model") from err
    return result


def _walk(model: Any, sub: Any) -> None:
    """Touch every table and vector TFLM will read, so out-of-range offsets fail here, in Python."""
    n_tensors, n_buffers, n_codes = sub.TensorsLength(), model.BuffersLength(), model.OperatorCodesLength()
    if model.SubgraphsLength() < 1 or n_tensors < 1:
        raise ValueError("no subgraph or no tensors")
    for i in range(n_buffers):
        buf = model.Buffers(i)
        if buf.DataLength() > 0:
            buf.DataAsNumpy()
    for i in range(n_tensors):
        t = sub.Tensors(i)
        if t.ShapeLength() > 0 and (t.ShapeAsNumpy() < 0).any():
            raise ValueError(f"tensor {i} has a negative dimension")
        if t.Buffer() >= n_buffers:
            raise ValueError(f"tensor {i} names buffer {t.Buffer()} of {n_buffers}")
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        if op.OpcodeIndex() >= n_codes:
            raise ValueError(f"operator {i} names opcode {op.OpcodeIndex()} of {n_codes}")
        for vec in (op.InputsAsNumpy() if op.InputsLength() else (), op.OutputsAsNumpy() if op.OutputsLength() else ()):
            if any(int(k) < -1 or int(k) >= n_tensors for k in vec):
                raise ValueError(f"operator {i} names a tensor out of range")
    for vec in (sub.InputsAsNumpy(), sub.OutputsAsNumpy()):
        if len(vec) < 1 or any(int(k) < 0 or int(k) >= n_tensors for k in vec):
            raise ValueError("graph inputs/outputs out of range")


def _output_count(tflite_bytes: bytes, where: str) -> int:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema_fb

    try:
        return int(schema_fb.Model.GetRootAs(tflite_bytes, 0).Subgraphs(0).OutputsLength())
    except Exception as err:
        raise ModelFormatError(f"{where}: not a readable .tflite flatbuffer ({type(err).__name__}); re-export the model") from err


def check_tflite_bytes(tflite_bytes: bytes, *, where: str = "<bytes>") -> None:
    """Cheap sanity check before handing bytes to native code: size and the TFL3 file identifier."""
    if not isinstance(tflite_bytes, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"{where}: expected the bytes of a .tflite file, got {type(tflite_bytes).__name__}")
    data = bytes(tflite_bytes[:8])
    if len(tflite_bytes) < 16 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"{where}: not a .tflite file (missing the TFL3 identifier); pass an int8 .tflite model")


def _make(tflite_bytes: bytes, arena: int, preserve: bool, where: str = "<bytes>") -> tuple[Any | None, str]:
    runtime = _runtime()
    config = runtime.InterpreterConfig.kPreserveAllTensors if preserve else runtime.InterpreterConfig.kAllocationRecording
    parse_error: Exception | None = None
    with captured_native_output() as out:
        try:
            interp = runtime.Interpreter.from_bytes(bytes(tflite_bytes), arena_size=int(arena), intrepreter_config=config)
        except RuntimeError:
            interp = None
        except (ValueError, IndexError, TypeError, AttributeError, struct.error) as err:
            interp, parse_error = None, err  # the wrapper's own Python parsing of the flatbuffer
    if parse_error is not None:
        reason = " ".join(str(parse_error).split())[:120] or type(parse_error).__name__
        raise ModelFormatError(f"{where}: TFLM's loader cannot parse the flatbuffer ({reason}); re-export the model")
    return interp, "".join(out)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _open(tflite_bytes: bytes, arena_bytes: int | None, preserve: bool, where: str) -> Any:
    """An interpreter with the given arena, or the first power-of-two-ish size that allocates."""
    check_tflite_bytes(tflite_bytes, where=where)
    if arena_bytes is not None:
        interp, text = _make(tflite_bytes, arena_bytes, preserve, where)
        if interp is None:
            raise ModelFormatError(f"{where}: TFLM could not allocate with arena_size={arena_bytes}: {_last_line(text)}")
        return interp
    arena = max(64 << 10, 10 * len(tflite_bytes))
    text = ""
    while arena <= _MAX_ARENA:
        interp, text = _make(tflite_bytes, arena, preserve, where)
        if interp is not None:
            return interp
        if "missing" not in text:
            break  # not a memory problem: an unsupported op or a malformed model
        arena *= 2
    raise ModelFormatError(f"{where}: TFLM refused the model: {_last_line(text)}")


def _as_batch(interp: Any, x: np.ndarray, where: str) -> np.ndarray:
    details = interp.get_input_details(0)
    shape = tuple(int(d) for d in details["shape"])
    dtype = np.dtype(details["dtype"])
    x = np.asarray(x)
    if x.shape == shape:
        x = x.reshape((1, *shape[1:])) if shape and shape[0] == 1 else x
    if not shape or shape[0] != 1:
        raise ModelFormatError(f"{where}: the model's input has batch dimension {shape[:1]}; TFLM models take batch 1")
    if x.ndim != len(shape) or tuple(x.shape[1:]) != shape[1:]:
        raise DataError(f"{where}: input batch has shape {x.shape}; the model takes (N, {', '.join(map(str, shape[1:]))})")
    if x.dtype != dtype:
        raise DataError(f"{where}: input is {x.dtype}; the model's input is {dtype.name} (quantize with the input qparams first)")
    return x


def run_tflm_outputs(
    tflite_bytes: bytes,
    x_batch: np.ndarray,
    *,
    arena_bytes: int | None = None,
    progress: Progress | None = None,
    where: str = "<bytes>",
) -> list[np.ndarray]:
    """Run every sample of ``x_batch`` (leading batch dimension) through TFLM; one array per model output."""
    model_tensors(tflite_bytes, where=where)
    interp = _open(tflite_bytes, arena_bytes, False, where)
    x = _as_batch(interp, x_batch, where)
    n = x.shape[0]
    outputs: list[list[np.ndarray]] = [[] for _ in range(_output_count(tflite_bytes, where))]
    with captured_native_output() as out:
        try:
            for i in range(n):
                interp.set_input(x[i : i + 1], 0)
                interp.invoke()
                for k, acc in enumerate(outputs):
                    acc.append(np.array(interp.get_output(k), copy=True))
                if progress is not None and ((i + 1) % _PROGRESS_EVERY == 0 or i + 1 == n):
                    progress(i + 1, n)
        except (RuntimeError, ValueError) as err:
            failure: Exception | None = err
        else:
            failure = None
    if failure is not None:
        raise ModelFormatError(f"{where}: TFLM failed to invoke the model: {_last_line(''.join(out)) or failure}")
    return [np.concatenate(acc, axis=0) if acc else np.zeros((0,)) for acc in outputs]


def run_tflm(
    tflite_bytes: bytes,
    x_int8_batch: np.ndarray,
    *,
    output_index: int = 0,
    arena_bytes: int | None = None,
    progress: Progress | None = None,
    where: str = "<bytes>",
) -> np.ndarray:
    """Run a batch through TFLM sample by sample and return output ``output_index`` with the batch first.

    ``x_int8_batch`` has the model's input shape with a leading batch dimension and the model's
    input dtype (int8 for our models). ``progress(done, total)`` is called every 64 samples.
    Raises :class:`DataError` for input of the wrong shape or dtype and :class:`ModelFormatError`
    when TFLM refuses the model.
    """
    outs = run_tflm_outputs(tflite_bytes, x_int8_batch, arena_bytes=arena_bytes, progress=progress, where=where)
    if not 0 <= output_index < len(outs):
        raise DataError(f"{where}: output_index {output_index} out of range; the model has {len(outs)} output(s)")
    return outs[output_index]


def run_tflm_with_taps(
    tflite_bytes: bytes,
    x_batch: np.ndarray,
    *,
    include_const: bool = False,
    names: Sequence[str] | None = None,
    where: str = "<bytes>",
) -> dict[str, np.ndarray]:
    """Every tensor TFLM exposes (kPreserveAllTensors + GetTensor), by tensor name, batch first.

    Only tensors of subgraph 0; constants are left out unless ``include_const``. Keys are the
    flatbuffer names (a repeated name gets ``#<index>``), or ``names[index]`` when given (pass the
    index -> IR name list of ``tflite_reader.read_tflite_indexed`` to key taps by IR tensor name).
    The values are TFLM's own, so they can be compared with an emulator's taps.
    """
    tensors = model_tensors(tflite_bytes, where=where)
    if names is not None and len(names) != len(tensors):
        raise DataError(f"{where}: {len(names)} names given for {len(tensors)} tensors")
    interp = _open(tflite_bytes, None, True, where)
    x = _as_batch(interp, x_batch, where)
    wanted = [t for t in tensors if include_const or not t.is_const]
    seen: set[str] = set()
    keys = []
    for t in wanted:
        key = names[t.index] if names is not None else (t.name if t.name not in seen else f"{t.name}#{t.index}")
        seen.add(t.name)
        keys.append(key)
    acc: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    with captured_native_output():
        for i in range(x.shape[0]):
            interp.set_input(x[i : i + 1], 0)
            interp.invoke()
            for key, t in zip(keys, wanted):
                data = np.array(interp.GetTensor(t.index, 0)["tensor_data"], copy=True)
                acc[key].append(data.reshape((1, *data.shape)) if t.is_const else data)
    return {k: np.concatenate(v, axis=0) for k, v in acc.items() if v}


def _recorded_total(tflite_bytes: bytes, where: str) -> int:
    """The recording allocator's total with a generous arena (an allocation that cannot fail for lack of space)."""
    interp = _open(tflite_bytes, None, False, where)
    with captured_native_output() as out:
        interp.print_allocations()
    match = _TOTAL_RE.search("".join(out))
    if match is None:
        raise ModelFormatError(f"{where}: TFLM reported no arena total")
    totals = {m.group(1): int(m.group(2)) for m in _TOTAL_RE.finditer("".join(out))}
    return totals.get("total", int(match.group(2)))


def tflm_arena_bytes(tflite_bytes: bytes, *, where: str = "<bytes>") -> int:
    """The smallest ``arena_size`` (bytes) with which TFLM's interpreter allocates the model, exact to the byte.

    Every probe runs in a helper process (:mod:`tinyprec.runtimes.arena`): TFLM can crash instead of
    failing cleanly on a far too small arena. Raises :class:`ModelFormatError` when TFLM refuses the model.
    """
    from tinyprec.runtimes.arena import smallest_arena

    model_tensors(tflite_bytes, where=where)
    return smallest_arena(tflite_bytes, where=where)


_RECORD_RE = re.compile(r"'([^']+)' used (\d+) bytes")
_TOTAL_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def tflm_arena_report(tflite_bytes: bytes, *, where: str = "<bytes>") -> ArenaReport:
    """:func:`tflm_arena_bytes` plus the recording allocator's split (head = planned activations,
    tail = persistent structures) after one invoke on zeros, parsed from ``print_allocations``."""
    arena = tflm_arena_bytes(tflite_bytes, where=where)
    interp = _open(tflite_bytes, arena, False, where)
    details = interp.get_input_details(0)
    x = np.zeros(tuple(int(d) for d in details["shape"]), dtype=np.dtype(details["dtype"]))
    with captured_native_output() as out:
        interp.set_input(x, 0)
        interp.invoke()
        interp.print_allocations()
    text = "".join(out)
    totals = {m.group(1): int(m.group(2)) for m in _TOTAL_RE.finditer(text)}
    breakdown = {m.group(1): int(m.group(2)) for m in _RECORD_RE.finditer(text)}
    return ArenaReport(arena, totals.get("head", 0), totals.get("tail", 0), breakdown)


def tflm_arena_report_isolated(tflite_bytes: bytes, *, where: str = "<bytes>", timeout_s: float = 120.0) -> ArenaReport:
    """:func:`tflm_arena_report` in a child process, for untrusted files: a native abort or crash in
    TFLM (which does not validate every field of a flatbuffer) becomes a :class:`ModelFormatError`."""
    import json
    import subprocess
    import sys

    check_tflite_bytes(tflite_bytes, where=where)
    try:
        proc = subprocess.run([sys.executable, "-m", "tinyprec.runtimes._arena_probe", where], input=bytes(tflite_bytes),
                              capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise ModelFormatError(f"{where}: TFLM did not finish allocating within {timeout_s:.0f} s") from err
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise ModelFormatError(f"{where}: TFLM crashed ({how}) while loading the model; the file is inconsistent, re-export it")
    lines = proc.stdout.decode("utf-8", errors="replace").strip().splitlines()
    data: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": f"{where}: the arena probe returned nothing"}
    if "error" in data:
        raise ModelFormatError(str(data["error"]))
    return ArenaReport(int(data["arena_bytes"]), int(data["head_bytes"]), int(data["tail_bytes"]),
                       {str(k): int(v) for k, v in data["breakdown"].items()})
