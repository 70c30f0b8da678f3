"""tflm_exact for issue 11's RSQRT (LayerNorm's 1/sqrt) as TFLM's int8 table (its constant MUL / ADD: exact_const.py).

:func:`build_norm` is called by :func:`tinyprec.quant.exact_ops.build_more` before its own cases. RSQRT's table
is the emulator's (:func:`tinyprec.emulator.norm.rsqrt_table`); the constant operand is the very int8 tensor
the .tflite holds (the converted graph's frozen constant), fed to exact.py's ADD / MUL arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def _with_tensor(inner: Any, data: "torch.Tensor", const_first: bool) -> Any:
    """``inner(x, c)`` (``inner(c, x)`` when ``const_first``) with ``c`` a fixed int8 tensor, as one-input module."""
    import torch

    class WithConstantTensor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("c", data.to(torch.int8).clone())

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.inner(self.c, x) if const_first else self.inner(x, self.c)

    return WithConstantTensor()


def _constant(gm: "fx.GraphModule", node: Any) -> tuple["torch.Tensor", float, int] | None:
    """(int8 data, float32 scale, zero point) of a per-tensor dequantized int8 constant."""
    import torch

    from tinyprec.quant.exact import _attr, _f32

    qd = torch.ops.quantized_decomposed
    if getattr(node, "target", None) is not qd.dequantize_per_tensor.default:
        return None
    data = _attr(gm, node.args[0])
    if data is None or data.dtype is not torch.int8:
        return None
    return data, _f32(node.args[1]), int(node.args[2])


def build_norm(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int,
               mods: dict[str, type]) -> tuple[Any, list[Any]] | None:
    """(exact module, its int8 input nodes) for RSQRT or ADD/MUL with a constant tensor, else None."""
    import torch

    from tinyprec.quant.exact import _act_qparams

    aten = torch.ops.aten
    t = n.target
    if t is aten.rsqrt.default and act == "none":
        x = _act_qparams(n.args[0])
        if x is None:
            return None
        from tinyprec.emulator.norm import rsqrt_table

        return mods["table"](rsqrt_table(x[1], x[2], so, zo)), [x[0]]
    return None
