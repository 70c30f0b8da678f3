"""The TFLM-exact program for an ADD / MUL / SUB with one constant int8 operand (LayerNorm's weight and bias,
an unrolled GRU's first step).

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
    """(int8 integers, float32 scale, zero point) of a per-tensor dequantized int8 constant, else None."""
    import torch

    from tinyprec.quant.exact import _attr, _f32

    if getattr(node, "target", None) is not torch.ops.quantized_decomposed.dequantize_per_tensor.default:
        return None
    if node.args[5] is not torch.int8:
        return None
    data = _attr(gm, node.args[0])
    if data is None or data.dtype != torch.int8:
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
                        mods: dict[str, type]) -> tuple[Any, list[Any]] | None:
    """(exact module, [its int8 input node]) for add/mul/sub of an activation and a constant, else None."""
    import torch

    from tinyprec.quant.exact import _act_qparams
    from tinyprec.quant.exact_int import act_range
    from tinyprec.quant.exact_ops import more_modules

    aten = torch.ops.aten
    kinds = {aten.add.Tensor: "add", aten.mul.Tensor: "mul", aten.sub.Tensor: "sub"}
    kind = kinds.get(n.target)
    if kind is None or n.kwargs or len(n.args) != 2:
        return None
    a, b = _act_qparams(n.args[0]), _act_qparams(n.args[1])
    ca, cb = _const_qparams(gm, n.args[0]), _const_qparams(gm, n.args[1])
    if not ((a is not None and cb is not None) or (b is not None and ca is not None)):
        return None
    first = a if a is not None else ca
    second = b if b is not None else cb
    assert first is not None and second is not None
    lo, hi = act_range(act, so, zo)
    cls = more_modules()["sub"] if kind == "sub" else mods[kind]
    inner = cls(first[1], first[2], second[1], second[2], so, zo, lo, hi)
    const_first = a is None
    const = (ca if const_first else cb)[0]  # type: ignore[index]
    src = (b if const_first else a)[0]  # type: ignore[index]
    return _with_constant()(inner, const, const_first), [src]
