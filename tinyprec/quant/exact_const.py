"""The TFLM-exact program for an ADD / MUL / SUB with one constant int8 (or int16) operand (LayerNorm's weight
and bias, an unrolled GRU's first step).

:mod:`tinyprec.quant.exact` matches ``dequantize -> add/mul -> quantize`` chains whose two inputs are int8
activations; here one input is ``dequantize_per_tensor(int8 constant)`` (quant/recurrent.py, h0 = 0). The
module holds the constant's integers and runs the same exact ADD / MUL / SUB arithmetic with it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def _const_qparams(gm: fx.GraphModule, node: Any) -> tuple[Any, float, int] | None:
    """(integers, float32 scale, zero point) of a per-tensor dequantized int8 or int16 constant, else None."""
    import torch

    from tinyprec.quant.exact import _attr, _f32

    if getattr(node, "target", None) is not torch.ops.quantized_decomposed.dequantize_per_tensor.default:
        return None
    if node.args[5] not in (torch.int8, torch.int16):
        return None
    data = _attr(gm, node.args[0])
    if data is None or data.dtype != node.args[5]:
        return None
    return data, _f32(node.args[1]), int(node.args[2])


@functools.cache
def _with_constant() -> type:
    import torch

    class WithConstant(torch.nn.Module):
        """``inner(x, c)`` or ``inner(c, x)`` with the int8 constant ``c`` held as a buffer."""

        def __init__(self, inner: Any, const: Any, const_first: bool) -> None:
            super().__init__()
            self.inner, self.const_first = inner, const_first
            self.register_buffer("c", const.clone())

        def forward(self, xq: torch.Tensor) -> torch.Tensor:
            return self.inner(self.c, xq) if self.const_first else self.inner(xq, self.c)

    return WithConstant


def build_const_operand(gm: fx.GraphModule, n: fx.Node, act: str, so: float, zo: int,
                        mods: dict[str, type], *, wide: bool = False) -> tuple[Any, list[Any]] | None:
    """(exact module, [its integer input node]) for add/mul/sub of an activation and a constant, else None.
    ``wide``: int16 activation and constant (an a16w8 recurrent layer's b_hh), TFLM's int16 ADD / MUL / SUB
    (``mods`` then holds the int16 "add" and "mul" modules)."""
    import torch

    from tinyprec.quant.exact import _act_qparams
    from tinyprec.quant.exact_int import act_range
    from tinyprec.quant.exact_ops import more_modules

    aten = torch.ops.aten
    kinds = {aten.add.Tensor: "add", aten.mul.Tensor: "mul", aten.sub.Tensor: "sub"}
    kind = kinds.get(n.target)
    if kind is None or n.kwargs or len(n.args) != 2:
        return None
    a, b = _act_qparams(n.args[0], wide), _act_qparams(n.args[1], wide)
    ca, cb = _const_qparams(gm, n.args[0]), _const_qparams(gm, n.args[1])
    if not ((a is not None and cb is not None) or (b is not None and ca is not None)):
        return None
    const_first = a is None
    const = (ca if const_first else cb)[0]  # type: ignore[index]
    if (const.dtype == torch.int16) != wide:
        return None
    first = a if a is not None else ca
    second = b if b is not None else cb
    assert first is not None and second is not None
    if wide:
        from tinyprec.quant.exact16 import act_range16

        lo, hi = act_range16(act, so, zo)
    else:
        lo, hi = act_range(act, so, zo)
    shift = {"left_shift": 15} if wide and kind != "mul" else {}
    cls = more_modules()["sub"] if kind == "sub" else mods[kind]
    inner = cls(first[1], first[2], second[1], second[2], so, zo, lo, hi, **shift)
    src = (b if const_first else a)[0]  # type: ignore[index]
    return _with_constant()(inner, const, const_first), [src]
