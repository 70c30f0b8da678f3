"""A copy of the converted program whose quantize steps follow TFLM's integer arithmetic exactly.

The converted (fake-quant) program computes ``dequantize -> float op -> quantize`` and rounds half to
even in float32; TFLM sums in int32 and requantizes with a q31 multiplier and double rounding (half
away from zero), and averages pools on the raw int8 values. :func:`tflm_exact` rewrites, in a copy,
each ``dequantize -> op -> [activation] -> quantize`` chain TFLM computes in integers (convolution,
linear, ADD, MUL, average pooling, MEAN; LOGISTIC/TANH as TFLM's int8 tables; SOFTMAX in its fixed
point) into one module that recovers the exact integer accumulator
(float sums of integers are exact: float32 where every partial sum stays below 2**24 in magnitude,
else float64) and requantizes it in int64 with TFLM's recipe
(:mod:`tinyprec.emulator` documents it per op). Chains it does not recognise stay as they are.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.ir.qparams import quantize_multiplier
from tinyprec.quant.exact_int import act_range, encode, lut, mbqm, rdbpot, reciprocal, srdhm, wrap32

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx

_INT32 = 1 << 31


def _f32(x: Any) -> float:
    return float(np.float32(float(x)))


def _module_base() -> type:
    import torch

    class _Exact(torch.nn.Module):
        """Common output stage: add the zero point and clamp to the activation range, as int8 (int16 when
        ``wide``)."""

        wide = False

        def __init__(self, out_zp: int, lo: int, hi: int) -> None:
            super().__init__()
            self.out_zp, self.lo, self.hi = out_zp, lo, hi

        def finish(self, v: "torch.Tensor") -> "torch.Tensor":
            return (v + self.out_zp).clamp(self.lo, self.hi).to(torch.int16 if self.wide else torch.int8)

    return _Exact


def _modules() -> dict[str, type]:
    import torch
    import torch.nn.functional as F

    base = _module_base()

    class ExactWeighted(base):  # type: ignore[misc, valid-type]
        """CONV_2D / DEPTHWISE_CONV_2D (conv1d, conv2d, linear as a convolution): int32 sum + bias."""

        def __init__(self, fn: Any, rest: tuple, w: np.ndarray, bias: np.ndarray | None, in_zp: int,
                     reals: list[float], channel_dim: int, out_zp: int, lo: int, hi: int) -> None:
            super().__init__(out_zp, lo, hi)
            self.fn, self.rest, self.in_zp, self.channel_dim = fn, rest, in_zp, channel_dim
            # |x - zp| <= 255: float32 sums are exact below 2**24, float64 ones below 2**53.
            bound = 255 * int(np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max(initial=0))
            self.dtype = torch.float32 if bound < (1 << 24) else torch.float64
            self.register_buffer("w", torch.from_numpy(w).to(self.dtype))
            b = bias if bias is not None else np.zeros(w.shape[0], np.int64)
            self.register_buffer("bias", torch.from_numpy(b.astype(np.int64)))
            mult, shift = encode(reals)
            self.register_buffer("mult", mult)
            self.register_buffer("shift", shift)

        def _per_channel(self, t: "torch.Tensor", ndim: int) -> "torch.Tensor":
            shape = [1] * ndim
            shape[self.channel_dim % ndim] = -1
            return t.view(shape) if t.numel() > 1 else t.reshape(())

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            x = xq.to(self.dtype) - self.in_zp
            acc = self.fn(x, self.w, None, *self.rest).round().to(torch.int64)
            nd = acc.dim()
            acc = wrap32(acc + self._per_channel(self.bias, nd))
            return self.finish(mbqm(acc, self._per_channel(self.mult, nd), self._per_channel(self.shift, nd)))

    class ExactAdd(base):  # type: ignore[misc, valid-type]
        """TFLM int8 ADD: both inputs scaled to a shared 2**20 fixed point, summed, requantized."""

        def __init__(self, s1: float, z1: int, s2: float, z2: int, so: float, out_zp: int, lo: int,
                     hi: int, left_shift: int = 20) -> None:
            super().__init__(out_zp, lo, hi)
            twice_max = 2.0 * max(s1, s2)
            self.z1, self.z2, self.left_shift = z1, z2, left_shift  # TFLM: 20 for int8, 15 for int16
            mult, shift = encode([s1 / twice_max, s2 / twice_max, twice_max / ((1 << left_shift) * so)])
            self.register_buffer("mult", mult)
            self.register_buffer("shift", shift)

        def forward(self, x1: "torch.Tensor", x2: "torch.Tensor") -> "torch.Tensor":
            m, s = self.mult, self.shift
            a = mbqm((x1.to(torch.int64) - self.z1) << self.left_shift, m[0], s[0])
            b = mbqm((x2.to(torch.int64) - self.z2) << self.left_shift, m[1], s[1])
            return self.finish(mbqm(a + b, m[2], s[2]))

    class ExactMul(base):  # type: ignore[misc, valid-type]
        """TFLM int8 MUL: integer product of the offset inputs, one requantization."""

        def __init__(self, s1: float, z1: int, s2: float, z2: int, so: float, out_zp: int, lo: int,
                     hi: int) -> None:
            super().__init__(out_zp, lo, hi)
            self.z1, self.z2 = z1, z2
            mult, shift = encode([s1 * s2 / so])
            self.register_buffer("mult", mult[0])
            self.register_buffer("shift", shift[0])

        def forward(self, x1: "torch.Tensor", x2: "torch.Tensor") -> "torch.Tensor":
            p = (x1.to(torch.int64) - self.z1) * (x2.to(torch.int64) - self.z2)
            return self.finish(mbqm(p, self.mult, self.shift))

    class ExactAvgPool(base):  # type: ignore[misc, valid-type]
        """AVERAGE_POOL_2D: sum of the raw int8 taps inside the image / count, half away from zero.

        ``kernel`` None pools each spatial window given by ``adaptive`` (output size), or the whole map.
        """

        def __init__(self, kernel: tuple | None, stride: tuple | None, pad: tuple, adaptive: tuple | None,
                     flatten: bool, lo: int, hi: int) -> None:
            super().__init__(0, lo, hi)
            self.kernel, self.stride, self.pad, self.adaptive, self.flatten = kernel, stride, pad, adaptive, flatten

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            one_d = xq.dim() == 3
            x4 = (xq.unsqueeze(2) if one_d else xq).to(torch.float64)
            kernel, stride = self.kernel, self.stride
            if kernel is None:
                out = self.adaptive or (1, 1)
                kernel = (x4.shape[2] // out[0], x4.shape[3] // out[1])
                stride = kernel
            args = (kernel, stride, self.pad, False, True, 1)
            acc = F.avg_pool2d(x4, *args).round().to(torch.int64)
            count = F.avg_pool2d(torch.ones_like(x4[:1, :1]), *args).round().to(torch.int64)
            half = count // 2
            pos = torch.div(acc + half, count, rounding_mode="trunc")
            neg = torch.div(acc - half, count, rounding_mode="trunc")
            avg = torch.where(acc > 0, pos, neg)
            avg = avg.squeeze(2) if one_d else avg
            if self.flatten:
                avg = avg.reshape(avg.shape[0], avg.shape[1])
            return self.finish(avg)

    class ExactMean(base):  # type: ignore[misc, valid-type]
        """TFLM MEAN over all spatial axes with a rescale; 1/count folded into the multiplier."""

        def __init__(self, in_zp: int, real: float, out_zp: int) -> None:
            super().__init__(out_zp, -128, 127)
            self.in_zp = in_zp
            self.mult, self.shift = quantize_multiplier(real)

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            dims = tuple(range(2, xq.dim()))
            count = math.prod(xq.shape[2:])
            s = max(min(count.bit_length() - 1, 32, 31 + self.shift), 0)
            mult = torch.tensor((self.mult << s) // count, dtype=torch.int64)
            shift = torch.tensor(self.shift - s, dtype=torch.int64)
            sums = xq.to(torch.int64).sum(dim=dims, keepdim=True)
            return self.finish(mbqm(sums - self.in_zp * count, mult, shift))

    class ExactTable(torch.nn.Module):
        """LOGISTIC / TANH: TFLM's int8 kernels are a 256-entry table of the int8 input."""

        def __init__(self, table: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table.astype(np.int8)))

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            return self.table[xq.to(torch.int64) + 128]  # type: ignore[index]

    class ExactSoftmax(torch.nn.Module):
        """TFLM int8 SOFTMAX (beta 1, output 1/256, -128): exp tables, Q12.19 sum, fixed-point reciprocal."""

        def __init__(self, si: float, dim: int) -> None:
            super().__init__()
            from tinyprec.emulator.kernels import softmax_exp_tables

            self.dim = dim
            mult, left_shift = quantize_multiplier(min(si * float(1 << 26), float(_INT32 - 1)))
            self.diff_min = -math.floor(31.0 * (1 << 26) / (2.0 ** left_shift))
            raw, acc = softmax_exp_tables(mult, left_shift, False)
            self.register_buffer("exp_raw", torch.from_numpy(np.asarray(raw, np.int64)))
            self.register_buffer("exp_acc", torch.from_numpy(np.asarray(acc, np.int64)))

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            x = xq.to(torch.int64).movedim(self.dim, -1)
            diff = x - x.amax(dim=-1, keepdim=True)
            used = diff >= self.diff_min
            index = (-diff).clamp(max=255)
            total = wrap32(torch.where(used, self.exp_acc[index], 0).sum(dim=-1, keepdim=True))  # type: ignore[index]
            scale, bits_over_unit = reciprocal(total, 12)
            v = rdbpot(srdhm(scale, self.exp_raw[index]), bits_over_unit + 31 - 8) - 128  # type: ignore[index]
            out = torch.where(used, v.clamp(-128, 127), -128)
            return out.movedim(-1, self.dim).to(torch.int8)

    return {"weighted": ExactWeighted, "add": ExactAdd, "mul": ExactMul, "avgpool": ExactAvgPool,
            "mean": ExactMean, "table": ExactTable, "softmax": ExactSoftmax}


