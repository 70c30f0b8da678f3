"""tinyprec.zoo: reference architectures (PyTorch, NCHW), built by name.

Every model outputs logits (no softmax) or, for the autoencoder, the reconstruction. Models use only ops
the int8 pipeline lowers: conv1d/conv2d (incl. depthwise), linear, relu, add, avg/max pool, global avg pool,
flatten, pad, dropout and batch norm (folded at quantization).

>>> sorted(ARCHITECTURES)
['digits_cnn', 'ds_cnn', 'fc_autoencoder', 'mnist1d_cnn', 'mobilenet_v1', 'resnet8']
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyprec.errors import RecipeError


@dataclass(frozen=True)
class ArchSpec:
    """What the zoo knows about one architecture without importing torch."""

    module: str
    input_shape: tuple[int, ...]
    num_classes: int
    task: str  # "classification" | "autoencoder"
    summary: str


ARCHITECTURES: Mapping[str, ArchSpec] = {
    "digits_cnn": ArchSpec("digits_cnn", (1, 8, 8), 10, "classification", "small CNN for 8x8 digits"),
    "mnist1d_cnn": ArchSpec("mnist1d_cnn", (1, 40), 10, "classification", "1-D CNN for MNIST-1D"),
    "ds_cnn": ArchSpec("ds_cnn", (1, 49, 10), 12, "classification", "MLPerf Tiny KWS DS-CNN"),
    "resnet8": ArchSpec("resnet8", (3, 32, 32), 10, "classification", "MLPerf Tiny IC ResNet-8"),
    "mobilenet_v1": ArchSpec("mobilenet_v1", (3, 96, 96), 2, "classification", "MLPerf Tiny VWW MobileNetV1 0.25"),
    "fc_autoencoder": ArchSpec("fc_autoencoder", (640,), 640, "autoencoder", "MLPerf Tiny AD dense autoencoder"),
}


def arch_arguments(arch: str) -> dict[str, Any]:
    """The keyword arguments ``arch`` accepts, with their defaults."""
    builder = _builder(arch)
    return {name: p.default for name, p in inspect.signature(builder).parameters.items()}


def _builder(arch: str) -> Any:
    if arch not in ARCHITECTURES:
        raise RecipeError(f"model.arch: unknown architecture '{arch}'; choose one of {', '.join(sorted(ARCHITECTURES))}")
    module = importlib.import_module(f"tinyprec.zoo.{ARCHITECTURES[arch].module}")
    return module.build


def build_model(arch: str, args: Mapping[str, Any] | None = None) -> Any:
    """Build the zoo architecture ``arch`` (a torch.nn.Module) with keyword ``args``.

    Raises RecipeError for an unknown architecture or argument, naming what is allowed.

    >>> build_model("digits_cnn", {"num_classes": 3})[-1].out_features
    3
    """
    builder = _builder(arch)
    allowed = inspect.signature(builder).parameters
    args = dict(args or {})
    for key, value in args.items():
        if key not in allowed:
            raise RecipeError(
                f"model.args.{key}: '{arch}' has no argument '{key}'; allowed: {', '.join(allowed) or 'none'}"
            )
        default = allowed[key].default
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise RecipeError(f"model.args.{key}: expected a list of {len(default)} numbers, got {value!r}")
            args[key] = tuple(value)
        elif isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise RecipeError(f"model.args.{key}: expected {type(default).__name__}, got {value!r}")
    return builder(**args)


def folded_param_count(model: Any) -> int:
    """Constant parameters after folding batch norm: conv/linear weights plus one bias per output channel.

    This is what an int8 .tflite stores for the model (weights int8, biases int32), the figure MLPerf
    Tiny's reference models are compared by.
    """
    from torch import nn

    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            out = module.out_channels if isinstance(module, (nn.Conv1d, nn.Conv2d)) else module.out_features
            total += module.weight.numel() + out
    return total


__all__ = ["ARCHITECTURES", "ArchSpec", "arch_arguments", "build_model", "folded_param_count"]
