"""LayerNorm's row of the op table: what the export-time rewrite (tinyprec.quant.norm_rewrite) can decompose,
and the node.meta tags it leaves for the quantizer and the observers. Torch-free: reads node args and meta only."""

from __future__ import annotations

from typing import Any

#: node.meta key set on the variance's mean: the quantizer gives it its own output range (optable's role_of).
OWN_QPARAMS = "tinyprec_own_qparams"
#: node.meta key set on the rsqrt: its observer ignores values above this (variances below 2 eps).
RSQRT_CAP = "tinyprec_rsqrt_cap"
#: node.meta key set on the ADD of eps: in QAT its fake quant floors a 0 at 1e-20 (observers.FlooredFakeQuantize).
FLOORED = "tinyprec_floored"


def _is_attr(value: Any) -> bool:
    return value is None or getattr(value, "op", None) == "get_attr"


def check_layer_norm(node: Any) -> str | None:
    """Why ``layer_norm`` cannot be decomposed for TFLM (None when it can)."""
    shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
    dims = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if len(dims) != 1:
        return (f"LayerNorm over {len(dims)} dims {tuple(dims)}: only the last dim is lowered (normalized_shape "
                "of one int); normalise over the features only")
    val = getattr(node.args[0], "meta", {}).get("val")
    rank = len(val.shape) if val is not None and hasattr(val, "shape") else None
    if rank is not None and not 2 <= rank <= 4:
        return f"LayerNorm on a rank-{rank} input: ranks 2-4 only"
    if not all(_is_attr(a) for a in node.args[2:4]):
        return "LayerNorm whose weight/bias are computed tensors: only its own parameters (or none) are lowered"
    return None
