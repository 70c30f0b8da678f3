"""tflm_exact for 16-bit activations and for the QUANTIZE ops between int8 and int16 regions.

TFLM's 16x8 kernels (read from tensorflow/tflite-micro, reference integer_ops conv.h / depthwise_conv.h /
fully_connected.h with an INT64 bias, and common.cc):

* CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: int64 accumulator sum(x * w) + bias (input zero point 0),
  then the int64 ``MultiplyByQuantizedMultiplier``: the q31 multiplier reduced to 16 bits
  (``(m + 2**15) >> 16``, or 0x7FFF at the top), one rounding ``(acc * m16 + 2**(14 - shift)) >> (15 - shift)``,
  truncated to int32, then the zero point and the activation clamp in [-32768, 32767];
* ADD and SUB: as int8 but the inputs are shifted left by 15 instead of 20 (add_common.cc, sub_common.cc);
  MUL and AVERAGE_POOL_2D:
  the int8 arithmetic on int16 values (zero points 0);
* LOGISTIC / TANH (int16 in and out, an unrolled recurrent layer's gates): the emulator's table of TFLM's
  interpolated int16 sigmoid;
* QUANTIZE int8 <-> int16 (and int8 -> int8): ``Requantize``, the int32 double-rounding multiplier of
  input_scale / output_scale (in double) applied to ``x - input_zero_point``, plus the output zero point,
  saturated to the output type.

INT4 weights need nothing here: TFLM unpacks them to int8 and runs the int8 kernels, so the int8 rewrite
in :mod:`tinyprec.quant.exact` computes them exactly with values in [-7, 7].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.quant.exact_int import act_range, encode, mbqm, wrap32

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx

_BOUNDS = {"int8": (-128, 127), "int16": (-32768, 32767)}


def _dtype_name(dtype: Any) -> str | None:
    text = str(dtype).removeprefix("torch.")
    return text if text in _BOUNDS else None


def act_range16(act: str, scale: float, zp: int) -> tuple[int, int]:
    """TFLM CalculateActivationRangeQuantized for an int16 output."""
    return act_range(act, scale, zp, _BOUNDS["int16"])


def mbqm64(x: "torch.Tensor", mult: "torch.Tensor", shift: "torch.Tensor") -> "torch.Tensor":
    """TFLM's int64 MultiplyByQuantizedMultiplier: 16-bit reduced multiplier, one rounding, int32 result."""
    import torch

    reduced = torch.where(mult < 0x7FFF0000, (mult + (1 << 15)) >> 16, torch.full_like(mult, 0x7FFF))
    total = 15 - shift
    return wrap32((x * reduced + (torch.ones_like(total) << (total - 1))) >> total)


def _modules(base_mods: dict[str, type]) -> dict[str, type]:
    import torch

    weighted, add, mul, avgpool = base_mods["weighted"], base_mods["add"], base_mods["mul"], base_mods["avgpool"]

    class ExactWeighted16(weighted):  # type: ignore[misc, valid-type]
        """16x8 CONV_2D / DEPTHWISE_CONV_2D (conv1d, conv2d, linear as a conv) with an INT64 bias."""

        wide = True

        def __init__(self, fn: Any, rest: tuple, w: np.ndarray, bias: np.ndarray | None, reals: list[float],
                     channel_dim: int, lo: int, hi: int) -> None:
            super().__init__(fn, rest, w, bias, 0, reals, channel_dim, 0, lo, hi)
            bound = 32768 * int(np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max(initial=0))
            self.dtype = torch.float32 if bound < (1 << 24) else torch.float64  # exact integer sums
            self.w = self.w.to(self.dtype)

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            acc = self.fn(xq.to(self.dtype), self.w, None, *self.rest).round().to(torch.int64)
            nd = acc.dim()
            acc = acc + self._per_channel(self.bias, nd)
            return self.finish(mbqm64(acc, self._per_channel(self.mult, nd), self._per_channel(self.shift, nd)))

    class ExactAdd16(add):  # type: ignore[misc, valid-type]
        wide = True

    class ExactMul16(mul):  # type: ignore[misc, valid-type]
        """int16 MUL: the int32 product of the inputs (zero points 0), one double-rounding requantization."""

        wide = True

    class ExactActivation(mul):  # type: ignore[misc, valid-type]
        """A ReLU/ReLU6 with its own output qparams, lowered as MUL(x, 1.0): (x - z) requantized by s_in / s_out."""

        def __init__(self, si: float, zi: int, so: float, zo: int, lo: int, hi: int, wide: bool) -> None:
            super().__init__(si, zi, 1.0, 0, so, zo, lo, hi)
            self.wide = wide

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":  # type: ignore[override]
            return self.finish(mbqm(xq.to(torch.int64) - self.z1, self.mult, self.shift))

    class ExactAvgPool16(avgpool):  # type: ignore[misc, valid-type]
        """int16 AVERAGE_POOL_2D: TFLM's int16 kernel sums and rounds exactly as the int8 one."""

        wide = True

    class ExactRequantize(torch.nn.Module):
        """TFLM QUANTIZE between integer types: Requantize with the double-rounding int32 multiplier."""

        def __init__(self, si: float, zi: int, so: float, zo: int, out: str) -> None:
            super().__init__()
            self.zi, self.zo = zi, zo
            self.lo, self.hi = _BOUNDS[out]
            self.out = torch.int16 if out == "int16" else torch.int8
            mult, shift = encode([si / so])
            self.register_buffer("mult", mult[0])
            self.register_buffer("shift", shift[0])

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            v = mbqm(xq.to(torch.int64) - self.zi, self.mult, self.shift) + self.zo
            return v.clamp(self.lo, self.hi).to(self.out)

    class ExactTable16(torch.nn.Module):
        """int16 LOGISTIC / TANH: TFLM's interpolated sigmoid table, evaluated for all 65,536 inputs
        (the emulator's table, so the two cannot drift apart)."""

        def __init__(self, table: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table.astype(np.int16)))

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            return self.table[xq.to(torch.int64) + 32768]  # type: ignore[index]

    return {"weighted16": ExactWeighted16, "add16": ExactAdd16, "mul16": ExactMul16, "avgpool": ExactAvgPool16,
            "table16": ExactTable16,
            "activation": ExactActivation,
            "requantize": ExactRequantize}


