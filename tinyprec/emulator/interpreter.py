"""The emulator: an int8 graph prepared once, then evaluated on whole batches, bit-exact with TFLM."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinyprec.emulator.common import Prepared
from tinyprec.errors import DataError, ModelFormatError, TinyprecError, UnsupportedOpError
from tinyprec.ir import INTEGER_KINDS, Graph, Op, OpType
from tinyprec.ir.support import check_op_precision

ROUNDINGS = ("double", "single")
# Temporary buffers (im2col) one chunk of the batch may use, and the most one sample may need.
# Chunks aim at the cache size (each op's buffers stay in L2 for the next op), at least a few samples
# long so that the per-op Python overhead stays small.
_CHUNK_SCRATCH_BYTES = 96 << 20
_CHUNK_CACHE_BYTES = 1 << 20
_CHUNK_MIN_SAMPLES = 4
_MAX_SAMPLE_SCRATCH_BYTES = 2 << 30

_KIND_HELP = {
    "float": "it is a float model (no int8 quantization); an MCU runs the int8 model, so export one with "
             "full integer quantization (tinyprec quantize, or TFLiteConverter with a representative dataset)",
    "hybrid": "it is a hybrid (dynamic-range) model: float activations with int8 weights, which TFLM does not "
              "run as integer kernels; export it with full integer quantization (a representative dataset)",
    "uint8": "it uses legacy uint8 quantization; re-export it with int8 quantization",
    "mixed": "its tensors mix quantized and float types; export it with full int8 quantization",
}


# Inputs an op cannot do without (weights, second operand, axes, paddings).
_REQUIRED_INPUTS = {OpType.CONV_2D: 2, OpType.DEPTHWISE_CONV_2D: 2, OpType.FULLY_CONNECTED: 2, OpType.ADD: 2,
                    OpType.MUL: 2, OpType.MEAN: 2, OpType.PAD: 2,
                    OpType.REDUCE_MAX: 2}


def _check_op(graph: Graph, op: Op) -> None:
    """Structural checks a foreign graph must pass before a kernel sees it."""
    need = _REQUIRED_INPUTS.get(op.type, 1)
    if len(op.inputs) < need or any(n is None for n in op.inputs[:need]) or len(op.outputs) != 1:
        raise ModelFormatError(f"{op.type.value} '{op.name}': needs {need} input(s) and one output")
    unknown = [n for n in (*op.inputs, *op.outputs) if n is not None and n not in graph.tensors]
    if unknown:
        raise ModelFormatError(f"{op.type.value} '{op.name}': tensor '{unknown[0]}' is not in the graph")
    rule = check_op_precision(op, graph)
    if rule is not None:
        raise ModelFormatError(f"{op.type.value} '{op.name}': {rule}")


@functools.cache
def _blas_controller():  # type: ignore[no-untyped-def]
    """threadpoolctl's controller, built once: inspecting the loaded libraries costs ~1 ms a call."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class Emulator:
    """Bit-exact emulation of TFLM's int8 reference kernels on a batch.

    ``rounding="double"`` (TFLM's default build) or ``"single"`` (TFLITE_SINGLE_ROUNDING).
    Construction prepares every op (multipliers, shifts, offsets, tables) and checks what TFLM's
    Prepare checks; :meth:`run` then evaluates a batch whose leading dimension is the sample index,
    in chunks spread over ``threads`` threads (default: the CPU count).

    >>> from tinyprec.ir import INTEGER_KINDS, Graph, Op, OpType
from tinyprec.ir.support import check_op_precision
    >>> Emulator(Graph({}, [], [], []), rounding="triple")
    Traceback (most recent call last):
    ...
    tinyprec.errors.TinyprecError: rounding 'triple' is not one of double, single
    """

    def __init__(self, graph: Graph, *, rounding: str = "double", threads: int | None = None) -> None:
        if rounding not in ROUNDINGS:
            raise TinyprecError(f"rounding '{rounding}' is not one of {', '.join(ROUNDINGS)}")
        if threads is not None and threads < 1:
            raise TinyprecError(f"threads={threads}: use a positive number of threads")
        self.threads = threads or os.cpu_count() or 1
        from tinyprec.emulator.ops import PREPARE

        self.graph = graph
        self.rounding = rounding
        kind = graph.quant_kind()
        if kind not in INTEGER_KINDS:
            raise ModelFormatError(f"model '{graph.name}' cannot be emulated as an MCU int8 model: "
                                   f"{_KIND_HELP.get(kind, kind)}")
        self._check_batchable()
        available = set(graph.inputs) | {n for n, t in graph.tensors.items() if t.is_const}
        self._prepared: list[Prepared] = []
        for op in graph.ops:
            _check_op(graph, op)
            missing = [n for n in op.inputs if n is not None and n not in available]
            if missing:
                raise ModelFormatError(f"{op.type.value} '{op.name}': input '{missing[0]}' is used before "
                                       "any op produces it (ops are not in execution order)")
            prepare = PREPARE.get(op.type)
            if prepare is None:
                raise UnsupportedOpError(op.type.value, f"op '{op.name}'", "the emulator has no kernel for it")
            self._prepared.append(prepare(op, graph, rounding == "single"))
            available.update(op.outputs)
        for name in graph.outputs:
            if name not in available:
                raise ModelFormatError(f"graph output '{name}' is produced by no op")
        scratch = max((p.scratch_per_sample for p in self._prepared), default=0)
        if scratch > _MAX_SAMPLE_SCRATCH_BYTES:
            raise ModelFormatError(f"model '{graph.name}' needs {scratch >> 20} MiB of temporary buffers per sample; "
                                   "too large to emulate (is the file damaged?)")
        fit = max(_CHUNK_MIN_SAMPLES, _CHUNK_CACHE_BYTES // max(scratch, 1))
        self._chunk = max(1, min(fit, _CHUNK_SCRATCH_BYTES // max(scratch, 1)))
        self._steps: tuple[dict[str, np.ndarray], list[tuple[list[str], str, Prepared, list[str]]]] | None = None
        self._plan()

    def _check_batchable(self) -> None:
        for name, t in self.graph.tensors.items():
            if not t.is_const and (not t.shape or t.shape[0] != 1):
                raise ModelFormatError(f"tensor '{name}' has shape {t.shape}; the emulator batches along a "
                                       "leading dimension of 1, as TFLite models have")

    def input_spec(self, index: int = 0) -> tuple[tuple[int, ...], np.dtype]:
        """(shape without the batch dimension, dtype) that input ``index`` takes."""
        t = self.graph.tensors[self.graph.inputs[index]]
        return tuple(t.shape[1:]), t.dtype.numpy

    def _check_input(self, index: int, x: np.ndarray) -> np.ndarray:
        shape, dtype = self.input_spec(index)
        x = np.asarray(x)
        if x.dtype != dtype:
            raise DataError(f"input {index} has dtype {x.dtype}; the model takes {dtype} of shape "
                            f"(batch, {', '.join(map(str, shape))})")
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise DataError(f"input {index} has shape {tuple(x.shape)}; the model takes "
                            f"(batch, {', '.join(map(str, shape))}) of {dtype}")
        return np.ascontiguousarray(x)

    def _plan(self) -> tuple[dict[str, np.ndarray], list[tuple[list[str], str, Prepared, list[str]]]]:
        """Constants, and per op (input names, output name, kernel, activations it reads last), built once."""
        if self._steps is None:
            wanted = set(self.graph.outputs)
            last_use: dict[str, int] = {}
            for i, op in enumerate(self.graph.ops):
                for n in op.inputs:
                    if n is not None:
                        last_use[n] = i
            steps = []
            for i, (op, prep) in enumerate(zip(self.graph.ops, self._prepared)):
                names = [n for n in op.inputs if n is not None]
                free = [n for n in dict.fromkeys(names) if last_use.get(n) == i and n not in wanted
                        and not self.graph.tensors[n].is_const]
                steps.append((names, op.outputs[0], prep, free))
            consts = {n: t.data for n, t in self.graph.tensors.items() if t.data is not None}
            self._steps = (consts, steps)
        return self._steps

    def _evaluate(self, inputs: Sequence[np.ndarray], keep: bool) -> dict[str, np.ndarray]:
        consts, steps = self._plan()
        env: dict[str, np.ndarray] = dict(consts)
        env.update(zip(self.graph.inputs, inputs))
        for names, out, prep, free in steps:
            env[out] = prep.run([env[n] for n in names])
            if not keep:  # free activations nobody reads any more
                for n in free:
                    env.pop(n, None)
        return env

    def run_all(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every graph output for a batch of every graph input (batch first)."""
        if len(inputs) != len(self.graph.inputs):
            raise DataError(f"the model takes {len(self.graph.inputs)} input(s), got {len(inputs)}")
        xs = [self._check_input(i, x) for i, x in enumerate(inputs)]
        n = xs[0].shape[0] if xs else 0
        if any(x.shape[0] != n for x in xs):
            raise DataError("all inputs must have the same batch size")
        size = max(1, min(self._chunk, n))
        if self.threads > 1 and n >= 4 * self.threads:  # equal chunks, a multiple of the thread count
            rounds = -(-n // (self.threads * size))
            size = -(-n // (self.threads * rounds))
        starts = list(range(0, max(n, 1), size))

        def chunk(start: int) -> list[np.ndarray]:
            env = self._evaluate([x[start:start + size] for x in xs], keep=False)
            return [env[name] for name in self.graph.outputs]

        with _blas_controller().limit(limits=1, user_api="blas"):  # parallel over chunks, not inside GEMMs
            if len(starts) > 1 and self.threads > 1:
                with ThreadPoolExecutor(max_workers=self.threads) as pool:
                    results = list(pool.map(chunk, starts))
            else:
                results = [chunk(s) for s in starts]
        return [np.concatenate([r[k] for r in results], axis=0) for k in range(len(self.graph.outputs))]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Output 0 for a batch of input 0 (int8 or int16 as the model takes, batch first); one input only."""
        return self.run_all([x])[0]

    def run_with_taps(self, x: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Every activation tensor (graph inputs, intermediates, outputs) by IR name, batch first."""
        xs = [x] if isinstance(x, np.ndarray) else list(x)
        if len(xs) != len(self.graph.inputs):
            raise DataError(f"the model takes {len(self.graph.inputs)} input(s), got {len(xs)}")
        checked = [self._check_input(i, v) for i, v in enumerate(xs)]
        env = self._evaluate(checked, keep=True)
        return {n: v for n, v in env.items() if not self.graph.tensors[n].is_const}

    def tap_sources(self) -> dict[str, str | None]:
        """The PyTorch module each activation tensor came from (None where unknown, e.g. foreign files)."""
        return {n: t.source for n, t in self.graph.tensors.items() if not t.is_const}

    def macs(self) -> dict[str, int]:
        """Multiply-accumulates per sample of each op (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED;
        0 for the others), by op name in execution order (``#<index>`` appended to a repeated name)."""
        result: dict[str, int] = {}
        for i, (op, p) in enumerate(zip(self.graph.ops, self._prepared)):
            key = op.name or f"{op.type.value}_{i}"
            result[key if key not in result else f"{key}#{i}"] = p.macs
        return result
