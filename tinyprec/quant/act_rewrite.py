"""Rewrite ops TFLM has no int8 kernel for into the ops it has, right after export (before the op check).

Each rewrite puts the quantizer's observers exactly where TFLM requantizes, so the fake-quant program
(QAT and PTQ) computes what the .tflite computes, op for op:

- ``silu(x)`` -> ``x * sigmoid(x)``: LOGISTIC (output fixed at 1/256, -128) then MUL.
- ``hardsigmoid(x)`` -> ``relu6(x + 3) / 6``: ADD of a constant with a fused RELU6, then MUL by a constant.
- ``gelu(x)`` (exact or tanh) -> the tanh form ``x * sigmoid(x * (c1 + c3 * x**2))`` with
  ``c1 = 2 * sqrt(2 / pi)`` and ``c3 = c1 * 0.044715``: MUL, MUL by a constant, ADD of a constant, MUL,
  LOGISTIC, MUL (the pinned TFLM registers no GELU kernel). The tanh form differs from the exact (erf) form
  by at most 0.0005 in float, far below one int8 step of any usual scale.
- ``x + c``, ``x - c``, ``x * c`` with a Python number ``c`` -> ``aten.add.Scalar`` / ``aten.mul.Scalar``
  (ADD / MUL with an int8 constant); ``x / c`` stays ``aten.div.Tensor`` (MUL by the constant ``1 / c``)
  and ``c - x`` stays ``aten.rsub.Scalar`` (SUB from the constant).
- a BatchNorm that cannot fold into a conv/linear before it (at the input, after an add, a pool, ...) ->
  a depthwise 1x1 convolution with the BatchNorm's per-channel scale and shift as weight and bias
  (DEPTHWISE_CONV_2D: one requantization, per-channel int8 weights), its running statistics frozen;
  on an (N, F) input it runs as (N, F, 1) between an unsqueeze and a squeeze (two RESHAPEs).
- ``torch.max(x, dim)`` with its indices unused -> ``amax(x, [dim])``.
- ``adaptive_max_pool1d/2d(x, 1)`` -> ``amax`` over the spatial dims (MAX_POOL_2D over the whole map;
  an amax over other dims is REDUCE_MAX).
- ``layer_norm`` over the last dim -> MEAN, SUB, MUL, MEAN, ADD eps, RSQRT, MUL (+ MUL / ADD by its weight
  and bias as constants): :mod:`tinyprec.quant.norm_rewrite`.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx

GELU_C1 = 2.0 * math.sqrt(2.0 / math.pi)  # sigmoid(2u) = (1 + tanh(u)) / 2
GELU_C3 = GELU_C1 * 0.044715


def _is_node(value: Any) -> bool:
    return hasattr(value, "meta") and hasattr(value, "users")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Builder:
    """Inserts nodes before ``anchor`` carrying ``anchor``'s module path, source line and shape."""

    def __init__(self, gm: fx.GraphModule, anchor: fx.Node) -> None:
        self.gm, self.anchor = gm, anchor

    def __call__(self, target: Any, *args: Any) -> fx.Node:
        with self.gm.graph.inserting_before(self.anchor):
            node = self.gm.graph.call_function(target, tuple(args))
        for key in ("nn_module_stack", "stack_trace", "val", "tensor_meta"):
            if key in self.anchor.meta:
                node.meta[key] = self.anchor.meta[key]
        return node


def _replace(gm: fx.GraphModule, old: fx.Node, new: fx.Node) -> None:
    old.replace_all_uses_with(new)
    gm.graph.erase_node(old)


def _rewrite_node(gm: fx.GraphModule, node: fx.Node, aten: Any) -> bool:
    """Rewrite one node in place when it is one of this module's cases; True when it did."""
    t, b = node.target, _Builder(gm, node)
    if t in (aten.silu.default, aten.silu_.default):
        x = node.args[0]
        _replace(gm, node, b(aten.mul.Tensor, x, b(aten.sigmoid.default, x)))
    elif t in (aten.hardsigmoid.default, aten.hardsigmoid_.default):
        x = node.args[0]
        _replace(gm, node, b(aten.div.Tensor, b(aten.relu6.default, b(aten.add.Scalar, x, 3.0)), 6.0))
    elif t is aten.gelu.default:
        x = node.args[0]
        x2 = b(aten.mul.Tensor, x, x)
        inner = b(aten.add.Scalar, b(aten.mul.Scalar, x2, GELU_C3), GELU_C1)
        _replace(gm, node, b(aten.mul.Tensor, x, b(aten.sigmoid.default, b(aten.mul.Tensor, x, inner))))
    elif t in (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor) and len(node.args) == 2:
        x, c = node.args
        if not (_is_node(x) and _number(c)) or node.kwargs.get("alpha", 1) != 1:
            return False
        if t is aten.mul.Tensor:
            _replace(gm, node, b(aten.mul.Scalar, x, float(c)))
        else:
            _replace(gm, node, b(aten.add.Scalar, x, float(c) if t is aten.add.Tensor else -float(c)))
    elif t in (aten.adaptive_max_pool2d.default, aten.adaptive_max_pool1d.default):
        return _global_max(gm, node, aten)
    elif t is aten.max.dim:
        return _max_values(gm, node, aten)
    elif str(t) in _BN_TARGETS:
        return _standalone_bn(gm, node, aten)
    elif t is aten.layer_norm.default:
        from tinyprec.quant.norm_rewrite import rewrite_layer_norm

        return rewrite_layer_norm(gm, node, aten)
    else:
        return False
    return True