def _dq(node: Any) -> tuple[Any, float, int, str] | None:
    """(integer source node, float32 scale, zero point, "int8"|"int16") of an activation dequantize."""
    import torch
    from torch import fx

    if not (isinstance(node, fx.Node) and node.target is torch.ops.quantized_decomposed.dequantize_per_tensor.default):
        return None
    src, scale, zp = node.args[:3]
    kind = _dtype_name(node.args[5])
    if kind is None or not isinstance(src, fx.Node) or src.op == "get_attr":
        return None
    return src, float(np.float32(float(scale))), int(zp), kind  # type: ignore[arg-type]


def _build16(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, mods: dict[str, type]) -> tuple[Any, list] | None:
    import torch

    from tinyprec.quant.exact import _build, _const_int

    aten = torch.ops.aten
    lo, hi = act_range16(act, so, 0)
    pools = (aten.avg_pool2d.default, aten.avg_pool1d.default, aten.adaptive_avg_pool2d.default,
             aten.adaptive_avg_pool1d.default, aten.mean.dim)
    if n.target is aten.mean.dim and act == "none":
        from tinyprec.quant.exact_act import _mean_module, _rank_of

        x, rank = _dq(n.args[0]), _rank_of(n)
        dims = tuple(sorted({int(d) % rank for d in n.args[1]})) if rank else ()  # type: ignore[union-attr]
        if x is not None and x[3] == "int16" and rank and not (dims == tuple(range(2, rank)) and rank in (3, 4)):
            # MEAN over other axes than the spatial ones (channels of (N, C, L)): TFLM's int8 arithmetic on int16
            keep = bool(n.args[2]) if len(n.args) > 2 else False
            mod = _mean_module(dims, keep, 0, x[1] / so, 0)
            mod.wide, mod.lo, mod.hi = True, lo, hi
            return mod, [x[0]]
    if n.target in pools:
        built = _build(gm, n, act, so, 0, mods, wide=True)
        if built is not None:
            built[0].lo, built[0].hi = lo, hi
        return built
    convs = (aten.conv2d.default, aten.conv1d.default, aten.conv2d.padding, aten.conv1d.padding)
    if n.kwargs:
        return None
    if n.target in convs or n.target is aten.linear.default:
        x = _dq(n.args[0])
        w = _const_int(gm, n.args[1])
        bias_node = n.args[2] if len(n.args) > 2 else None
        b = _const_int(gm, bias_node) if bias_node is not None else None
        if x is None or x[3] != "int16" or x[2] != 0 or w is None or (bias_node is not None and b is None):
            return None
        reals = [x[1] * float(s) / so for s in w[1]]
        channel_dim = -1 if n.target is aten.linear.default else 1
        mod = mods["weighted16"](n.target, tuple(n.args[3:]), w[0], None if b is None else b[0].reshape(-1), reals,
                                 channel_dim, lo, hi)
        return mod, [x[0]]
    if n.target is aten.add.Tensor:
        a, b2 = _dq(n.args[0]), _dq(n.args[1])
        if a is None or b2 is None or a[3] != "int16" or b2[3] != "int16":
            return None
        return mods["add16"](a[1], a[2], b2[1], b2[2], so, 0, lo, hi, left_shift=15), [a[0], b2[0]]
    if n.target in (aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor):
        from tinyprec.quant.exact_const import build_const_operand

        found = build_const_operand(gm, n, act, so, 0, {"add": mods["add16"], "mul": mods["mul16"]}, wide=True)
        if found is not None:  # an int16 constant operand (an a16w8 GRU's b_hh at its first step)
            return found
    if n.target is aten.mul.Tensor:
        a, b2 = _dq(n.args[0]), _dq(n.args[1])
        if a is None or b2 is None or a[3] != "int16" or b2[3] != "int16":
            return None
        return mods["mul16"](a[1], a[2], b2[1], b2[2], so, 0, lo, hi), [a[0], b2[0]]
    if n.target in (aten.sigmoid.default, aten.tanh.default) and act == "none":
        from tinyprec.emulator.int16 import sigmoid_tanh_table16

        x = _dq(n.args[0])
        if x is None or x[3] != "int16" or x[2] != 0 or so != float(np.float32(1.0 / 32768)):
            return None  # TFLM's int16 LOGISTIC/TANH: zero points 0, output scale 1/32768
        try:
            table = sigmoid_tanh_table16(x[1], n.target is aten.tanh.default)
        except ValueError:
            return None  # a scale TFLM refuses: the lowering's emulator check reports it
        return mods["table16"](table), [x[0]]
    if n.target is aten.sub.Tensor:
        from tinyprec.quant.exact_ops import more_modules

        a, b2 = _dq(n.args[0]), _dq(n.args[1])
        if a is None or b2 is None or a[3] != "int16" or b2[3] != "int16":
            return None
        return more_modules()["sub"](a[1], a[2], b2[1], b2[2], so, 0, lo, hi, left_shift=15), [a[0], b2[0]]
    return None


