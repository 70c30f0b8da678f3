"""Prepare steps of the int16 (16x8) kernels: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, SOFTMAX, LOGISTIC,
TANH, and QUANTIZE between int8 and int16; the other ops share their prepare with int8 (:mod:`ops`).

What each computes follows TFLM's Prepare and reference kernels for int16 inputs (read, not copied):
int64 accumulators and bias with the reduced 16-bit output multiplier; SOFTMAX through TFLM's two
513-entry interpolated tables (exp and 1/(1+x)), built in float32 as TFLM builds them; LOGISTIC and
TANH through TFLM's 256-entry sigmoid table with interpolation, evaluated here for all 65,536 inputs
at prepare time. The float32 steps use the C library's ``expf``/``logf``, as TFLM does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import numpy as np

from tinyprec.emulator import fastpath, kernels16
from tinyprec.emulator.common import Prepared, fail, per_tensor
from tinyprec.emulator.int16_tables import sigmoid_table
from tinyprec.ir import DType, Graph, Op, quantize_multiplier

INT16_MIN, INT16_MAX = -32768, 32767


@functools.lru_cache(maxsize=1)
def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    for fn in ("expf", "logf"):
        getattr(lib, fn).restype = ctypes.c_float
        getattr(lib, fn).argtypes = [ctypes.c_float]
    return lib


def _expf(x: np.float32) -> np.float32:
    lib = _libm()
    return np.float32(lib.expf(float(x))) if lib is not None else np.float32(np.exp(np.float32(x)))


def _logf(x: float) -> np.float32:
    lib = _libm()
    return np.float32(lib.logf(float(x))) if lib is not None else np.float32(np.log(np.float32(x)))


def _roundf(x: np.float32) -> np.float32:
    """std::round on a float: half away from zero, exactly (x - trunc(x) is exact)."""
    t = np.trunc(x)
    if abs(x - t) >= np.float32(0.5):
        t = t + np.float32(math.copysign(1.0, float(x)))
    return np.float32(t)


def checked_log2(x: float) -> tuple[bool, int]:
    """TFLM CheckedLog2 in float32: (is a power of two within 1e-3 in log2, rounded log2)."""
    log2 = np.float32(_logf(x) * (np.float32(1.0) / _logf(2.0)))
    rounded = _roundf(log2)
    return bool(abs(np.float32(log2 - rounded)) < np.float32(1e-3)), int(rounded)


def lut16(fn: object, input_scale: np.float32, input_zp: int, output_scale: np.float32, output_zp: int) -> np.ndarray:
    """TFLM's 513-entry int16 lookup table of ``fn`` (float32 -> float32), built in float32 as TFLM does:
    512 samples each corrected by half the error of the interpolated midpoint, plus the end point."""
    f32 = np.float32
    func = fn  # type: ignore[assignment]
    in_min = f32(input_scale * f32(INT16_MIN - input_zp))
    in_max = f32(input_scale * f32(INT16_MAX - input_zp))
    out_min = f32(output_scale * f32(INT16_MIN - output_zp))
    out_max = f32(output_scale * f32(INT16_MAX - output_zp))
    step = f32((in_max - in_min) / f32(512))
    half = f32(step / f32(2))
    inv = f32(f32(65536) / f32(out_max - out_min))
    lut = np.empty(513, np.int16)
    for i in range(512):
        at = f32(in_min + f32(f32(i) * step))
        val = func(at)  # type: ignore[operator]
        mid = func(f32(at + half))  # type: ignore[operator]
        nxt = func(f32(in_min + f32(f32(i + 1) * step)))  # type: ignore[operator]
        sample = _roundf(f32(val * inv))
        interp = _roundf(f32(f32(f32(nxt * inv) + sample) / f32(2)))
        err = f32(interp - _roundf(f32(mid * inv)))
        bias = _roundf(f32(err / f32(2)))
        lut[i] = int(min(max(f32(sample - bias), f32(INT16_MIN)), f32(INT16_MAX)))
    lut[512] = int(min(max(_roundf(f32(func(in_max) * inv)), f32(INT16_MIN)), f32(INT16_MAX)))  # type: ignore[operator]
    return lut


@functools.lru_cache(maxsize=1)
def softmax_luts() -> tuple[np.ndarray, np.ndarray]:
    """(exp on [-10, 0], 1/(1+x) on [0, 1]) tables of TFLM's int16 SOFTMAX."""
    rng = np.float32(65535)
    exp_lut = lut16(_expf, np.float32(10.0) / rng, INT16_MAX, np.float32(2.0) / rng, 0)
    recip_lut = lut16(lambda v: np.float32(np.float32(1.0) / np.float32(np.float32(1.0) + v)),
                      np.float32(1.0) / rng, INT16_MIN, np.float32(2.0) / rng, 0)
    return exp_lut, recip_lut


def _io(op: Op, graph: Graph) -> tuple[float, int, float, int]:
    si, zi = per_tensor(op, graph.tensors[op.inputs[0]])  # type: ignore[index]
    so, zo = per_tensor(op, graph.tensors[op.outputs[0]])
    return si, zi, so, zo


