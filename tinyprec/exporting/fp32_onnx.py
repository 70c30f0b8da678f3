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
