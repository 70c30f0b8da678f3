"""tflm_exact for issue 11's ops: HARD_SWISH, LEAKY_RELU and ABS as TFLM's int8 tables; SUB in TFLM's integers
(int8 here; int16 SUB is built by :mod:`tinyprec.quant.exact16` with the same module).

:func:`build_more` is called by :func:`tinyprec.quant.exact._build` before its own cases; the tables are
the emulator's (:mod:`tinyprec.emulator.elementwise`), so the exact program, the emulator and TFLM compute
the same function. MAXIMUM, MINIMUM and a clamp to non-fusable bounds need nothing: with shared qparams
the float graph's compare-and-round is already TFLM's integer max/min.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.quant.exact_int import encode, mbqm

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def more_modules() -> dict[str, type]:
    """The exact modules of this file by name (the values of exact_table.EXACT_BY_OPTYPE)."""
    from tinyprec.quant.exact import _module_base

    base = _module_base()

    class ExactSub(base):  # type: ignore[misc, valid-type]
        """TFLM SUB: ADD's fixed point (inputs shifted left by 20 for int8, by 15 for int16: sub_common.cc),
        second input subtracted, requantized; int16 output when ``left_shift`` is 15."""

        def __init__(self, s1: float, z1: int, s2: float, z2: int, so: float, out_zp: int, lo: int,
                     hi: int, left_shift: int = 20) -> None:
            super().__init__(out_zp, lo, hi)
            twice_max = 2.0 * max(s1, s2)
            self.z1, self.z2, self.left_shift = z1, z2, left_shift
            self.wide = left_shift == 15
            mult, shift = encode([s1 / twice_max, s2 / twice_max, twice_max / ((1 << left_shift) * so)])
            self.register_buffer("mult", mult)
            self.register_buffer("shift", shift)

        def forward(self, x1: "torch.Tensor", x2: "torch.Tensor") -> "torch.Tensor":
            import torch

            m, s = self.mult, self.shift
            a = mbqm((x1.to(torch.int64) - self.z1) << self.left_shift, m[0], s[0])
            b = mbqm((x2.to(torch.int64) - self.z2) << self.left_shift, m[1], s[1])
            return self.finish(mbqm(a - b, m[2], s[2]))

    class ExactPrelu(base):  # type: ignore[misc, valid-type]
        """TFLM int8 PRELU: two multipliers, the negative side times the offset int8 slope."""

        def __init__(self, zi: int, alpha: np.ndarray, za: int, reals: list[float], out_zp: int) -> None:
            import torch

            super().__init__(out_zp, -128, 127)
            self.zi = zi
            self.register_buffer("alpha", torch.from_numpy(alpha.astype(np.int64) - za))
            mult, shift = encode(reals)
            self.register_buffer("mult", mult)
            self.register_buffer("shift", shift)

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            import torch

            v = xq.to(torch.int64) - self.zi
            a = self.alpha.reshape(-1) if self.alpha.numel() == 1 else self.alpha.reshape(1, -1, *[1] * (v.dim() - 2))
            pos = mbqm(v, self.mult[0], self.shift[0])
            neg = mbqm(v * a, self.mult[1], self.shift[1])
            return self.finish(torch.where(v >= 0, pos, neg))

    from tinyprec.quant.exact_shape import shape_modules

    return {"sub": ExactSub, "prelu": ExactPrelu, **shape_modules()}


def build_more(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int,
               mods: dict[str, type]) -> tuple[Any, list[Any]] | None:
    """(exact module, its int8 input nodes) for one of this file's ops quantized to (so, zo), else None."""
    import torch

    from tinyprec.emulator.elementwise import abs_table, hard_swish_table, leaky_relu_table
    from tinyprec.quant.exact import _act_qparams
    from tinyprec.quant.exact_int import act_range

    from tinyprec.quant.exact_shape import build_shape

    shaped = build_shape(gm, n, act, so, zo)  # issue 11's shape ops (quant/exact_shape.py)
    if shaped is not None:
        return shaped
    from tinyprec.quant.exact_norm import build_norm

    normed = build_norm(gm, n, act, so, zo, mods)  # issue 11: RSQRT
    if normed is not None:
        return normed
    from tinyprec.quant.exact_act import build_act

    found = build_act(gm, n, act, so, zo, mods)  # ops-act: ELU, scalar operands, MEAN over any dims
    if found is not None:
        return found
    from tinyprec.quant.exact_const import build_const_operand

    found = build_const_operand(gm, n, act, so, zo, mods)  # a constant operand (LayerNorm's affine, GRU's b_hh)
    if found is not None:
        return found
    aten = torch.ops.aten
    t = n.target
    if t in (aten.sub.Tensor, aten.sub_.Tensor) and not n.kwargs:
        a, b = _act_qparams(n.args[0]), _act_qparams(n.args[1])
        if a is None or b is None:
            return None
        lo, hi = act_range(act, so, zo)
        return more_modules()["sub"](a[1], a[2], b[1], b[2], so, zo, lo, hi), [a[0], b[0]]
    if t is aten.prelu.default and act == "none":
        x, w = _act_qparams(n.args[0]), n.args[1]
        if x is None or getattr(w, "target", None) is not torch.ops.quantized_decomposed.dequantize_per_tensor.default:
            return None
        from tinyprec.quant.exact import _attr, _f32

        data = _attr(gm, w.args[0])
        if data is None:
            return None
        sa, za = _f32(w.args[1]), int(w.args[2])
        reals = [float(x[1]) / float(so), float(x[1]) * float(sa) / float(so)]
        return more_modules()["prelu"](x[2], data.numpy(), za, reals, zo), [x[0]]
    tables = {aten.hardswish.default: "hs", aten.hardswish_.default: "hs", aten.leaky_relu.default: "lr",
              aten.leaky_relu_.default: "lr", aten.abs.default: "abs"}
    kind = tables.get(t)
    if kind is None or act != "none":
        return None
    x = _act_qparams(n.args[0])
    if x is None:
        return None
    src, si, zi = x
    try:
        if kind == "hs":
            table = hard_swish_table(si, zi, so, zo)
        elif kind == "lr":
            slope = n.args[1] if len(n.args) > 1 else n.kwargs.get("negative_slope", 0.01)
            table = leaky_relu_table(si, zi, so, zo, float(slope))
        else:
            table = abs_table(si, zi, so, zo)
    except ValueError:
        return None  # scales TFLM refuses: the lowering's emulator check reports them
    return mods["table"](table), [src]