def _global_max(gm: fx.GraphModule, node: fx.Node, aten: Any) -> bool:
    size = node.args[1]
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    users = list(node.users)
    if any(int(s) != 1 for s in sizes) or any(u.target is not operator.getitem for u in users):
        return False
    if any(int(u.args[1]) != 0 and u.users for u in users):
        return False  # the indices are used: not a pooling TFLM has
    rank = len(node.args[0].meta["val"].shape)
    for user in users:
        if int(user.args[1]) == 0:
            _replace(gm, user, _Builder(gm, user)(aten.amax.default, node.args[0], list(range(2, rank)), True))
        else:
            gm.graph.erase_node(user)
    gm.graph.erase_node(node)
    return True


def _max_values(gm: fx.GraphModule, node: fx.Node, aten: Any) -> bool:
    """``torch.max(x, dim, keepdim)`` whose indices nobody reads -> ``amax(x, [dim], keepdim)``."""
    users = list(node.users)
    if not users or any(u.target is not operator.getitem or (int(u.args[1]) != 0 and u.users) for u in users):
        return False
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    keep = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
    for user in users:
        if int(user.args[1]) == 0:
            _replace(gm, user, _Builder(gm, user)(aten.amax.default, node.args[0], [dim], keep))
        else:
            gm.graph.erase_node(user)
    gm.graph.erase_node(node)
    return True


_BN_TARGETS = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")


def _standalone_bn(gm: fx.GraphModule, node: fx.Node, aten: Any) -> bool:
    """A BatchNorm the quantizer cannot fold (see optable's check) -> depthwise 1x1 conv, frozen statistics."""
    import torch

    from tinyprec.quant.bnfold import _attr
    from tinyprec.optable.table import OPS

    check = OPS[str(node.target)].check
    x = node.args[0]
    val = x.meta.get("val") if _is_node(x) else None
    if check is None or check(node) is None or val is None or len(val.shape) not in (2, 3, 4):
        return False
    users = list(node.users)
    tuple_out = str(node.target) != "aten.batch_norm.default"
    if not users or tuple_out and any(u.target is not operator.getitem or (int(u.args[1]) != 0 and u.users) for u in users):
        return False
    params = [_attr(gm, node.args[i]) if node.args[i] is not None else None for i in range(1, 5)]
    if params[2] is None or params[3] is None:
        return False  # no running statistics (track_running_stats=False): nothing to freeze
    eps = float(node.args[7] if not tuple_out else node.args[6])
    channels = int(val.shape[1])
    with torch.no_grad():
        gamma = params[0] if params[0] is not None else torch.ones(channels)
        beta = params[1] if params[1] is not None else torch.zeros(channels)
        scale = gamma / torch.sqrt(params[3] + eps)
        shift = beta - params[2] * scale
    index = sum(1 for name, _ in gm.named_parameters() if name.startswith("_standalone_bn_")) // 2
    w_name, b_name = f"_standalone_bn_{index}_weight", f"_standalone_bn_{index}_bias"
    shape = (channels, 1, 1, 1) if len(val.shape) == 4 else (channels, 1, 1)  # (N, F) runs as (N, F, 1)
    gm.register_parameter(w_name, torch.nn.Parameter(scale.detach().reshape(shape).clone().float()))
    gm.register_parameter(b_name, torch.nn.Parameter(shift.detach().clone().float()))
    with gm.graph.inserting_before(node):
        w_node, b_node = gm.graph.get_attr(w_name), gm.graph.get_attr(b_name)
    w_node.meta["val"] = getattr(gm, w_name)
    b_node.meta["val"] = getattr(gm, b_name)
    conv = aten.conv2d.default if len(val.shape) == 4 else aten.conv1d.default
    dims = max(len(val.shape) - 2, 1)
    anchor = users[0] if tuple_out else node
    build = _Builder(gm, anchor)
    made = []
    source = x
    if len(val.shape) == 2:  # BatchNorm1d on (N, F): unsqueeze -> depthwise conv1d -> squeeze
        source = build(aten.unsqueeze.default, x, 2)
        source.meta["val"] = val.unsqueeze(2)
        made.append(source)
    new = build(conv, source, w_node, b_node, [1] * dims, [0] * dims, [1] * dims, channels)
    made.append(new)
    if len(val.shape) == 2:
        new.meta["val"] = val.unsqueeze(2)
        new = build(aten.squeeze.dims, new, [2])
        new.meta["val"] = val
        made.append(new)
    for n in made:
        n.meta["nn_module_stack"] = node.meta.get("nn_module_stack")
        n.meta["stack_trace"] = node.meta.get("stack_trace")
    for user in users if tuple_out else []:
        if int(user.args[1]) == 0:
            _replace(gm, user, new)
        else:
            gm.graph.erase_node(user)
    if tuple_out:
        gm.graph.erase_node(node)
    else:
        _replace(gm, node, new)
    return True


def rewrite_for_tflm(gm: fx.GraphModule) -> int:
    """Apply this module's rewrites to ``gm`` in place; returns how many nodes it rewrote."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and _rewrite_node(gm, node, aten):
            count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
