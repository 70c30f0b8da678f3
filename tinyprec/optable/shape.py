"""Argument checks of issue 11's shape ops for :data:`tinyprec.optable.table.OPS` (torch-free).

Each returns the broken rule (one sentence, what to use instead) or None. A check reads only
``node.args``, ``node.kwargs`` and ``node.meta['val'].shape``, as the op check runs them before training.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _shape(value: Any) -> tuple[int, ...] | None:
    val = getattr(value, "meta", {}).get("val") if value is not None else None
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:  # a symbolic size (the dynamic batch) is only ever dim 0
        return tuple(-1 if i == 0 else int(d) for i, d in enumerate(shape))


def torch_nearest_indices(in_size: int, out_size: int, scale: float | None, exact: bool) -> np.ndarray:
    """The source index PyTorch's upsample_nearest (``exact``: nearest-exact) reads per output position:
    floor((dst [+ 0.5]) * s) in float32, s = 1/scale_factor when one is given, else in/out; clamped."""
    f32 = np.float32
    s = f32(1.0 / scale) if scale else f32(in_size) / f32(out_size)
    pos = (np.arange(out_size).astype(f32) + f32(0.5 if exact else 0.0)) * s
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def _scales(node: Any, index: int) -> list[float | None]:
    scales = node.args[index] if len(node.args) > index else node.kwargs.get("scale_factors")
    return [float(s) for s in scales] if scales else [None, None]


def check_nearest(node: Any) -> str | None:
    from tinyprec.ir.shape_rules import nearest_indices

    x, y = _shape(node.args[0]), _shape(node)
    if x is None or y is None:
        return None
    if len(x) not in (3, 4):
        return f"nearest upsampling of a rank-{len(x)} tensor: only (N, C, H, W) and (N, C, L) maps"
    exact = "nearest_exact" in str(node.target)
    for axis, scale in zip(range(2, len(x)), _scales(node, 2)):
        torch_idx = torch_nearest_indices(x[axis], y[axis], scale, exact)
        tflm_idx = nearest_indices(x[axis], y[axis], False, exact)
        if not np.array_equal(torch_idx, tflm_idx):
            return (f"PyTorch and TFLM pick different source pixels for {x[axis]} -> {y[axis]} (scale factor "
                    f"{scale}); use an integer scale factor or size=(h, w)")
    return None


def check_conv_transpose(node: Any) -> str | None:
    def arg(i: int, name: str, default: Any) -> Any:
        return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)

    x = _shape(node.args[0])
    if x is not None and len(x) not in (3, 4):
        return f"transposed convolution of a rank-{len(x)} input: only (N, C, L) and (N, C, H, W)"
    if int(arg(6, "groups", 1)) != 1:
        return "grouped ConvTranspose2d has no TFLM op; use groups=1"
    dilation = arg(7, "dilation", 1)
    if any(int(d) != 1 for d in (dilation if isinstance(dilation, (list, tuple)) else [dilation])):
        return "dilated ConvTranspose2d has no TFLM op; use dilation=1"
    return None


def check_matmul(node: Any) -> str | None:
    if len(node.args) < 2 or not all(hasattr(a, "meta") and hasattr(a, "users") for a in node.args[:2]):
        return "matmul with a constant operand: use a Linear layer (matmul only between two activations)"
    shapes = [_shape(a) for a in node.args[:2]]
    ranks = tuple(len(s) if s is not None else "?" for s in shapes)
    if ranks not in ((3, 3), (4, 4)) and "?" not in ranks:
        return (f"matmul of ranks {ranks}: only (N, M, K) @ (N, K, P), or (N, H, M, K) @ (N, H, K, P) for heads "
                "split with view/transpose")
    return None


def check_bilinear(node: Any) -> str | None:
    x, y = _shape(node.args[0]), _shape(node)
    if x is None or y is None:
        return None
    if len(x) not in (3, 4):
        return f"linear upsampling of a rank-{len(x)} tensor: only (N, C, H, W) and (N, C, L) maps"
    align = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("align_corners", False))
    for axis, scale in zip(range(2, len(x)), _scales(node, 3)):
        if not align and scale is not None and x[axis] * scale != y[axis]:
            return (f"scale factor {scale} does not map {x[axis]} pixels onto {y[axis]} exactly (PyTorch then "
                    "samples at 1/scale, TFLM at in/out); use size=(h, w) or an exact scale factor")
    return None
