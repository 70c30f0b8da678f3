"""The quantized-graph IR: tensors with qparams, ops from :class:`OpType`, NHWC layout.

One ``Graph`` is the single source of truth that the TFLite writer, the ONNX writer,
the emulator and the validation read. It imports no torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from tinyprec.ir.ops import OpOptions, OpType
from tinyprec.ir.qparams import QParams


class DType(enum.Enum):
    """Element types. ``INT4`` constants hold unpacked int8 values in [-7, 7]; files pack two per byte."""

    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT32 = "float32"
    UINT8 = "uint8"
    INT4 = "int4"

    @property
    def numpy(self) -> np.dtype:
        """The numpy storage type: INT4 is held unpacked, one value in [-7, 7] per int8."""
        return np.dtype(np.int8) if self is DType.INT4 else np.dtype(self.value)

    @property
    def bits(self) -> int:
        """Bits per element in a file (INT4: 4, packed two per byte)."""
        return 4 if self is DType.INT4 else self.numpy.itemsize * 8


# Graph.quant_kind values that an MCU runs as integer kernels (int8, int16x8, and both mixed per layer).
INTEGER_KINDS = frozenset({"int8", "int16x8", "int8+int16"})


@dataclass(eq=False)
class Tensor:
    """A tensor of the graph. ``data`` is set for constants (weights, bias, shapes).

    ``shape`` has the batch dimension first for activations (1 in a written file;
    the emulator batches along it). ``source`` names the PyTorch module that produced it, when known.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType
    qparams: QParams | None = None
    data: np.ndarray | None = None
    source: str | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        """Bytes in a file: INT4 packs two values per byte (ceil(n / 2))."""
        n = int(np.prod(self.shape, dtype=np.int64))
        return (n + 1) // 2 if self.dtype is DType.INT4 else n * self.dtype.numpy.itemsize


@dataclass(eq=False)
class Op:
    """One operator. ``inputs`` may hold ``None`` for an absent optional input (a missing bias)."""

    type: OpType
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    options: OpOptions
    name: str = ""
    source: str | None = None


@dataclass(eq=False)
class Graph:
    """A whole model: tensors by name, ops in execution order, graph inputs and outputs."""

    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    name: str = "model"
    metadata: dict[str, str] = field(default_factory=dict)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def const_bytes(self) -> int:
        """Bytes of constant data (weights, biases, shape vectors) as stored in a file (INT4 packed):
        the floor of a model's flash."""
        total = 0
        for t in self.tensors.values():
            if t.data is not None:
                total += (int(t.data.size) + 1) // 2 if t.dtype is DType.INT4 else int(t.data.nbytes)
        return total

    def op_types(self) -> list[OpType]:
        """The distinct op types used, in first-use order."""
        seen: list[OpType] = []
        for op in self.ops:
            if op.type not in seen:
                seen.append(op.type)
        return seen

    def quant_kind(self) -> str:
        """How the model is quantized, judged from its ops' tensors.

        ``"int8"``: every op computes on int8 activations (weights int8 or INT4; QUANTIZE/DEQUANTIZE may
        convert float at the edges); ``"int16x8"``: every op computes on int16 activations (int8 weights);
        ``"int8+int16"``: integer ops on int8 and on int16 activations, joined by QUANTIZE int8<->int16
        (per-layer mixed precision); these three are :data:`INTEGER_KINDS`, the ones an MCU runs as integer
        kernels. ``"float"``: float activations and float weights; ``"hybrid"``: float activations with
        integer weights (dynamic-range quantization); ``"uint8"``: legacy uint8 quantization; ``"mixed"``:
        anything else. :meth:`precision` says which weight and activation widths occur.
        """
        act_types, weight_types = self._types()
        if not act_types:
            return "float"
        if act_types == {DType.INT32}:
            return "mixed"
        if act_types <= {DType.INT8, DType.INT16, DType.INT32} and act_types & {DType.INT8, DType.INT16}:
            if DType.INT16 not in act_types:
                return "int8"
            return "int16x8" if DType.INT8 not in act_types else "int8+int16"
        if act_types <= {DType.FLOAT32, DType.INT32}:
            quantized = weight_types & {DType.INT8, DType.UINT8, DType.INT16, DType.INT4}
            return "hybrid" if quantized else "float"
        if act_types <= {DType.UINT8, DType.INT32}:
            return "uint8"
        return "mixed"

    def precision(self) -> str:
        """The weight and activation widths of the compute ops, e.g. ``"w8a8"``, ``"w4a8"``, ``"w4/8a8/16"``."""
        weights: set[int] = set()
        acts: set[int] = set()
        for op in self.ops:
            if op.type.value in ("QUANTIZE", "DEQUANTIZE"):
                continue
            for i, name in enumerate(op.inputs):
                t = self.tensors.get(name) if name is not None else None
                if t is None:
                    continue
                if t.is_const and i == 1 and t.dtype in (DType.INT8, DType.INT4):
                    weights.add(t.dtype.bits)
                elif not t.is_const and t.dtype in (DType.INT8, DType.INT16):
                    acts.add(t.dtype.bits)
        w = "/".join(str(b) for b in sorted(weights)) or "-"
        a = "/".join(str(b) for b in sorted(acts)) or "-"
        return f"w{w}a{a}"

    def _types(self) -> tuple[set[DType], set[DType]]:
        act_types: set[DType] = set()
        weight_types: set[DType] = set()
        for op in self.ops:
            edge = op.type.value in ("QUANTIZE", "DEQUANTIZE")
            for name in (*op.inputs, *op.outputs):
                t = self.tensors.get(name) if name is not None else None
                if t is None:
                    continue
                if t.is_const:
                    if t.dtype in (DType.INT8, DType.UINT8, DType.FLOAT32, DType.INT16, DType.INT4):
                        weight_types.add(t.dtype)
                elif not (edge and t.dtype is DType.FLOAT32):
                    act_types.add(t.dtype)
        return act_types, weight_types

    def producers(self) -> dict[str, Op]:
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        result: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                if name is not None:
                    result.setdefault(name, []).append(op)
        return result
