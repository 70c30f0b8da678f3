"""STRIDED_SLICE's per-axis ranges as TFLite computes them (strided_slice_logic.h StartForAxis/StopForAxis),
shared by the emulator and the ONNX writer so both read a slice as TFLM does."""

from __future__ import annotations

from collections.abc import Sequence

_LOWEST, _MAX = -(1 << 31), (1 << 31) - 1


def _clamp(v: int, lo: int, hi: int) -> int:
    return min(max(v, lo), hi)


def slice_ranges(shape: Sequence[int], begin: Sequence[int], end: Sequence[int], strides: Sequence[int],
                 begin_mask: int, end_mask: int, shrink_axis_mask: int) -> list[tuple[int, int, int, bool]]:
    """(start, stop, stride, shrink) per axis: the output holds range(start, stop, stride) of each axis,
    shrunk axes dropped. Raises ValueError for a zero stride."""
    out = []
    for axis, size in enumerate(shape):
        stride = int(strides[axis])
        if stride == 0:
            raise ValueError(f"stride of axis {axis} is zero")
        if size == 0:
            out.append((0, 0, stride, bool(shrink_axis_mask >> axis & 1)))
            continue
        start = int(begin[axis])
        if begin_mask >> axis & 1:
            start = _LOWEST if stride > 0 else _MAX
        if start < 0:
            start += size
        start = _clamp(start, 0, size) if stride > 0 else _clamp(start, -1, size - 1)
        shrink = bool(shrink_axis_mask >> axis & 1)
        if shrink:
            stop = start + 1
        else:
            stop = int(end[axis])
            if end_mask >> axis & 1:
                stop = _MAX if stride > 0 else _LOWEST
            if stop < 0:
                stop += size
            stop = _clamp(stop, 0, size) if stride > 0 else _clamp(stop, -1, size - 1)
        out.append((start, stop, stride, shrink))
    return out


def sliced_shape(ranges: Sequence[tuple[int, int, int, bool]]) -> tuple[int, ...]:
    """The output shape of :func:`slice_ranges`' result."""
    return tuple(len(range(a, b, s)) for a, b, s, shrink in ranges if not shrink)
