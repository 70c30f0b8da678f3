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
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT32 = "float32"
    UINT8 = "uint8"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)


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
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.numpy.itemsize


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
        """Bytes of constant data (weights, biases, shape vectors): the floor of a model's flash."""
        return sum(int(t.data.nbytes) for t in self.tensors.values() if t.data is not None)

    def op_types(self) -> list[OpType]:
        """The distinct op types used, in first-use order."""
        seen: list[OpType] = []
        for op in self.ops:
            if op.type not in seen:
                seen.append(op.type)
        return seen

    def quant_kind(self) -> str:
        """How the model is quantized, judged from its ops' tensors.

        ``"int8"``: every op computes on int8 activations (QUANTIZE/DEQUANTIZE may convert at the edges);
        ``"float"``: float activations and float weights; ``"hybrid"``: float activations with int8
        weights (dynamic-range quantization); ``"int16x8"``: int16 activations; ``"uint8"``: legacy
        uint8 quantization; ``"mixed"``: anything else.
        """
        act_types: set[DType] = set()
        weight_types: set[DType] = set()
        for op in self.ops:
            edge = op.type.value in ("QUANTIZE", "DEQUANTIZE")
            for name in (*op.inputs, *op.outputs):
                t = self.tensors.get(name) if name is not None else None
                if t is None:
                    continue
                if t.is_const:
                    if t.dtype in (DType.INT8, DType.UINT8, DType.FLOAT32, DType.INT16):
                        weight_types.add(t.dtype)
                elif not (edge and t.dtype is DType.FLOAT32):
                    act_types.add(t.dtype)
        if act_types <= {DType.INT8, DType.INT32}:
            return "int8" if DType.INT8 in act_types else ("float" if not act_types else "mixed")
        if act_types <= {DType.FLOAT32, DType.INT32}:
            quantized = weight_types & {DType.INT8, DType.UINT8, DType.INT16}
            return "hybrid" if quantized else "float"
        if DType.INT16 in act_types and act_types <= {DType.INT16, DType.INT8, DType.INT32}:
            return "int16x8"
        if act_types <= {DType.UINT8, DType.INT32}:
            return "uint8"
        return "mixed"

    def producers(self) -> dict[str, Op]:
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        result: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                if name is not None:
                    result.setdefault(name, []).append(op)
        return result
