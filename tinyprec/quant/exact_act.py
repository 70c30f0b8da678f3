"""tflm_exact for issue 11's activation / arithmetic ops (ops-act): ELU's table, ADD / MUL of a Python
number, MEAN over any dims.

:func:`build_act` is called by :func:`tinyprec.quant.exact_ops.build_more` before its own cases. The
number's int8 form is the lowering's (:func:`tinyprec.lowering.act.scalar_operand`), so the exact
program applies TFLM's ADD / MUL arithmetic to the very constant the .tflite holds; ELU's table is the
emulator's (:func:`tinyprec.emulator.activations.elu_table`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tinyprec.ir.qparams import quantize_multiplier

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def _const_input(inner: Any, q: int, const_first: bool = False) -> Any:
    """``inner(x, c)`` (``inner(c, x)`` when ``const_first``) as a one-input module, ``c`` the int8 constant ``q``."""
    import torch

    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("c", torch.tensor(q, dtype=torch.int8))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.inner(self.c, x) if const_first else self.inner(x, self.c)

    return WithConstant()


def _mean_module(dims: tuple[int, ...], keep: bool, zi: int, real: float, zo: int) -> Any:
    from tinyprec.quant.exact import _module_base
    from tinyprec.quant.exact_int import mbqm

    base = _module_base()

    class ExactMeanAxes(base):  # type: ignore[misc, valid-type]
        """TFLM int8 MEAN over any axes: int32 sum minus zp * count, 1/count folded into the multiplier."""

        def __init__(self) -> None:
            super().__init__(zo, -128, 127)
            self.dims, self.keep, self.zi = dims, keep, zi
            self.mult, self.shift = quantize_multiplier(real)

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            import torch

            count = math.prod(int(xq.shape[d]) for d in self.dims)
            s = max(min(count.bit_length() - 1, 32, 31 + self.shift), 0)
            mult = torch.tensor((self.mult << s) // count, dtype=torch.int64)
            shift = torch.tensor(self.shift - s, dtype=torch.int64)
            sums = xq.to(torch.int64).sum(dim=self.dims, keepdim=self.keep)
            return self.finish(mbqm(sums - self.zi * count, mult, shift))

    return ExactMeanAxes()


def _rank_of(n: "fx.Node") -> int:
    """The input rank of a mean node from the shapes torch.export recorded (0 when none is left)."""
    val = getattr(n.args[0], "meta", {}).get("val")
    if val is not None and hasattr(val, "shape"):
        return len(val.shape)
    val = n.meta.get("val")
    keep = bool(n.args[2]) if len(n.args) > 2 else False
    if val is not None and hasattr(val, "shape"):
        return len(val.shape) + (0 if keep else len(set(n.args[1])))  # type: ignore[arg-type]
    return 0


def build_act(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int,
              mods: dict[str, type]) -> tuple[Any, list[Any]] | None:
    """(exact module, its int8 input nodes) for one of this file's ops quantized to (so, zo), else None."""
    import torch

    from tinyprec.quant.exact import _act_qparams
    from tinyprec.quant.exact_int import act_range

    aten = torch.ops.aten
    t = n.target
    if t in (aten.add.Scalar, aten.mul.Scalar, aten.div.Tensor, aten.rsub.Scalar):
        x = _act_qparams(n.args[0])
        if x is None or n.kwargs or not isinstance(n.args[1], (int, float)):
            return None
        from tinyprec.lowering.act import scalar_operand, scalar_value

        q, sc = scalar_operand(scalar_value(n))
        lo, hi = act_range(act, so, zo)
        if t is aten.rsub.Scalar:
            from tinyprec.quant.exact_ops import more_modules

            return _const_input(more_modules()["sub"](sc, 0, x[1], x[2], so, zo, lo, hi), q, True), [x[0]]
        inner = mods["add" if t is aten.add.Scalar else "mul"](x[1], x[2], sc, 0, so, zo, lo, hi)
        return _const_input(inner, q), [x[0]]
    if t is aten.elu.default and act == "none":
        x = _act_qparams(n.args[0])
        if x is None:
            return None
        from tinyprec.emulator.activations import elu_table

        return mods["table"](elu_table(x[1], x[2], so, zo)), [x[0]]
    if t is aten.mean.dim and act == "none":
        x = _act_qparams(n.args[0])
        rank = _rank_of(n)
        if x is None or not rank:
            return None
        dims = tuple(sorted({int(d) % rank for d in n.args[1]}))  # type: ignore[union-attr]
        if dims == tuple(range(2, rank)) and rank in (3, 4):
            return None  # the global mean: exact.py's average pool / MEAN
        keep = bool(n.args[2]) if len(n.args) > 2 else False
        return _mean_module(dims, keep, x[2], x[1] / so, zo), [x[0]]
    return None