def rewrite_wide(gm: "fx.GraphModule", base_mods: dict[str, type]) -> int:
    """Rewrite, in place, int16 layer chains and dequantize -> quantize requantizations into TFLM's integer
    arithmetic. Returns the number of modules added (named ``_tflm_exact_<i>``)."""
    import torch

    from tinyprec.quant.exact import _activation, install

    qd = torch.ops.quantized_decomposed
    mods = _modules(base_mods)
    count = 0
    for q in list(gm.graph.nodes):
        if q.target is not qd.quantize_per_tensor.default:
            continue
        out = _dtype_name(q.args[5])
        so, zo = float(np.float32(float(q.args[1]))), int(q.args[2])
        n = q.args[0]
        built = None
        src = _dq(n)
        if src is not None and out is not None:
            built = mods["requantize"](src[1], src[2], so, zo, out), [src[0]]
        elif out is not None and hasattr(n, "target") and len(n.users) == 1 and _activation(n) is not None \
                and _dq(n.args[0]) is not None and _dq(n.args[0])[3] == out:  # type: ignore[index]
            x = _dq(n.args[0])
            assert x is not None
            lo, hi = (act_range16 if out == "int16" else act_range)(_activation(n) or "none", so, zo)
            built = mods["activation"](x[1], x[2], so, zo, lo, hi, out == "int16"), [x[0]]
        elif out == "int16" and hasattr(n, "target") and len(n.users) == 1:
            act = _activation(n)
            if act is not None:
                n = n.args[0]
            if hasattr(n, "target") and len(n.users) == 1:
                built = _build16(gm, n, act or "none", so, mods)
        if built is None:
            continue
        install(gm, q, *built, f"_tflm_exact_{count}")
        count += 1
    # TFLM's int16 tensors hold -32768 (a kernel's clamp is [-32768, 32767]); the fake-quant spec stops at -32767
    # (symmetric). A value that moves through an op kept in float here (STRIDED_SLICE, RESHAPE, CONCATENATION,
    # ...) must keep -32768, as TFLM copies it.
    for q in gm.graph.nodes:
        if q.target is qd.quantize_per_tensor.default and q.args[5] is torch.int16 and q.args[3] == -32767:
            q.args = (*q.args[:3], -32768, *q.args[4:])
    return count
