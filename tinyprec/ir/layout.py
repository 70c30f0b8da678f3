"""Layout conversion between PyTorch tensors (NCHW / NCL / NF) and the IR's NHWC tensors (numpy only).

The IR stores a 4-D activation ``[N, C, H, W]`` as ``[N, H, W, C]``, a 3-D (conv1d) activation
``[N, C, L]`` as ``[N, 1, L, C]`` and a 2-D activation unchanged. Graph inputs and outputs follow the
same rule; ``lower_to_ir`` records the PyTorch layout of each in ``graph.metadata``
(``input_layout`` / ``output_layout``: "NCHW", "NCL" or "NF").
"""

from __future__ import annotations

import numpy as np

LAYOUT_BY_RANK: dict[int, str] = {4: "NCHW", 3: "NCL", 2: "NF"}


def layout_of_rank(rank: int) -> str:
    """The PyTorch layout name of a tensor of this rank ("NCHW", "NCL" or "NF")."""
    return LAYOUT_BY_RANK[rank]


def ir_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The IR (NHWC) shape of an activation with this PyTorch shape.

    >>> ir_shape((1, 8, 5, 7))
    (1, 5, 7, 8)
    >>> ir_shape((1, 8, 40))
    (1, 1, 40, 8)
    >>> ir_shape((1, 10))
    (1, 10)
    """
    if len(torch_shape) == 4:
        n, c, h, w = torch_shape
        return (n, h, w, c)
    if len(torch_shape) == 3:
        n, c, length = torch_shape
        return (n, 1, length, c)
    return tuple(torch_shape)


def to_ir_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Convert a batch in PyTorch layout (``layout`` as recorded in graph.metadata) to the IR layout."""
    if layout == "NCHW":
        return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    if layout == "NCL":
        return np.ascontiguousarray(np.transpose(x, (0, 2, 1))[:, None, :, :])
    return np.ascontiguousarray(x)


def from_ir_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Convert a batch in the IR layout back to PyTorch layout (inverse of :func:`to_ir_layout`)."""
    if layout == "NCHW":
        return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    if layout == "NCL":
        return np.ascontiguousarray(np.transpose(x[:, 0, :, :], (0, 2, 1)))
    return np.ascontiguousarray(x)


def storage_order(torch_shape: tuple[int, ...]) -> np.ndarray:
    """For each position of the IR tensor's row-major storage, the flat PyTorch index it holds (batch 1)."""
    idx = np.arange(int(np.prod(torch_shape)), dtype=np.int64).reshape(torch_shape)
    if len(torch_shape) in (3, 4):
        idx = to_ir_layout(idx, LAYOUT_BY_RANK[len(torch_shape)])
    return idx.reshape(-1)
