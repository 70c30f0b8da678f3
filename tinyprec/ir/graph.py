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

    def producers(self) -> dict[str, Op]:
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        result: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                if name is not None:
                    result.setdefault(name, []).append(op)
        return result
