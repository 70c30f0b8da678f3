"""Helpers shared by the emulator's prepare functions: qparams access, activation clamps, padding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinyprec.errors import ModelFormatError
from tinyprec.ir import Activation, DType, Graph, Op, Padding, Tensor
from tinyprec.ir.qparams import round_half_away


@dataclass(frozen=True)
class Prepared:
    """One prepared op: ``run`` maps its batched inputs (constants as stored) to its batched output.

    ``macs`` counts multiply-accumulates per sample; ``scratch_per_sample`` is the bytes of temporary
    buffers one sample needs (the interpreter sizes its batch chunks from it).
    """

    run: Callable[[list[np.ndarray]], np.ndarray]
    macs: int = 0
    scratch_per_sample: int = 0


def fail(op: Op, what: str) -> ModelFormatError:
    """A one-line error naming the op (and its PyTorch module, when known)."""
    source = f" ({op.source})" if op.source else ""
    return ModelFormatError(f"{op.type.value} '{op.name}'{source}: {what}")


def broadcast_check(op: Op, graph: Graph) -> None:
    """A binary op's input shapes broadcast to its output shape (TFLM's Prepare), else ModelFormatError."""
    a, b = (graph.tensors[n].shape for n in op.inputs[:2])  # type: ignore[index]
    y = graph.tensors[op.outputs[0]].shape
    try:
        shape = np.broadcast_shapes(a, b)
    except ValueError:
        raise fail(op, f"input shapes {a} and {b} do not broadcast") from None
    if tuple(shape) != tuple(y):
        raise fail(op, f"output shape {y} is not the broadcast shape {tuple(shape)}")


def per_tensor(op: Op, t: Tensor) -> tuple[float, int]:
    """(scale as float32 widened to float, zero point) of a per-tensor quantized tensor."""
    q = t.qparams
    if q is None or q.scale.size != 1:
        raise fail(op, f"tensor '{t.name}' must be quantized per-tensor")
    scale = float(q.scale[0])
    if not np.isfinite(scale) or scale <= 0:
        raise fail(op, f"tensor '{t.name}' has scale {scale}; it must be positive")
    zp = int(q.zero_point[0])
    if not -128 <= zp <= 127 and t.dtype.value == "int8":
        raise fail(op, f"tensor '{t.name}' has zero point {zp} outside the int8 range")
    return scale, zp


def int_data(op: Op, graph: Graph, index: int) -> np.ndarray:
    """The integer constant data of input ``index`` (axes, paddings, constant values)."""
    name = op.inputs[index] if index < len(op.inputs) else None
    t = graph.tensors[name] if name is not None else None
    if t is None or t.data is None or t.data.dtype.kind not in "iu":
        raise fail(op, f"input {index} must be an integer constant")
    return t.data.astype(np.int64)


def sample_shape(t: Tensor) -> tuple[int, ...]:
    """A tensor's shape without its leading batch dimension."""
    return tuple(t.shape[1:])


def act_range(op: Op, activation: Activation, scale: float, zero_point: int,
              dtype: DType = DType.INT8) -> tuple[int, int]:
    """TFLM CalculateActivationRangeQuantized for int8 (or int16) outputs."""

    def quantize(f: float) -> int:
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))

    lo, hi = (-32768, 32767) if dtype is DType.INT16 else (-128, 127)
    if activation is Activation.RELU:
        lo = max(lo, quantize(0.0))
    elif activation is Activation.RELU6:
        lo, hi = max(lo, quantize(0.0)), min(hi, quantize(6.0))
    elif activation is Activation.RELU_N1_TO_1:
        lo, hi = max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    if lo > hi:
        raise fail(op, f"fused {activation.value} leaves an empty output range [{lo}, {hi}]")
    return lo, hi


@dataclass(frozen=True)
class Geometry:
    out_h: int
    out_w: int
    pad_h: int
    pad_w: int


def _out_size(padding: Padding, size: int, filt: int, stride: int, dilation: int) -> int:
    effective = (filt - 1) * dilation + 1
    if padding is Padding.SAME:
        return (size + stride - 1) // stride
    return (size + stride - effective) // stride


def _pad(stride: int, dilation: int, size: int, filt: int, out: int) -> int:
    effective = (filt - 1) * dilation + 1
    return max((out - 1) * stride + effective - size, 0) // 2


def pool_geometry(op: Op, in_h: int, in_w: int, filt_h: int, filt_w: int, stride_h: int, stride_w: int,
                  dil_h: int, dil_w: int, padding: Padding) -> Geometry:
    """Output size and leading padding as TFLM's ComputePaddingHeightWidth computes them."""
    out_h = _out_size(padding, in_h, filt_h, stride_h, dil_h)
    out_w = _out_size(padding, in_w, filt_w, stride_w, dil_w)
    if out_h <= 0 or out_w <= 0:
        raise fail(op, f"a {filt_h}x{filt_w} window does not fit a {in_h}x{in_w} input")
    return Geometry(out_h, out_w, _pad(stride_h, dil_h, in_h, filt_h, out_h), _pad(stride_w, dil_w, in_w, filt_w, out_w))
