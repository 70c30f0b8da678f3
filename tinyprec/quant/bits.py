"""Per-layer precision: which layers get 4-bit weights or 16-bit activations (torch-free).

A *layer* is a Conv1d/Conv2d/Linear module of the user's model, named by its module path
(``features.0``). Its :class:`LayerPrecision` says the bits of its weights (8 or 4) and of its OUTPUT
activation (8 or 16), which is also what the next layer reads; a layer computes in the bits of its
output (TFLM's 16x8 kernels read and write int16), so where neighbouring layers differ the
lowering puts a QUANTIZE (int8 <-> int16) on the edge.

Named presets: ``int8`` (w8a8), ``w4a8`` and ``a16w8``. ``QuantConfig.bits`` picks one for every
layer ("mixed": the search of :mod:`tinyprec.quant.search` picks per layer; without a search result
it starts from int8), ``QuantConfig.overrides`` re-assigns layers by fnmatch pattern (later patterns
win), and ``quantize_model(..., assignment=...)`` takes a finished module path -> precision map.

>>> resolve_assignment(["features.0", "features.3", "classifier"], "int8", (("features.*", "w4a8"),))
... # doctest: +NORMALIZE_WHITESPACE
{'features.0': LayerPrecision(weight_bits=4, act_bits=8), 'features.3': LayerPrecision(weight_bits=4, act_bits=8),
 'classifier': LayerPrecision(weight_bits=8, act_bits=8)}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tinyprec.errors import QuantSpecError, RecipeError


@dataclass(frozen=True)
class LayerPrecision:
    """Bits of one layer's weights and of its output activation."""

    weight_bits: Literal[4, 8] = 8
    act_bits: Literal[8, 16] = 8

    @property
    def name(self) -> str:
        """The preset name when there is one ("int8", "w4a8", "a16w8"), else "w{w}a{a}"."""
        for key, value in PRESETS.items():
            if value == self:
                return key
        return f"w{self.weight_bits}a{self.act_bits}"


PRESETS: dict[str, LayerPrecision] = {
    "int8": LayerPrecision(8, 8),
    "w4a8": LayerPrecision(4, 8),
    "a16w8": LayerPrecision(8, 16),
}
#: Values of ``[quant] precision`` / ``QuantConfig.bits``.
BIT_MODES = ("int8", "mixed", "w4a8", "a16w8")
#: The pre-issue-10 meaning of ``[quant] precision`` (autocast), now ``[quant] autocast``.
AUTOCAST_VALUES = ("auto", "bf16", "fp16", "fp32")

# Weight range of each bit width: symmetric, zero point 0 (TFLite: int8 [-127, 127], INT4 [-7, 7]).
WEIGHT_RANGE = {8: (-127, 127), 4: (-7, 7)}
# Activation range: int8 asymmetric [-128, 127]; int16 symmetric with zero point 0, [-32767, 32767].
ACT_RANGE = {8: (-128, 127), 16: (-32767, 32767)}


