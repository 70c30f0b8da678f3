"""Rewrite ``x.unbind(d)`` and indexing by a constant list (``x[:, [0, 2]]``) into ops that have rows.

Both only move int8 values, so each becomes ops the quantizer annotates with the input's qparams and the
lowering already handles, right after export (:func:`tinyprec.quant.capture.export_for_quant`):

- ``unbind(x, d)`` read through ``getitem`` -> one ``aten.select.int(x, d, k)`` per piece read (the
  lowering: STRIDED_SLICE + a RESHAPE, or a TRANSPOSE where dropping the dim reorders the NHWC storage).
- ``aten.index.Tensor(x, [None, .., idx])`` (and ``x.index_select(d, idx)``) with ``idx`` a constant 1-D
  integer tensor (a Python list in the source becomes a lifted constant, or a registered buffer) on one dim -> one ``aten.slice.Tensor`` per run of indices in
  arithmetic progression (step >= 1), then ``aten.cat`` of the runs when there is more than one. A
  STRIDED_SLICE per run + CONCATENATION is exact (copies) and needs no new TFLM kernel; ``[0, 2, 4]`` is
  one strided slice. Anything else (a mask, an index computed from activations, two indexed dims) stays
  and the op check refuses it.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def _copy_meta(new: fx.Node, old: fx.Node, val: Any = None) -> None:
    for key in ("nn_module_stack", "stack_trace"):
        if key in old.meta:
            new.meta[key] = old.meta[key]
    if val is not None:
        new.meta["val"] = val


def index_runs(idx: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, step) slices whose concatenation reads ``idx`` in order (indices already >= 0).

    >>> index_runs([0, 2, 4, 5, 1])
    [(0, 5, 2), (5, 6, 1), (1, 2, 1)]
    >>> index_runs([3, 3])
    [(3, 4, 1), (3, 4, 1)]
    """
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(idx):
        start, step, j = idx[i], 1, i + 1
        if j < len(idx) and idx[j] - idx[i] >= 1:
            step = idx[j] - idx[i]
            while j < len(idx) and idx[j] - idx[j - 1] == step:
                j += 1
        runs.append((start, idx[j - 1] + 1, step))
        i = j
    return runs


def _constant(gm: fx.GraphModule, node: Any) -> Any:
    """The tensor behind a lifted constant (``lift_fresh_copy(get_attr)`` or a bare ``get_attr``), or None."""
    import torch

    if getattr(node, "target", None) is torch.ops.aten.lift_fresh_copy.default:
        node = node.args[0]
    if getattr(node, "op", None) != "get_attr":
        return None
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _unbind(gm: fx.GraphModule, node: fx.Node) -> bool:
    import torch

    users = list(node.users)
    if not users or any(u.target is not operator.getitem for u in users):
        return False
    x = node.args[0]
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    for user in users:
        if not user.users:  # a piece nobody reads (a, _, c = x.unbind(1)) gets no op at all
            gm.graph.erase_node(user)
            continue
        with gm.graph.inserting_before(user):
            piece = gm.graph.call_function(torch.ops.aten.select.int, (x, dim, int(user.args[1])))
        _copy_meta(piece, node, user.meta.get("val"))
        user.replace_all_uses_with(piece)
        gm.graph.erase_node(user)
    gm.graph.erase_node(node)
    return True


def _index(gm: fx.GraphModule, node: fx.Node) -> bool:
    import torch

    aten = torch.ops.aten
    x = node.args[0]
    val = getattr(x, "meta", {}).get("val")
    if node.target is aten.index_select.default:
        picked = [(int(node.args[1]) % len(val.shape), node.args[2])] if val is not None else []
    else:
        picked = [(d, i) for d, i in enumerate(node.args[1]) if i is not None]
    if val is None or len(picked) != 1:
        return False
    dim, index_node = picked[0]
    const = _constant(gm, index_node)
    if const is None or const.dim() != 1 or const.dtype not in (torch.int64, torch.int32) or const.numel() == 0:
        return False
    size = val.shape[dim]
    if not isinstance(size, int):
        return False
    idx = [int(v) for v in const.tolist()]
    if any(not -size <= v < size for v in idx):
        return False
    runs = index_runs([v % size for v in idx])
    pieces = []
    for start, stop, step in runs:
        with gm.graph.inserting_before(node):
            piece = gm.graph.call_function(aten.slice.Tensor, (x, dim, start, stop, step))
        piece_val = None
        if val is not None:
            piece_val = val.narrow(dim, 0, len(range(start, stop, step))) if hasattr(val, "narrow") else None
        _copy_meta(piece, node, piece_val)
        pieces.append(piece)
    new = pieces[0]
    if len(pieces) > 1:
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(aten.cat.default, (pieces, dim))
        _copy_meta(new, node, node.meta.get("val"))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    if index_node is not None and not index_node.users:
        gm.graph.erase_node(index_node)
    return True


def select_rewrite(gm: fx.GraphModule) -> int:
    """Rewrite in place (see the module doc); returns how many nodes it rewrote."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is aten.unbind.int:
            count += _unbind(gm, node)
        elif node.target in (aten.index.Tensor, aten.index_select.default):
            count += _index(gm, node)
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
