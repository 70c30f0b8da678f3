"""Rewrite chunk / split / split_with_sizes followed by getitem into one ``aten.slice.Tensor`` per piece.

torch.export keeps ``x.chunk(2, 1)`` as a tuple-valued op read through ``getitem``; a slice per piece is
what PT2E can annotate (each piece shares x's qparams) and what the lowering already turns into
STRIDED_SLICE, so the rewrite runs right after export (:func:`tinyprec.quant.capture.export_for_quant`).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx


def _pieces(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], size: int) -> tuple[list[int], int] | None:
    """(piece sizes, dim) of a chunk/split node over a dim of ``size`` elements, or None."""
    import torch

    aten = torch.ops.aten
    dim = int(args[2]) if len(args) > 2 else int(kwargs.get("dim", 0))
    if target is aten.chunk.default:
        chunks = int(args[1])
        step = -(-size // chunks)
        sizes = [min(step, size - k) for k in range(0, size, step)]
    elif target is aten.split.Tensor:
        step = int(args[1])
        sizes = [min(step, size - k) for k in range(0, size, step)]
    elif target is aten.split_with_sizes.default:
        sizes = [int(s) for s in args[1]]
    else:
        return None
    return sizes, dim


def split_to_slices(gm: fx.GraphModule) -> int:
    """Rewrite in place; returns the number of split ops rewritten."""
    import torch

    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not node.args:
            continue
        x = node.args[0]
        val = getattr(x, "meta", {}).get("val")
        users = list(node.users)
        if val is None or not users or any(u.target is not operator.getitem for u in users):
            continue
        rank = len(val.shape)
        dim_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if not isinstance(dim_arg, int) or not isinstance(val.shape[int(dim_arg) % rank], int):
            continue
        found = _pieces(node.target, node.args, node.kwargs, int(val.shape[int(dim_arg) % rank]))
        if found is None:
            continue
        sizes, dim = found
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        for user in users:
            k = int(user.args[1])
            with gm.graph.inserting_before(user):
                piece = gm.graph.call_function(torch.ops.aten.slice.Tensor,
                                               (x, dim % rank, starts[k], starts[k] + sizes[k], 1))
            piece.meta.update(user.meta)
            piece.meta["nn_module_stack"] = node.meta.get("nn_module_stack", user.meta.get("nn_module_stack"))
            piece.meta["stack_trace"] = node.meta.get("stack_trace")
            user.replace_all_uses_with(piece)
            gm.graph.erase_node(user)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