def prepare_softmax16(op: Op, graph: Graph, single: bool) -> Prepared:
    si, zi, so, zo = _io(op, graph)
    if zi != 0 or zo != 0 or abs(so - 1.0 / 32768) > 0.001 / 32768:
        raise fail(op, "int16 SOFTMAX needs zero points 0 and output scale 1/32768")
    beta = float(np.float32(op.options.beta))  # type: ignore[union-attr]
    mult, shift = quantize_multiplier(si * beta / (10.0 / 65535.0), single)
    exp_lut, recip_lut = softmax_luts()

    def run(args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        return kernels16.softmax16(flat, exp_lut, recip_lut, mult, shift, single).reshape(x.shape)

    return Prepared(run)


def _input_scaling(si: float, is_tanh: bool) -> tuple[int, int]:
    """TFLM's int16 LOGISTIC/TANH input (multiplier, left shift): 3 << shift for power-of-two scales.
    ValueError when TFLM's Prepare refuses the scale."""
    pot, log2 = checked_log2(si)
    left = (15 - 3) + log2
    pot = pot and (left in (0, 1) if is_tanh else left == 0)
    if pot:
        return 3 << left, 0
    m = si * 4096.0 * 3.0
    left = 0
    while m <= 32767.0 / 2.0 and left <= 30:
        left += 1
        m *= 2.0
    if int(m) > 32767:
        raise ValueError(f"input scale {si:.6g} is too large for TFLM's int16 {'TANH' if is_tanh else 'LOGISTIC'} "
                         "(multiplier > 32767)")
    return int(m), left


def sigmoid_tanh_table16(si: float, is_tanh: bool) -> np.ndarray:
    """The int16 -> int16 LOGISTIC or TANH result (zero points 0, output scale 1/32768) for every input
    -32768..32767, as TFLM's reference kernel computes it; shared with the TFLM-exact program."""
    mult, left = _input_scaling(si, is_tanh)
    table = sigmoid_table().astype(np.int64)
    x = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    data = (x * mult + ((1 << (left - 1)) if left > 0 else 0)) >> left
    mag = np.abs(data)
    bits = 8 if is_tanh else 9
    hi = mag >> bits
    idx = np.minimum(hi, 254)
    ua, ub = table[idx], table[idx + 1]
    frac = mag & ((1 << bits) - 1)
    if is_tanh:
        res = np.where(hi >= 255, 0xFFFF << 8, (ua << 8) + frac * (ub - ua))
        res = np.where(data >= 0, res - (1 << 23) + (1 << 7), -res + (1 << 23) + (1 << 7) - 1) >> 8
    else:
        res = np.where(hi >= 255, 0x7FFF << 10, (ua << 9) + frac * (ub - ua))
        res = np.where(data >= 0, res + (1 << 9), (1 << 25) - res + (1 << 9) - 1) >> 10
    return ((res + 32768) % 65536 - 32768).astype(np.int16)


def fixed_function_table16(op: Op, graph: Graph, is_tanh: bool) -> np.ndarray:
    """The int16 -> int16 LOGISTIC or TANH result for every input, as TFLM's reference kernel computes it."""
    si, zi, so, zo = _io(op, graph)
    if zi != 0 or zo != 0:
        raise fail(op, f"int16 {op.type.value} needs zero points 0")
    pot, log2 = checked_log2(so)
    if not pot or log2 != -15:
        raise fail(op, f"int16 {op.type.value} output scale must be 1/32768")
    try:
        return sigmoid_tanh_table16(si, is_tanh)
    except ValueError as err:
        raise fail(op, str(err)) from None


def prepare_fixed16(op: Op, graph: Graph, single: bool, is_tanh: bool) -> Prepared:
    table = fixed_function_table16(op, graph, is_tanh)
    return Prepared(lambda args: table[args[0].astype(np.int32) + 32768])


def prepare_requantize_table(op: Op, graph: Graph, single: bool) -> Prepared:
    """QUANTIZE int8/int16 -> int8/int16 (TFLM Requantize), as a table over every input value."""
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]  # type: ignore[index]
    si, zi, so, zo = _io(op, graph)
    for t, z in ((x, zi), (y, zo)):
        if t.dtype is DType.INT16 and z != 0:
            raise fail(op, f"int16 tensor '{t.name}' needs zero point 0")
    mult, shift = quantize_multiplier(si / so, single)
    info_in, info_out = np.iinfo(x.dtype.numpy), np.iinfo(y.dtype.numpy)
    values = np.arange(info_in.min, info_in.max + 1, dtype=np.int64) - zi
    table = np.empty(values.size, y.dtype.numpy)
    kernels16.requantize_into(values, mult, shift, zo, int(info_out.min), int(info_out.max), single, table)
    base = -int(info_in.min)
    return Prepared(lambda args: table[args[0].astype(np.int32) + base])


def prepare_float_quantize16(op: Op, graph: Graph, single: bool) -> Prepared:
    """QUANTIZE float32 -> int16 (TFLM AffineQuantize: round half away, clamp)."""
    so, zo = per_tensor(op, graph.tensors[op.outputs[0]])
    scale = np.float32(so)

    def run(args: list[np.ndarray]) -> np.ndarray:
        v = (np.nan_to_num(args[0].astype(np.float32)) / scale).astype(np.float64)
        r = np.sign(v) * np.floor(np.abs(v) + 0.5)
        return np.clip(np.clip(r, -2.0**31, 2.0**31 - 1) + zo, INT16_MIN, INT16_MAX).astype(np.int16)

    return Prepared(run)


def gemm_requant(acc: np.ndarray, bias: np.ndarray, red: tuple[np.ndarray, np.ndarray], lo: int, hi: int) -> np.ndarray:
    """(rows, channels) exact sums -> int16 with the int64 bias and the reduced multipliers ``red``."""
    out = np.empty(acc.shape, np.int16)
    kernels16.requant64(acc, bias, red[0], red[1], lo, hi, out)
    return out


def im2col64(xb: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, pad_h: int, pad_w: int,
             out_h: int, out_w: int) -> np.ndarray:
    """Convolution windows of int16 NHWC as a float64 matrix (padding taps 0: the int16 zero point)."""
    return fastpath.im2col_f32(xb, kh, kw, sh, sw, dh, dw, pad_h, pad_w, out_h, out_w, 0).astype(np.float64)