def preset(name: str, where: str = "quant.precision") -> LayerPrecision:
    """The :class:`LayerPrecision` of a preset name; RecipeError naming ``where`` otherwise."""
    if name not in PRESETS:
        raise RecipeError(f"{where}: '{name}' is not a layer precision; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def check_bits(bits: str, where: str = "quant.precision") -> None:
    """Refuse an unknown ``QuantConfig.bits``, with the autocast rename spelled out for old recipes."""
    if bits in AUTOCAST_VALUES:
        raise RecipeError(f"{where} = '{bits}' is the old autocast setting: write `autocast = \"{bits}\"` under "
                          f"[quant]; precision now takes {', '.join(BIT_MODES)}")
    if bits not in BIT_MODES:
        raise RecipeError(f"{where}: '{bits}' is not one of {', '.join(BIT_MODES)}")


def resolve_assignment(layers: Iterable[str], bits: str, overrides: Iterable[tuple[str, str]] = (),
                       *, where: str = "quant") -> dict[str, LayerPrecision]:
    """Each layer's precision: the ``bits`` preset ("mixed" starts from int8), then ``overrides``.

    Raises RecipeError for an unknown preset or a pattern that matches no layer (a typo would
    otherwise silently keep int8).
    """
    check_bits(bits, f"{where}.precision")
    names = list(layers)
    base = PRESETS["int8" if bits == "mixed" else bits]
    result = {name: base for name in names}
    for pattern, value in overrides:
        chosen = preset(value, f"{where}.overrides['{pattern}']")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise RecipeError(f"{where}.overrides: pattern '{pattern}' matches no layer; layers: {', '.join(names)}")
        for name in hits:
            result[name] = chosen
    return result


def check_assignment(assignment: Mapping[str, LayerPrecision], layers: Iterable[str]) -> dict[str, LayerPrecision]:
    """A full per-layer map from a (search's) ``assignment``: unknown paths refused, missing layers int8."""
    names = list(layers)
    unknown = sorted(set(assignment) - set(names))
    if unknown:
        raise QuantSpecError(f"assignment names {', '.join(repr(u) for u in unknown)}, which are not layers of the "
                             f"model; layers: {', '.join(names)}")
    for path, value in assignment.items():
        if not isinstance(value, LayerPrecision) or value.weight_bits not in (4, 8) or value.act_bits not in (8, 16):
            raise QuantSpecError(f"assignment['{path}'] = {value!r} is not a LayerPrecision(weight_bits 4|8, "
                                 "act_bits 8|16)")
    return {name: assignment.get(name, PRESETS["int8"]) for name in names}


def layer_rule(op_type: str, precision: LayerPrecision, *, per_channel: bool) -> str | None:
    """The TFLM precision rule a layer lowered to ``op_type`` ("CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED") would break at ``precision``, or None: tinyprec/ir/support.py's check, asked about a
    one-op graph of the layer's types (so the quantizer and the verifier apply the same rules)."""
    import numpy as np

    from tinyprec.ir.graph import DType, Graph, Op, Tensor
    from tinyprec.ir.ops import NoOptions, OpType
    from tinyprec.ir.qparams import QParams
    from tinyprec.ir.support import BIAS_DTYPE, check_op_precision

    act = DType.INT16 if precision.act_bits == 16 else DType.INT8
    weight = DType.INT4 if precision.weight_bits == 4 else DType.INT8
    channels = 2 if per_channel else 1
    w_qp = QParams(np.ones(channels, np.float32), np.zeros(channels, np.int64), 0 if per_channel else None)
    a_qp = QParams.per_tensor(1.0, 0)
    tensors = {
        "x": Tensor("x", (1, 1, 1, 2), act, a_qp),
        "w": Tensor("w", (2, 1, 1, 2), weight, w_qp, np.zeros((2, 1, 1, 2), np.int8)),
        "b": Tensor("b", (2,), BIAS_DTYPE[act], None, np.zeros(2, BIAS_DTYPE[act].numpy)),
        "y": Tensor("y", (1, 1, 1, 2), act, a_qp),
    }
    op = Op(OpType(op_type), ("x", "w", "b"), ("y",), NoOptions(), name="layer")
    rule = check_op_precision(op, Graph(tensors, [op], ["x"], ["y"]))
    if rule is None:
        return None
    rule = rule.replace(" 'w'", "").replace(" 'b'", "")
    if weight is DType.INT4 and "per-tensor" in rule:
        rule += "; Linear layers lower as CONV_2D by default (linear_as_conv), or set quant.per_channel = false"
    return rule


__all__ = [
    "ACT_RANGE", "AUTOCAST_VALUES", "BIT_MODES", "PRESETS", "WEIGHT_RANGE", "LayerPrecision", "check_assignment",
    "check_bits", "layer_rule", "preset", "resolve_assignment",
]
