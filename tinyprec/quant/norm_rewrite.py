"""LayerNorm over the last dim -> ops TFLM runs in int8, right after export (issue 11).

TFLM registers no LAYER_NORM kernel, so ``layer_norm(x, (F,), gamma, beta, eps)`` becomes, in the exported
graph, the ops the .tflite will hold, each with its own int8 requantization that the fake-quant program
observes exactly where TFLM requantizes::

    mean = x.mean(-1, keepdim=True)          MEAN (keep_dims; AVERAGE_POOL_2D on (N, T, F)), x's qparams
    d    = x - mean                          SUB (broadcast over the last dim)
    var  = (d * d).mean(-1, keepdim=True)    MUL, MEAN with its own output range (rescaling)
    r    = rsqrt(var + eps)                  ADD of the constant eps, RSQRT
    y    = d * r                             MUL (broadcast)
    y    = y * gamma + beta                  MUL and ADD with int8 constants (elementwise_affine only)

``gamma`` and ``beta`` become parameters of shape (1, ..., 1, F) (QAT trains them; each is one per-tensor
int8 constant in the .tflite). The variance is held in int8, so a token whose variance is far below the
largest one seen in calibration gets a coarse 1/sqrt; the ADD of eps keeps its float meaning (a constant
+1 with scale eps) and RSQRT maps an input at its zero point (variance and eps both rounded to 0) to its
int8 maximum, as TFLM does (the fake-quant program's +inf saturates to the same step). Tokens of constant
features (padding) meet exactly that: PTQ's observer leaves their 1/sqrt(eps) out of the range (RSQRT_CAP),
and QAT's fake quant of var + eps turns a rounded 0 into 1e-20 (FLOORED), so 1/sqrt stays finite and its
gradient 0, not NaN.

:func:`check_layer_norm` (the optable row's check) says what this rewrite cannot do; the rewrite leaves such
a node alone, and the op check refuses it with that reason.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tinyprec.optable.norm import FLOORED, OWN_QPARAMS, RSQRT_CAP, check_layer_norm  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def _param(gm: fx.GraphModule, anchor: fx.Node, name: str, value: Any) -> fx.Node:
    import torch

    gm.register_parameter(name, torch.nn.Parameter(value.detach().clone().float()))
    with gm.graph.inserting_before(anchor):
        node = gm.graph.get_attr(name)
    node.meta["val"] = getattr(gm, name)
    return node


def rewrite_layer_norm(gm: fx.GraphModule, node: fx.Node, aten: Any) -> bool:
    """Replace one ``aten.layer_norm`` node in place by its TFLM decomposition; False when it cannot."""
    from tinyprec.quant.bnfold import _attr

    if check_layer_norm(node) is not None:
        return False
    x = node.args[0]
    val = x.meta.get("val") if hasattr(x, "meta") else None
    if val is None:
        return False
    rank, features = len(val.shape), int(val.shape[-1])
    eps = float(node.args[4]) if len(node.args) > 4 else float(node.kwargs.get("eps", 1e-5))
    last = [rank - 1]
    made: list[fx.Node] = []

    def op(target: Any, *args: Any, meta: Any) -> fx.Node:
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(target, tuple(args))
        new.meta["val"] = meta
        made.append(new)
        return new

    kept = val.mean(dim=last, keepdim=True)
    mean = op(aten.mean.dim, x, last, True, meta=kept)
    d = op(aten.sub.Tensor, x, mean, meta=val)
    sq = op(aten.mul.Tensor, d, d, meta=val)
    var = op(aten.mean.dim, sq, last, True, meta=kept)
    var.meta[OWN_QPARAMS] = True  # a MEAN that rescales: its range is the variances', not the squares'
    shifted = op(aten.add.Scalar, var, eps, meta=kept)
    shifted.meta[FLOORED] = True  # QAT: no 1/sqrt(0) = inf (and NaN gradient) for constant tokens
    inv = op(aten.rsqrt.default, shifted, meta=kept)
    # A token of (near) constant features has d ~ 0, so its 1/sqrt multiplies zeros: PTQ observes it in float
    # (1/sqrt(eps) = 316 for eps 1e-5), which would spend the whole int8 range on it; leave it out of the
    # range and let it saturate to the top step, as TFLM does for a variance that rounds to 0.
    inv.meta[RSQRT_CAP] = 1.0 / math.sqrt(3.0 * eps)
    y = op(aten.mul.Tensor, d, inv, meta=val)
    index = 0
    while any(hasattr(gm, f"_layer_norm_{index}_{kind}") for kind in ("weight", "bias")):
        index += 1
    shape = (1,) * (rank - 1) + (features,)
    for arg, kind, target in ((node.args[2], "weight", aten.mul.Tensor), (node.args[3], "bias", aten.add.Tensor)):
        if arg is None:
            continue
        data = _attr(gm, arg)
        y = op(target, y, _param(gm, node, f"_layer_norm_{index}_{kind}", data.reshape(shape)), meta=val)
    for new in made:
        for key in ("nn_module_stack", "stack_trace"):
            if key in node.meta:
                new.meta[key] = node.meta[key]
    old = [a for a in node.args[2:4] if a is not None]
    node.replace_all_uses_with(y)
    gm.graph.erase_node(node)
    for a in old:
        if not a.users:
            gm.graph.erase_node(a)
    return True
