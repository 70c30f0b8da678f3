"""Our PT2E Quantizer: the TFLite int8 spec as annotations on an exported aten graph.

One annotator per :class:`~tinyprec.quant.ops.Role`; fused patterns first: conv/linear (+ batch norm)
(+ ReLU/ReLU6) and add/mul (+ ReLU/ReLU6) get a single observer after the last op of the pattern.
Consumers observe their inputs through the producer's observer (SharedQuantizationSpec), so every
activation edge carries exactly one set of qparams.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch

import tinyprec.quant._quiet_torchao  # noqa: F401  (before any torchao import)
from torch import fx
from torchao.quantization.pt2e.quantizer import (
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpecBase,
    Quantizer,
    SharedQuantizationSpec,
)
from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

from tinyprec.errors import QuantSpecError
from tinyprec.quant.bits import PRESETS, LayerPrecision, layer_rule
from tinyprec.quant.capture import check_graph, is_bookkeeping, module_path
from tinyprec.quant.observers import (
    ACT16_QMAX,
    ACT16_QMIN,
    ACT_QMAX,
    ACT_QMIN,
    INT32_QMAX,
    INT32_QMIN,
    Calibration,
    activation_qspec,
    derive_bias_qparams,
    make_float32_fake_quant,
    weight_qspec,
)
from tinyprec.quant.ops import FIXED_QPARAMS, OP_ROLES, Role
from tinyprec.optable.table import role_for


class TFLiteInt8Quantizer(Quantizer):
    """Annotates an exported graph so that convert_pt2e yields TFLite-int8-compatible Q/DQ.

    Args:
        qat: fake-quantize (QAT) instead of observing (PTQ).
        per_channel: per-output-channel weight scales (TFLite's default for conv).
        calibration: PTQ activation range setting.
        percentile: the percentile for ``Calibration.PERCENTILE``.
        assignment: module path -> :class:`~tinyprec.quant.bits.LayerPrecision` of each conv/linear
            (absent layers: int8). A layer computes in its output's bits; other ops keep their input's
            bits (add/mul/concat: the widest input's); softmax/sigmoid/tanh and the model input stay int8.
        weight_scales, learn_scales: 4-bit weights only: "mse" or "minmax" scales (PTQ, QAT's start), and
            whether QAT learns them (LSQ).
    """

    def __init__(self, *, qat: bool, per_channel: bool = True,
                 calibration: Calibration = Calibration.MOVING_AVERAGE, percentile: float = 99.99,
                 assignment: Mapping[str, LayerPrecision] | None = None, weight_scales: str = "mse",
                 learn_scales: bool = True) -> None:
        super().__init__()
        self.qat = qat
        self.per_channel = per_channel
        self.assignment = dict(assignment or {})
        self.acts = {b: activation_qspec(qat=qat, calibration=calibration, percentile=percentile, bits=b)
                     for b in (8, 16)}
        self.weights = {b: weight_qspec(qat=qat, per_channel=per_channel, bits=b, scales=weight_scales,
                                        learn=learn_scales) for b in (8, 4)}
        self.act = self.acts[8]
        self._calibration, self._percentile = calibration, percentile
        self.weight = self.weights[8]

    # --- Quantizer API -------------------------------------------------------------------------
    def transform_for_annotation(self, model: fx.GraphModule) -> fx.GraphModule:
        """QAT: fold linear + batch norm up front (torchao simulates folding only for conv + bn). A bias several
        layers read (an unrolled GRU/LSTM's b_hh) gets one get_attr per reader, so each derives its own scale."""
        from tinyprec.quant.recurrent import split_shared_biases

        split_shared_biases(model)
        if self.qat:
            from tinyprec.quant.bnfold import prefold_linear_bn

            prefold_linear_bn(model)
        return model

    def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
        check_graph(model)
        state = _State()
        for node in model.graph.nodes:
            if node.op == "placeholder" and _is_float_tensor(node):
                _set(node, output=self.act)
                state.quantized.add(node)
        from tinyprec.quant.recurrent import is_constant

        constant: dict[fx.Node, bool] = {}
        for node in model.graph.nodes:
            if node.op != "call_function" or node in state.done or is_bookkeeping(node):
                continue
            if is_constant(node, constant):
                continue  # arithmetic on parameters only (b_ih + b_hh): its reader's observer quantizes it
            role = role_for(node)
            assert role is not None, node.target  # check_graph refused unknown ops
            self._ANNOTATORS[role](self, node, state)
        return model

    def validate(self, model: fx.GraphModule) -> None:
        """Every float tensor the graph returns must be quantized (int8 model output)."""
        out = next(n for n in model.graph.nodes if n.op == "output")
        for value in _flat_nodes(out.args):
            ann = value.meta.get(Q_ANNOTATION_KEY)
            if ann is None or ann.output_qspec is None:
                raise QuantSpecError(f"graph output '{value.name}' is not quantized: the model must end in a "
                                     "quantizable op (see tinyprec.quant.ops.SUPPORTED_SUMMARY)")

    def prepare_obs_or_fq_callback(self, model: fx.GraphModule, edge_or_node_to_obs_or_fq: dict) -> None:
        """QAT: the fixed-qparams fake quants PT2E builds itself also compute in float32 under autocast."""
        if self.qat:
            for module in {id(m): m for m in edge_or_node_to_obs_or_fq.values()}.values():
                make_float32_fake_quant(module)

    # --- annotators, one per role ---------------------------------------------------------------
    def _edge(self, node: fx.Node, state: _State, bits: int = 8) -> QuantizationSpecBase:
        """Spec for an input edge read in ``bits``: reuse the producer's observer when it has those bits;
        otherwise (constants, or a precision change: a requantizing QUANTIZE) a new observer."""
        if node in state.quantized and state.bits.get(node, 8) == bits:
            return SharedQuantizationSpec(node)
        return self.acts[bits]

    def _bits_in(self, nodes: list, state: _State) -> int:
        return max((state.bits.get(n, 8) for n in nodes if n in state.quantized), default=8)

    def _finish(self, last: fx.Node, state: _State, output: QuantizationSpecBase | None = None,
                bits: int = 8) -> None:
        """Put the output observer on ``last``, fusing a following ReLU/ReLU6 that is its only user."""
        act = _sole_user(last)
        if act is not None and role_for(act) is Role.ACTIVATION and output is None:
            _set(last)
            state.done.add(act)
            last = act
        _set(last, output=output if output is not None else self.acts[bits])
        state.quantized.add(last)
        state.bits[last] = bits

    def _layer(self, node: fx.Node) -> LayerPrecision:
        precision = self.assignment.get(module_path(node), PRESETS["int8"])
        if precision != PRESETS["int8"]:
            check_layer(node, precision, per_channel=self.per_channel)
        return precision

    def _compute(self, node: fx.Node, state: _State) -> None:
        precision = self._layer(node)
        bits = precision.act_bits
        x_spec = self._edge(node.args[0], state, bits)
        self._weighted(node, state, x_spec, self.weights[precision.weight_bits], bits)

    def _weighted(self, node: fx.Node, state: _State, x_spec: QuantizationSpecBase,
                  w_spec: QuantizationSpecBase, bits: int = 8) -> None:
        """A conv / linear / transposed conv: its input and weight specs, an int32 bias derived from both, then
        a batch norm right after it (QAT: simulated, then folded, quant/bnfold.py) and the output observer."""
        x, w = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        first = state.weight_readers.setdefault((w, id(w_spec)), node)
        if first is not node:  # a weight read at every time step (quant/recurrent.py): one observer for all
            w_spec = SharedQuantizationSpec((w, first))
        inputs: dict[fx.Node, QuantizationSpecBase] = {x: x_spec, w: w_spec}
        if isinstance(bias, fx.Node):
            inputs[bias] = DerivedQuantizationSpec(
                derived_from=[(x, node), (w, node)],
                derive_qparams_fn=derive_bias_qparams,
                dtype=torch.int32,
                quant_min=INT32_QMIN,
                quant_max=INT32_QMAX,
                qscheme=torch.per_channel_symmetric if self.per_channel else torch.per_tensor_symmetric,
                ch_axis=0 if self.per_channel else None,
            )
        _set(node, inputs=inputs)
        last = node
        bn = _sole_user(node)
        if bn is not None and OP_ROLES.get(str(bn.target)) is Role.FOLDED:
            state.done.add(bn)
            last = bn
            item = _sole_user(bn)
            if item is not None and item.target is operator.getitem:
                _set(bn)
                state.done.add(item)
                last = item
        if last is not node:
            _set(last)
        self._finish(last, state, bits=bits)

    def _elementwise(self, node: fx.Node, state: _State) -> None:
        a, b = node.args[0], node.args[1]
        bits = self._bits_in([a, b], state)
        _set(node, inputs={a: self._edge(a, state, bits), b: self._edge(b, state, bits)})
        self._finish(node, state, bits=bits)

    def _activation(self, node: fx.Node, state: _State) -> None:
        x = node.args[0]
        bits = self._bits_in([x], state)
        _set(node, inputs={x: self._edge(x, state, bits)}, output=self.acts[bits])
        state.quantized.add(node)
        state.bits[node] = bits

    def _shared(self, node: fx.Node, state: _State) -> None:
        x = node.args[0]
        bits = self._bits_in([x], state)
        _set(node, inputs={x: self._edge(x, state, bits)}, output=SharedQuantizationSpec((x, node)))
        state.quantized.add(node)
        state.bits[node] = bits

    def _concat(self, node: fx.Node, state: _State) -> None:
        tensors = list(node.args[0])
        first = tensors[0]
        bits = self._bits_in(tensors, state)
        inputs: dict[fx.Node, QuantizationSpecBase] = {first: self._edge(first, state, bits)}
        for other in tensors[1:]:
            if other not in inputs:
                inputs[other] = SharedQuantizationSpec((first, node))
        _set(node, inputs=inputs, output=SharedQuantizationSpec((first, node)))
        state.quantized.add(node)
        state.bits[node] = bits

    def _extremum(self, node: fx.Node, state: _State) -> None:
        a, b = node.args[0], node.args[1]
        bits = self._bits_in([a, b], state)
        inputs: dict[fx.Node, QuantizationSpecBase] = {a: self._edge(a, state, bits)}
        if b is not a:
            inputs[b] = SharedQuantizationSpec((a, node))
        _set(node, inputs=inputs, output=SharedQuantizationSpec((a, node)))
        state.quantized.add(node)
        state.bits[node] = bits

    def _parametric(self, node: fx.Node, state: _State) -> None:
        x, p = node.args[0], node.args[1]
        _set(node, inputs={x: self._edge(x, state), p: self._edge(p, state)}, output=self.act)
        state.quantized.add(node)

    def _fixed(self, node: fx.Node, state: _State) -> None:
        """softmax/sigmoid/tanh: TFLM's fixed output qparams, int8; a sigmoid/tanh gate of an unrolled
        GRU/LSTM whose input is int16 stays int16 (output 1/32768, zero point 0: TFLM's int16 kernels)."""
        from tinyprec.quant.recurrent import from_unrolled

        x = node.args[0]
        fixed = FIXED_QPARAMS[str(node.target)]
        gate = str(node.target) in ("aten.sigmoid.default", "aten.tanh.default")
        if gate and self._bits_in([x], state) == 16 and from_unrolled(node):
            spec = FixedQParamsQuantizationSpec(dtype=torch.int16, scale=1.0 / 32768.0, zero_point=0,
                                                quant_min=ACT16_QMIN, quant_max=ACT16_QMAX,
                                                qscheme=torch.per_tensor_symmetric)
            _set(node, inputs={x: self._edge(x, state, 16)}, output=spec)
            state.quantized.add(node)
            state.bits[node] = 16
            return
        spec = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=fixed.scale, zero_point=fixed.zero_point,
                                            quant_min=ACT_QMIN, quant_max=ACT_QMAX,
                                            qscheme=torch.per_tensor_affine)
        _set(node, inputs={x: self._edge(x, state)}, output=spec)
        state.quantized.add(node)

    def _skip(self, node: fx.Node, state: _State) -> None:
        return None

    def _transposed(self, node: fx.Node, state: _State) -> None:
        """ConvTranspose: int8 weights [in, out, kh, kw] per output channel (axis 1), an int32 bias derived
        as for conv, one output observer (after a ReLU/ReLU6 it fuses); always int8."""
        spec = self.weight
        if self.per_channel:
            # PT2E passes ch_axis only to constructors named "PerChannel..."; a QAT fake quant gets it baked in.
            ctr = spec.observer_or_fake_quant_ctr
            if self.qat:
                part = ctr.p  # type: ignore[union-attr]
                ctr = type(ctr)(functools.partial(part.func, *part.args, **{**part.keywords, "ch_axis": 1}))
            spec = dataclasses.replace(spec, ch_axis=1, observer_or_fake_quant_ctr=ctr)
        self._weighted(node, state, self._edge(node.args[0], state), spec)

    def _scalar(self, node: fx.Node, state: _State) -> None:
        """One tensor and a Python number (an int8 constant in the .tflite): int8, own output observer (QAT: a
        floored fake quant where rsqrt reads it, LayerNorm's variance + eps; see FlooredFakeQuantize)."""
        from tinyprec.optable.norm import FLOORED

        x = node.args[0]
        _set(node, inputs={x: self._edge(x, state)})
        output = None
        if self.qat and node.meta.get(FLOORED):
            from tinyprec.quant.observers import FlooredFakeQuantize, MovingAverageMinMaxObserver

            output = dataclasses.replace(self.act, observer_or_fake_quant_ctr=FlooredFakeQuantize.with_args(
                observer=MovingAverageMinMaxObserver))
        self._finish(node, state, output=output)

    def _unbounded(self, node: fx.Node, state: _State) -> None:
        """rsqrt: int8 in, own output observer over the finite values (TFLM's RSQRT gives the int8 maximum for
        an input at its zero point, where the float op gives +inf), up to the cap a LayerNorm rewrite sets
        (quant/norm_rewrite.py RSQRT_CAP: tokens of near-zero variance, whose 1/sqrt multiplies zeros)."""
        from tinyprec.optable.norm import RSQRT_CAP

        x = node.args[0]
        spec = activation_qspec(qat=self.qat, calibration=self._calibration, percentile=self._percentile,
                                finite=True, cap=float(node.meta.get(RSQRT_CAP, float("inf"))))
        _set(node, inputs={x: self._edge(x, state)}, output=spec)
        state.quantized.add(node)

    def _rewritten(self, node: fx.Node, state: _State) -> None:
        raise QuantSpecError(f"'{node.target}' ({module_path(node) or node.name}) should have been rewritten "
                             "after export (tinyprec.quant.act_rewrite); its row's check refuses what it cannot")

    _ANNOTATORS: dict[Role, Callable[[TFLiteInt8Quantizer, fx.Node, _State], None]] = {
        Role.COMPUTE: _compute,
        Role.ELEMENTWISE: _elementwise,
        Role.ACTIVATION: _activation,
        Role.SHARED: _shared,
        Role.DROP: _shared,  # identity while training; removed from the converted graph
        Role.CONCAT: _concat,
        Role.FIXED: _fixed,
        Role.FOLDED: _skip,  # reached only through _compute (check_graph refuses a lone batch norm)
        Role.META: _skip,
        Role.UNARY: _activation,  # input as produced, own output observer, never fused
        Role.EXTREMUM: _extremum,
        Role.PARAMETRIC: _parametric,
        Role.TRANSPOSED: _transposed,
        Role.SCALAR: _scalar,
        Role.REWRITTEN: _rewritten,
        Role.UNBOUNDED: _unbounded,
    }


def lowered_op_type(node: fx.Node) -> str:
    """The TFLite op a conv/linear node lowers to (Linear: CONV_2D, the lowering's default)."""
    if str(node.target) == "aten.linear.default":
        return "CONV_2D"
    groups, w = _groups_and_weight(node)
    depthwise = groups > 1 and w is not None and int(w.shape[1]) == 1 and int(w.shape[0]) % groups == 0
    return "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"


def _groups_and_weight(node: fx.Node) -> tuple[int, Any]:
    """A conv node's groups and its weight's example value (None when it has none)."""
    groups = int(node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1))
    return groups, node.args[1].meta.get("val") if isinstance(node.args[1], fx.Node) else None


def layer_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """The conv/linear layers of an exported graph by module path (the keys of a precision assignment)."""
    found: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and OP_ROLES.get(str(node.target)) is Role.COMPUTE:
            found.setdefault(module_path(node) or node.name, node)  # a module called twice: one precision
    return found


def node_rule(node: fx.Node, precision: LayerPrecision, *, per_channel: bool) -> str | None:
    """The rule a layer at ``precision`` breaks: TFLM's precision table (tinyprec/ir/support.py), or a
    CMSIS-NN kernel that computes it differently from TFLM's reference kernels; None when it runs."""
    from tinyprec.ir import DType, OpType
    from tinyprec.ir.support import cmsis_nn_rule

    op_type = lowered_op_type(node)
    rule = layer_rule(op_type, precision, per_channel=per_channel)
    if rule is not None or op_type != "DEPTHWISE_CONV_2D":
        return rule
    groups, w = _groups_and_weight(node)
    weights = DType.INT4 if precision.weight_bits == 4 else DType.INT8
    return cmsis_nn_rule(OpType.DEPTHWISE_CONV_2D, weights, groups, int(w.shape[0]) // groups) if w is not None else None


def check_layer(node: fx.Node, precision: LayerPrecision, *, per_channel: bool) -> None:
    """Refuse (before any training) a layer precision TFLM cannot run, naming the layer and the rule."""
    rule = node_rule(node, precision, per_channel=per_channel)
    if rule is not None:
        raise QuantSpecError(f"layer '{module_path(node) or node.name}' at {precision.name}: {rule}")


class _State:
    def __init__(self) -> None:
        self.done: set[fx.Node] = set()  # annotated as part of a fused pattern
        self.quantized: set[fx.Node] = set()  # nodes whose output carries an observer
        self.bits: dict[fx.Node, int] = {}  # activation bits of each quantized node's output (8 if absent)
        self.weight_readers: dict[tuple[fx.Node, int], fx.Node] = {}  # (weight, spec) -> first node reading it


def _set(node: fx.Node, *, inputs: dict | None = None, output: QuantizationSpecBase | None = None) -> None:
    """Add to ``node``'s annotation; with neither inputs nor output it only marks the node as part of a
    fused pattern (annotated, no observer of its own)."""
    ann = node.meta.get(Q_ANNOTATION_KEY) or QuantizationAnnotation()
    if inputs:
        ann.input_qspec_map.update(inputs)
    if output is not None:
        ann.output_qspec = output
    ann._annotated = True
    node.meta[Q_ANNOTATION_KEY] = ann


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_function":
        return users[0]
    return None


def _is_float_tensor(node: fx.Node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _flat_nodes(args: object) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n) or n)
    return out


__all__ = ["TFLiteInt8Quantizer"]
