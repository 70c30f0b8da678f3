"""The converted graph's plumbing ops: quantize / dequantize overloads, and PyTorch dim -> IR axis.

The bottom of the lowering package: every other module may import it; it imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

import torch


def _quantized_decomposed() -> Any:
    """The quantized_decomposed op namespace, registering it (torch registers it lazily) if needed."""
    if not hasattr(torch.ops.quantized_decomposed, "quantize_per_tensor"):
        import importlib
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("torch.ao.quantization.fx._decomposed")
    return torch.ops.quantized_decomposed


aten = torch.ops.aten
qd = _quantized_decomposed()

QUANTIZE_OPS = (qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor, qd.quantize_per_tensor.tensor2)
DEQUANTIZE_OPS = (
    qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor2,
)
_DQ_CONST_OPS = DEQUANTIZE_OPS + (qd.dequantize_per_channel.default,)
# PyTorch dim -> IR (NHWC) axis, by rank.
_AXIS = {4: (0, 3, 1, 2), 3: (0, 3, 2), 2: (0, 1)}
