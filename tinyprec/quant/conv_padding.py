"""Rewrite ``conv(padding='same'|'valid')`` to explicit integer padding where it is symmetric.

torch.export records string padding as ``aten.conv2d.padding`` / ``aten.conv1d.padding``. PT2E's QAT
batch-norm folding matches only ``conv*.default``, and explicit pads are what the rest of stage 2 reads,
so every string padding that equals a symmetric integer padding (``'valid'``, or ``'same'`` where
``dilation * (kernel - 1)`` is even) becomes one. An even kernel's ``'same'`` (one
extra column on the right, TensorFlow's SAME split) stays as it is; the lowering maps it to SAME.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def _ints(v: Any, n: int) -> list[int]:
    vals = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return vals * n if len(vals) == 1 else vals


def explicit_conv_padding(gm: fx.GraphModule) -> int:
    """Rewrite symmetric string-padded convs of ``gm`` in place; returns how many it rewrote."""
    import torch

    aten = torch.ops.aten
    targets = {aten.conv2d.padding: (aten.conv2d.default, 2), aten.conv1d.padding: (aten.conv1d.default, 1)}
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in targets or node.kwargs:
            continue
        default, dims = targets[node.target]
        args = list(node.args) + [None, 1, "valid", 1, 1][len(node.args) - 2:]
        x, w, bias, stride, padding, dilation, groups = args[:7]
        if not isinstance(padding, str):
            continue
        wval = w.meta.get("val") if hasattr(w, "meta") else None
        if wval is None:
            continue
        kernel = [int(k) for k in wval.shape[2:]]
        dil = _ints(dilation, dims)
        if padding == "valid":
            pads = [0] * dims
        else:
            totals = [d * (k - 1) for d, k in zip(dil, kernel)]
            if any(t % 2 for t in totals):
                continue  # asymmetric SAME: left to the lowering
            pads = [t // 2 for t in totals]
        node.target = default
        node.args = (x, w, bias, _ints(stride, dims), pads, dil, int(groups))
        count += 1
    if count:
        gm.recompile()
    return count