# --- matching the converted graph ------------------------------------------------------------------------
def _attr(gm: "fx.GraphModule", node: Any) -> "torch.Tensor | None":
    from torch import fx

    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    obj: Any = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj


def _act_qparams(node: Any, wide: bool = False) -> tuple[Any, float, int] | None:
    """(int8 source node, float32 scale, zero point) of a per-tensor int8 (``wide``: int16) dequantize node."""
    import torch
    from torch import fx

    qd = torch.ops.quantized_decomposed
    if not (isinstance(node, fx.Node) and node.target is qd.dequantize_per_tensor.default):
        return None
    src, scale, zp, qmin, qmax, dtype = node.args[:6]
    if dtype is not (torch.int16 if wide else torch.int8) or not isinstance(src, fx.Node) or src.op == "get_attr":
        return None
    return src, _f32(scale), int(zp)  # type: ignore[arg-type]


def _const_int(gm: "fx.GraphModule", node: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(integer values, float32 scales per channel) of a dequantized constant (weights or bias)."""
    import torch
    from torch import fx

    qd = torch.ops.quantized_decomposed
    if not isinstance(node, fx.Node):
        return None
    if node.target is qd.dequantize_per_channel.default:
        q, scale, zp = (_attr(gm, a) for a in node.args[:3])
        if q is None or scale is None or zp is None or int(node.args[3]) != 0 or bool((zp != 0).any()):  # type: ignore[arg-type]
            return None
        return q.to(torch.int64).numpy(), scale.to(torch.float32).numpy().reshape(-1)
    if node.target is qd.dequantize_per_tensor.default:
        q = _attr(gm, node.args[0])
        if q is None or int(node.args[2]) != 0:  # type: ignore[arg-type]
            return None
        return q.to(torch.int64).numpy(), np.array([_f32(node.args[1])], np.float32)
    return None


def _activation(node: Any) -> str | None:
    """The fused activation ("relu", "relu6", "relu_n1_to_1") a relu/relu6/hardtanh/clamp node is, else None."""
    from tinyprec.optable.table import fused_activation

    found = fused_activation(node) if hasattr(node, "target") else None
    return None if found is None else found.lower()


def _pair(v: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(a) for a in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return tuple(int(v) for _ in range(n))


def _build(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int,
           mods: dict[str, type], wide: bool = False) -> tuple[Any, list[Any]] | None:
    """(exact module, its int8 input nodes) for core op ``n`` quantized to (so, zo), or None.
    ``wide``: only the int16 average pool (same arithmetic as int8, int16 range; see exact16)."""
    import torch

    aten = torch.ops.aten
    from tinyprec.quant.exact_ops import build_more

    more = build_more(gm, n, act, so, zo, mods)  # issue 11's ops
    if more is not None:
        return more
    lo, hi = act_range(act, so, zo)
    t = n.target
    if n.kwargs:
        return None
    convs = (aten.conv2d.default, aten.conv1d.default, aten.conv2d.padding, aten.conv1d.padding)
    if t in convs or t is aten.linear.default:
        x = _act_qparams(n.args[0])
        w = _const_int(gm, n.args[1])
        bias_node = n.args[2] if len(n.args) > 2 else None
        b = _const_int(gm, bias_node) if bias_node is not None else None
        if x is None or w is None or (bias_node is not None and b is None):
            return None
        src, si, zi = x
        wq, ws = w
        reals = [si * float(s) / so for s in ws]
        channel_dim = -1 if t is aten.linear.default else 1
        mod = mods["weighted"](t, tuple(n.args[3:]), wq, None if b is None else b[0].reshape(-1), zi, reals,
                               channel_dim, zo, lo, hi)
        return mod, [src]
    if t in (aten.add.Tensor, aten.mul.Tensor):
        a, b2 = _act_qparams(n.args[0]), _act_qparams(n.args[1])
        if a is None or b2 is None:
            return None
        key = "add" if t is aten.add.Tensor else "mul"
        return mods[key](a[1], a[2], b2[1], b2[2], so, zo, lo, hi), [a[0], b2[0]]
    if t in (aten.sigmoid.default, aten.tanh.default) and act == "none":
        x = _act_qparams(n.args[0])
        is_tanh = t is aten.tanh.default
        if x is None or (not is_tanh and (zo != -128 or so != 1.0 / 256)) or (is_tanh and (zo != 0 or so != 1.0 / 128)):
            return None  # TFLM's int8 LOGISTIC/TANH outputs have fixed qparams
        return mods["table"](lut(x[1], x[2], zo, is_tanh)), [x[0]]
    if t in (aten.softmax.int, aten._softmax.default) and act == "none":
        x = _act_qparams(n.args[0])
        if x is None or zo != -128 or so != 1.0 / 256 or x[1] * float(1 << 26) <= 1.0:
            return None
        return mods["softmax"](x[1], int(n.args[1])), [x[0]]  # type: ignore[arg-type]
    pools = (aten.avg_pool2d.default, aten.avg_pool1d.default, aten.adaptive_avg_pool2d.default,
             aten.adaptive_avg_pool1d.default, aten.mean.dim)
    if t not in pools:
        return None
    x = _act_qparams(n.args[0], wide)
    if x is None:
        return None
    src, si, zi = x
    one_d = t in (aten.avg_pool1d.default, aten.adaptive_avg_pool1d.default)
    kernel = stride = adaptive = None
    pad: tuple = (0, 0)
    flatten = False
    if t is aten.mean.dim:
        flatten = not (bool(n.args[2]) if len(n.args) > 2 else False)  # global: checked by the lowering
    elif t in (aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool1d.default):
        adaptive = (1, *_pair(n.args[1], 1)) if one_d else _pair(n.args[1])
    else:
        dims = 1 if one_d else 2
        k = _pair(n.args[1], dims)
        st = _pair(n.args[2], dims) if len(n.args) > 2 and n.args[2] else k
        p = _pair(n.args[3], dims) if len(n.args) > 3 else (0,) * dims
        if len(n.args) > 4 and n.args[4]:
            return None  # ceil_mode
        kernel, stride, pad = ((1, *k), (1, *st), (0, *p)) if one_d else (k, st, p)
    if si == so and zi == zo:
        return mods["avgpool"](kernel, stride, pad, adaptive, flatten, lo, hi), [src]
    if wide:
        return None
    if act != "none" or flatten or kernel is not None or (adaptive is not None and adaptive != (1, 1)):
        return None  # only a global average that rescales lowers (to MEAN)
    return mods["mean"](zi, si / so, zo), [src]


def install(gm: "fx.GraphModule", q: Any, module: Any, inputs: list[Any], name: str) -> None:
    """Put ``module`` (fed ``inputs``) in place of the quantize node ``q``: its users read the module's output."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(q):
        new = gm.graph.call_module(name, tuple(inputs))
    new.meta.update(q.meta)
    q.replace_all_uses_with(new)


def tflm_exact(converted_gm: "fx.GraphModule") -> "fx.GraphModule":
    """A copy of the converted program whose int8 results follow TFLM's integer kernels exactly.

    Each ``dequantize -> conv/linear/add/mul/avg pool/mean -> [relu|relu6|hardtanh] -> quantize``
    chain becomes one module computing TFLM's int32 accumulator and double-rounding requantization;
    sigmoid/tanh/softmax chains become TFLM's int8 kernels. Other ops (max pool, cat, reshape, pad)
    are already exact and keep their float arithmetic. ``converted_gm`` itself is not modified.
    """
    import torch

    qd = torch.ops.quantized_decomposed
    from tinyprec.quant.exact16 import rewrite_wide

    gm = copy.deepcopy(converted_gm)
    mods = _modules()
    count = rewrite_wide(gm, mods)  # int16 layers and the QUANTIZE ops between precisions
    for q in list(gm.graph.nodes):
        if q.target is not qd.quantize_per_tensor.default or tuple(q.args[3:6]) != (-128, 127, torch.int8):
            continue
        n, act = q.args[0], "none"
        if not hasattr(n, "target") or len(n.users) != 1:
            continue
        found = _activation(n)
        if found is not None:
            n, act = n.args[0], found
            if not hasattr(n, "target") or len(n.users) != 1:
                continue
        built = _build(gm, n, act, _f32(q.args[1]), int(q.args[2]), mods)
        if built is None:
            continue
        install(gm, q, *built, f"_tflm_exact_{count}")
        count += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
