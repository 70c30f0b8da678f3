"""Argument checks of integer indexing, torch.stack, unbind and constant-list indexing (torch-free).

Each returns the broken rule (one sentence, what to use instead) or None, as the other checks of
:data:`tinyprec.optable.table.OPS`. ``unbind`` and ``index.Tensor`` are rewritten right after export
(``quant/select_rewrite.py``); a node of either that is still in the graph is one the rewrite could not do.
"""

from __future__ import annotations

from typing import Any

from tinyprec.optable.checks import node_arg as _arg, node_rank as _rank


def check_select(node: Any) -> str | None:
    rank = _rank(node.args[0])
    if rank is None:
        return None
    if int(_arg(node, 1, "dim", 0)) % rank == 0:
        return "indexing the batch dim is not supported"
    if rank not in (3, 4):
        return (f"indexing a dim of a rank-{rank} tensor away: ranks 3 and 4 only (on (N, F) keep the dim with "
                "x[:, i:i + 1])")
    return None


def check_stack(node: Any) -> str | None:
    ranks = {r for r in (_rank(t) for t in node.args[0]) if r is not None}
    if not ranks:
        return None
    if len(ranks) > 1:
        return "stack tensors of one rank"
    rank = ranks.pop() + 1
    if rank not in (3, 4):
        return f"stacking rank-{rank - 1} tensors: (N, F) or (N, C, L) only (the IR holds ranks 2 to 4)"
    if int(_arg(node, 1, "dim", 0)) % rank == 0:
        return "stacking along the batch dim is not supported"
    return None


def check_unbind(node: Any) -> str | None:
    return "unbind is lowered only when its pieces are read one by one (a, b = x.unbind(1)); index x[:, i] instead"


def check_index(node: Any) -> str | None:
    return ("indexing by a tensor only with a constant list of ints on one non-batch dim (x[:, [0, 2]]); a mask or "
            "an index computed in forward has no int8 lowering: use slices and torch.cat")


def check_lifted_constant(node: Any) -> str | None:
    users = list(getattr(node, "users", ()))
    if users and all(str(u.target) in ("aten.index.Tensor", "aten.index_select.default") for u in users):
        return None  # the index's own check says what is wrong with it
    return "a tensor constant made in forward has no int8 operand form: register it as a buffer"
