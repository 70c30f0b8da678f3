"""tflm_exact for issue 11's shape ops: RESIZE_BILINEAR, TRANSPOSE_CONV and BATCH_MATMUL in TFLM's integer
arithmetic.

Nearest-neighbour resizing needs nothing (a copy with shared qparams; the lowering checks that PyTorch
and TFLM pick the same source pixels). Bilinear blends raw int8 values with TFLM's 10-bit weights
(:func:`tinyprec.emulator.shape_ops.bilinear_taps`), where the float graph uses exact float weights.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def shape_modules() -> dict[str, type]:
    """The exact modules of this file by name (values of exact_table.EXACT_BY_OPTYPE)."""
    import torch

    class ExactResizeBilinear(torch.nn.Module):
        """TFLM int8 RESIZE_BILINEAR on NCHW int8 values (output qparams = input's); the output size is the
        exported op's (``size``, or floor(input * scale factor) as PyTorch computes it)."""

        def __init__(self, size: tuple[int, int] | None, scales: tuple[float, float] | None,
                     align_corners: bool) -> None:
            super().__init__()
            self.size, self.scales, self.align = size, scales, align_corners

        def _taps(self, n_in: int, axis: int, like: "torch.Tensor") -> list["torch.Tensor"]:
            from tinyprec.ir.shape_rules import bilinear_taps

            if self.size is not None:
                n_out = int(self.size[axis])
            else:
                n_out = int(math.floor(n_in * self.scales[axis]))  # type: ignore[index]
            return [torch.from_numpy(np.asarray(v, np.int64)).to(like.device)
                    for v in bilinear_taps(n_in, n_out, self.align, not self.align)]

        def forward(self, xq: "torch.Tensor") -> "torch.Tensor":
            if xq.dim() == 3:
                return self.forward(xq.unsqueeze(2)).squeeze(2)
            v = xq.to(torch.int64)
            one = 1 << 10
            ylo, yhi, wy = self._taps(v.shape[-2], 0, v)
            xlo, xhi, wx = self._taps(v.shape[-1], 1, v)
            wy1, wx1 = wy.view(1, 1, -1, 1), wx.view(1, 1, 1, -1)
            wy0, wx0 = one - wy1, one - wx1
            top, bottom = v[:, :, ylo], v[:, :, yhi]
            total = (top[..., xlo] * wy0 * wx0 + bottom[..., xlo] * wy1 * wx0
                     + top[..., xhi] * wy0 * wx1 + bottom[..., xhi] * wy1 * wx1)
            half = torch.where(total > 0, 1 << 19, -(1 << 19))
            out = torch.div(total + half, 1 << 20, rounding_mode="trunc")
            return (((out + 128) & 0xFF) - 128).to(torch.int8)

    class ExactBatchMatMul(torch.nn.Module):
        """TFLM int8 BATCH_MATMUL: exact sums of the offset operands, one requantization (multiplier from
        the float32 product of the input scales)."""

        def __init__(self, za: int, zb: int, real: float, zo: int) -> None:
            super().__init__()
            from tinyprec.quant.exact_int import encode

            self.za, self.zb, self.zo = za, zb, zo
            mult, shift = encode([real])
            self.register_buffer("mult", mult[0])
            self.register_buffer("shift", shift[0])

        def forward(self, a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
            from tinyprec.quant.exact_int import mbqm

            acc = torch.matmul(a.to(torch.float64) - self.za, b.to(torch.float64) - self.zb).round().to(torch.int64)
            return (mbqm(acc, self.mult, self.shift) + self.zo).clamp(-128, 127).to(torch.int8)  # type: ignore[arg-type]

    return {"resize_bilinear": ExactResizeBilinear, "batch_matmul": ExactBatchMatMul}


def build_shape(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int) -> tuple[Any, list[Any]] | None:
    """(exact module, its int8 input nodes) for one of this file's ops quantized to (so, zo), else None."""
    import torch

    from tinyprec.quant.exact import _act_qparams

    if n.target in (torch.ops.aten.conv_transpose2d.input, torch.ops.aten.conv_transpose1d.default):
        return _conv_transpose(gm, n, act, so, zo)
    if n.target in (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default) and act == "none":
        a, b = _act_qparams(n.args[0]), _act_qparams(n.args[1])
        if a is None or b is None:
            return None
        real = float(np.float32(a[1]) * np.float32(b[1])) / float(so)
        return shape_modules()["batch_matmul"](a[2], b[2], real, zo), [a[0], b[0]]
    one_d = n.target is torch.ops.aten.upsample_linear1d.vec
    if (n.target is not torch.ops.aten.upsample_bilinear2d.vec and not one_d) or act != "none":
        return None
    x = _act_qparams(n.args[0])
    if x is None or x[1] != so or x[2] != zo:
        return None  # TFLM blends raw values: only shared qparams are TFLM's arithmetic
    size = n.args[1] if len(n.args) > 1 and n.args[1] is not None else None
    scales = n.args[3] if len(n.args) > 3 and n.args[3] is not None else None
    if size is None and scales is None:
        return None
    align = bool(n.args[2]) if len(n.args) > 2 else False
    if one_d:  # (N, C, L) is resized as (N, C, 1, L)
        size = None if size is None else [1, *size]
        scales = None if scales is None else [1.0, *scales]
    module = shape_modules()["resize_bilinear"](None if size is None else tuple(int(s) for s in size),
                                                None if scales is None else tuple(float(s) for s in scales), align)
    return module, [x[0]]


def _per_channel_const(gm: "fx.GraphModule", node: Any, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(int values, float32 scales) of a symmetric constant dequantized per tensor or per channel on ``axis``."""
    import torch

    from tinyprec.quant.exact import _attr, _f32

    qd = torch.ops.quantized_decomposed
    if getattr(node, "target", None) is qd.dequantize_per_channel.default:
        q, scale, zp = (_attr(gm, a) for a in node.args[:3])
        if q is None or scale is None or zp is None or int(node.args[3]) != axis or bool((zp != 0).any()):
            return None
        return q.to(torch.int64).numpy(), scale.to(torch.float32).numpy().reshape(-1)
    if getattr(node, "target", None) is qd.dequantize_per_tensor.default:
        q = _attr(gm, node.args[0])
        if q is None or int(node.args[2]) != 0:
            return None
        return q.to(torch.int64).numpy(), np.array([_f32(node.args[1])], np.float32)
    return None


def _conv_transpose(gm: "fx.GraphModule", n: "fx.Node", act: str, so: float, zo: int) -> tuple[Any, list[Any]] | None:
    """TRANSPOSE_CONV as the exact weighted module around aten.conv_transpose2d (weights [in, out, kh, kw])."""
    import torch

    from tinyprec.quant.exact import _act_qparams, _modules
    from tinyprec.quant.exact_int import act_range

    x = _act_qparams(n.args[0])
    w = _per_channel_const(gm, n.args[1], 1)
    bias_node = n.args[2] if len(n.args) > 2 else None
    b = _per_channel_const(gm, bias_node, 0) if bias_node is not None else None
    if x is None or w is None or (bias_node is not None and b is None) or n.kwargs:
        return None
    src, si, zi = x
    wq, ws = w
    lo, hi = act_range(act, so, zo)
    reals = [si * float(s) / so for s in ws]
    mod = _modules()["weighted"](n.target, tuple(n.args[3:]), wq, None if b is None else b[0].reshape(-1), zi,
                                 reals, 1, zo, lo, hi)
    # Each output sums over (in, kh, kw) of one output channel: bound its float sums by that, not by rows.
    bound = 255 * int(np.abs(wq).sum(axis=tuple(a for a in range(wq.ndim) if a != 1)).max(initial=0))
    if bound >= 1 << 24:
        mod.dtype = torch.float64
        mod.w = mod.w.to(torch.float64)
    return mod, [src]
