"""Argument checks of issue 11's activation / arithmetic rows of :data:`tinyprec.optable.table.OPS` (ops-act).

Each returns the rule a node breaks (one sentence with the fix), or None. torch-free: a check reads only
``node.target``, ``node.args``, ``node.kwargs`` and ``node.meta['val'].shape``.
"""

from __future__ import annotations

from typing import Any


def node_arg(node: Any, i: int, name: str, default: Any) -> Any:
    """Argument ``i`` of ``node``, given by position or as keyword ``name``, else ``default``."""
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def node_rank(value: Any) -> int | None:
    """The rank of a node's traced value (``meta['val']``), or None where it has none."""
    val = getattr(value, "meta", {}).get("val") if value is not None else None
    shape = getattr(val, "shape", None)
    return None if shape is None else len(shape)


def is_node(value: Any) -> bool:
    """Whether ``value`` is a graph node (not a Python number or None)."""
    return hasattr(value, "meta") and hasattr(value, "users")


def check_scalar(node: Any) -> str | None:
    c = node.args[1] if len(node.args) > 1 else None
    name = str(node.target)
    if name.startswith("aten.div") and is_node(c):
        return "division only by a constant number (x / 4.0); divide by a tensor is not lowered (no int8 DIV)"
    if not isinstance(c, (int, float)) or isinstance(c, bool) or c != c or abs(c) == float("inf"):
        return f"the constant operand must be a finite Python number, got {c!r}"
    if name.startswith("aten.div") and node_arg(node, 2, "rounding_mode", None) is not None:
        return "division with a rounding_mode (floor/trunc) is not lowered"
    if node.kwargs.get("alpha", 1) != 1:
        return "alpha != 1 is not supported; scale the operand with a mul"
    if c == 0 and not name.startswith(("aten.add", "aten.rsub")):
        return "a multiplication by 0 (or division by 0) gives a constant: remove it"
    return None


def check_elu(node: Any) -> str | None:
    alpha, scale, in_scale = (float(node_arg(node, i, k, 1.0))
                              for i, k in ((1, "alpha"), (2, "scale"), (3, "input_scale")))
    if (alpha, scale, in_scale) != (1.0, 1.0, 1.0):
        return f"ELU only with alpha=1 (TFLite's ELU has no alpha), got alpha={alpha:g}; use nn.ELU()"
    return None


def check_mean_any(node: Any) -> str | None:
    dims = node_arg(node, 1, "dim", None)
    rank = node_rank(node.args[0]) or 0
    if dims is None or not dims:
        return "mean over every dim (a scalar) is not lowered; give the dims, e.g. x.mean((2, 3))"
    axes = {int(d) % rank for d in dims} if rank else set()
    if 0 in axes:
        return "mean over the batch dim is not supported"
    if not 2 <= rank <= 4:
        return f"mean of a rank-{rank} tensor: ranks 2 to 4 only"
    keep = bool(node_arg(node, 2, "keepdim", False))
    if not keep and rank - len(axes) < 2:
        return "the mean leaves only the batch dim; keep it 2-D (keepdim=True, or mean fewer dims)"
    shape = getattr(getattr(node.args[0], "meta", {}).get("val"), "shape", None)
    if not keep and shape is not None and rank - len(axes) > 2:
        from tinyprec.ir.layout import storage_order

        kept = tuple(1 if i in axes or i == 0 else int(d) for i, d in enumerate(shape))
        out = tuple(d for i, d in enumerate(kept) if i not in axes)
        if list(storage_order(kept)) != list(storage_order(out)):
            return ("dropping this dim would reorder the NHWC data (it needs a TRANSPOSE); use keepdim=True "
                    "and reshape where the order allows")
    return None


def check_amax(node: Any) -> str | None:
    dims = node_arg(node, 1, "dim", None)
    if dims is None or not list(dims):
        return "amax over every dim (a scalar) is not lowered; give the dims, e.g. x.amax((2, 3))"
    return check_mean_any(node)  # the same axes and layout rules as a mean


def check_adaptive_max(node: Any) -> str | None:
    size = node.args[1]
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    if any(int(s) != 1 for s in sizes):
        return f"adaptive max pooling only to size 1 (global max pooling), got {tuple(sizes)}; use MaxPool"
    return "adaptive max pooling whose indices are used (return_indices=True) has no TFLM op"
