"""The FP32 baseline ONNX of the stage-1 model (opset 17, dynamic batch)."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from tinyprec.errors import ModelFormatError

if TYPE_CHECKING:  # pragma: no cover
    import torch

OPSET = 17


def fp32_onnx_bytes(model: "torch.nn.Module", example_input: "torch.Tensor") -> bytes:
    """Serialize ``model`` (eval mode, float32) to ONNX with input "input", output "output", batch dynamic.

    Uses torch.onnx's TorchScript exporter, which needs nothing from the network and takes about a
    second where the dynamo exporter takes tens; the result is checked with onnx.checker.
    """
    import copy

    import onnx
    import torch

    model = copy.deepcopy(model).float().eval()
    _explicit_same_padding(model)
    example = example_input[:1].detach().float().cpu()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
    except Exception as err:  # torch.onnx raises many kinds; report it as one line
        raise ModelFormatError(
            f"FP32 ONNX export of {type(model).__name__} failed: {str(err).splitlines()[0] if str(err) else err!r}; "
            "set export.onnx = false in the recipe to skip the ONNX files"
        ) from err
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def _explicit_same_padding(model: "torch.nn.Module") -> None:
    """Conv padding="same" -> the equal integer padding where it is symmetric (in place, on the copy).

    The TorchScript exporter writes "same" as ONNX auto_pad SAME_*, which ONNX Runtime refuses together
    with a dilation; explicit pads mean the same and run everywhere.
    """
    from torch import nn

    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.padding == "same" and m.padding_mode == "zeros":
            totals = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            if all(t % 2 == 0 for t in totals):
                m.padding = tuple(t // 2 for t in totals)
