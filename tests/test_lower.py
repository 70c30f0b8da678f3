"""Lowering of converted PT2E graphs to the IR: layouts, padding, flatten order, errors, sources.

The converted graphs here come from a minimal test-only annotator (PTQ, min-max observers) so each
test controls exactly which pattern reaches the lowering; the zoo tests use the product quantizer.
Numerics are checked on the real runtimes: TFLM's and TF Lite's interpreters run the written file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tinyprec.errors import QuantSpecError, UnsupportedOpError  # noqa: E402
from tinyprec.formats.tflite_writer import write_tflite  # noqa: E402
from tinyprec.ir import OpType, Padding  # noqa: E402
from tinyprec.lowering.driver import fake_quant_taps, lower_to_ir, lower_with_trace  # noqa: E402
from tinyprec.lowering.check import compare_with_converted, quantize_input  # noqa: E402
from tinyprec.ir.layout import from_ir_layout, to_ir_layout  # noqa: E402
from tinyprec.lowering.ops import same_pads  # noqa: E402


def _convert(model: Any, x: Any, *, separate_relu: bool = False, fc_per_tensor: bool = True) -> Any:
    """PTQ with a bare-bones annotator: per-channel int8 weights, derived int32 bias, shared pooling."""
    from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import (
        DerivedQuantizationSpec,
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
        SharedQuantizationSpec,
    )

    aten = torch.ops.aten
    act = QuantizationSpec(torch.int8, MinMaxObserver.with_args(eps=2**-12), -128, 127, torch.per_tensor_affine)
    weight = QuantizationSpec(torch.int8, PerChannelMinMaxObserver.with_args(eps=2**-12, ch_axis=0), -127, 127,
                              torch.per_channel_symmetric, ch_axis=0)
    fc_weight = QuantizationSpec(torch.int8, MinMaxObserver.with_args(eps=2**-12, qscheme=torch.per_tensor_symmetric),
                                 -127, 127, torch.per_tensor_symmetric)
    weighted = (aten.conv2d.default, aten.conv1d.default, aten.linear.default)
    relus = (aten.relu.default, aten.hardtanh.default)
    shared = (aten.max_pool2d.default, aten.max_pool1d.default, aten.adaptive_avg_pool2d.default,
              aten.adaptive_avg_pool1d.default, aten.flatten.using_ints, aten.view.default, aten.pad.default,
              aten.constant_pad_nd.default, aten.reshape.default)

    def bias_spec(x_node: Any, w_node: Any, node: Any, per_tensor: bool) -> Any:
        def derive(obs: Any) -> Any:
            s = obs[0].calculate_qparams()[0] * obs[1].calculate_qparams()[0]
            return s.float(), torch.zeros_like(s, dtype=torch.int32)

        if per_tensor:
            return DerivedQuantizationSpec([(x_node, node), (w_node, node)], derive, torch.int32, -(2**31),
                                           2**31 - 1, torch.per_tensor_symmetric)
        return DerivedQuantizationSpec([(x_node, node), (w_node, node)], derive, torch.int32, -(2**31), 2**31 - 1,
                                       torch.per_channel_symmetric, ch_axis=0)

    class _Q(Quantizer):
        def annotate(self, gm: Any) -> Any:
            def mark(n: Any, inputs: dict, out: Any) -> None:
                n.meta["quantization_annotation"] = QuantizationAnnotation(inputs, out, _annotated=True)

            for n in gm.graph.nodes:
                if n.op != "call_function" or "quantization_annotation" in n.meta:
                    continue
                users = list(n.users)
                fuse = not separate_relu and len(users) == 1 and users[0].target in relus
                if n.target in weighted or n.target in (aten.add.Tensor, aten.mul.Tensor):
                    inputs = {a: act for a in n.args[:2] if isinstance(a, torch.fx.Node)}
                    if n.target in weighted:
                        per_tensor = fc_per_tensor and n.target is aten.linear.default
                        inputs[n.args[1]] = fc_weight if per_tensor else weight
                        if len(n.args) > 2 and n.args[2] is not None:
                            inputs[n.args[2]] = bias_spec(n.args[0], n.args[1], n, per_tensor)
                    mark(n, inputs, None if fuse else act)
                    if fuse:
                        mark(users[0], {}, act)
                elif n.target in relus:
                    mark(n, {n.args[0]: act}, act)
                elif n.target in shared:
                    mark(n, {n.args[0]: act}, SharedQuantizationSpec((n.args[0], n)))
            return gm

        def validate(self, gm: Any) -> None:
            pass

    model = model.eval()
    gm = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    prepared = prepare_pt2e(gm, _Q())
    with torch.no_grad():
        prepared(x)
    return convert_pt2e(prepared, fold_quantize=True)


class _PadConvFc(nn.Module):
    """ZeroPad2d with TF's SAME split before a stride-2 conv, then a spatial flatten into a Linear."""

    def __init__(self, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(pad)
        self.conv = nn.Conv2d(2, 6, (4, 3), stride=2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6 * 5 * 3, 5)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.flatten(self.relu(self.conv(self.pad(x))), 1))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _data(shape: tuple[int, ...], n: int = 32, seed: int = 0) -> Any:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32))


def test_same_pads_match_tensorflow() -> None:
    assert same_pads(49, 10, 2) == (4, 5)
    assert same_pads(10, 4, 2) == (1, 1)
    assert same_pads(32, 1, 2) == (0, 0)
    assert same_pads(9, 3, 1, dilation=2) == (2, 2)


def test_layout_round_trip() -> None:
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert to_ir_layout(x, "NCHW").shape == (2, 4, 5, 3)
    assert np.array_equal(from_ir_layout(to_ir_layout(x, "NCHW"), "NCHW"), x)
    y = np.arange(2 * 3 * 7).reshape(2, 3, 7)
    assert to_ir_layout(y, "NCL").shape == (2, 1, 7, 3)
    assert np.array_equal(from_ir_layout(to_ir_layout(y, "NCL"), "NCL"), y)


def test_zero_pad_fuses_into_same_conv_and_flatten_permutes_fc() -> None:
    x = _data((2, 10, 6))
    converted = _convert(_PadConvFc((1, 1, 1, 2)), x)  # SAME: H=10,k=4,s=2 -> (1, 1); W=6,k=3,s=2 -> (0, 1)
    graph = lower_to_ir(converted, x, name="padfc")
    assert [op.type for op in graph.ops] == [OpType.PAD, OpType.CONV_2D, OpType.CONV_2D, OpType.RESHAPE]
    converted = _convert(_PadConvFc((0, 1, 1, 1)), x)
    graph = lower_to_ir(converted, x, name="padfc")
    # The Linear reads the 5x3x6 map with a full-window conv (weights in NHWC order), then [1,1,1,5] -> [1,5].
    assert [op.type for op in graph.ops] == [OpType.CONV_2D, OpType.CONV_2D, OpType.RESHAPE]
    conv, fc, _ = graph.ops
    assert conv.options.padding is Padding.SAME and conv.options.activation.value == "RELU"
    assert graph.tensors[conv.inputs[1]].shape == (6, 4, 3, 2)  # OHWI
    assert graph.tensors[fc.inputs[1]].shape == (5, 5, 3, 6) and fc.options.padding is Padding.VALID
    assert graph.metadata["input_layout"] == "NCHW" and graph.tensors[graph.outputs[0]].shape == (1, 5)
    agreement = compare_with_converted(converted, graph, write_tflite(graph), x.numpy())
    assert agreement.tflm_equals_tflite
    assert agreement.max_abs_diff <= 1 and agreement.exact_fraction >= 0.95, agreement
    # As FULLY_CONNECTED: a flatten RESHAPE and the weights' columns permuted to NHWC order.
    fc_graph = lower_to_ir(converted, x, name="padfc", linear_as_conv=False)
    assert [op.type for op in fc_graph.ops] == [OpType.CONV_2D, OpType.RESHAPE, OpType.FULLY_CONNECTED]
    fc_agreement = compare_with_converted(converted, fc_graph, write_tflite(fc_graph), x.numpy())
    assert fc_agreement.max_abs_diff <= 1 and fc_agreement.exact_fraction >= 0.95, fc_agreement


def test_conv_padding_other_than_same_becomes_pad_op() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2), nn.ReLU())
    x = _data((3, 6, 6))
    converted = _convert(model, x)
    graph = lower_to_ir(converted, x, name="pad2")
    assert [op.type for op in graph.ops] == [OpType.PAD, OpType.CONV_2D]
    assert graph.ops[1].options.padding is Padding.VALID
    pads = graph.tensors[graph.ops[0].inputs[1]].data
    assert pads.tolist() == [[0, 0], [2, 2], [2, 2], [0, 0]]
    agreement = compare_with_converted(converted, graph, write_tflite(graph), x.numpy())
    assert agreement.tflm_equals_tflite and agreement.max_abs_diff <= 1 and agreement.exact_fraction >= 0.99


def test_conv1d_depthwise_pool_and_global_average() -> None:
    model = nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2), nn.ReLU6(), nn.Conv1d(8, 16, 3, padding=1, groups=8), nn.ReLU(),
        nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4),
    )
    x = _data((2, 20))
    converted = _convert(model, x)
    lowered = lower_with_trace(converted, x, name="c1d")
    graph = lowered.graph
    types = [op.type for op in graph.ops]
    assert types == [OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D,
                     OpType.CONV_2D, OpType.RESHAPE]
    assert graph.tensors[graph.inputs[0]].shape == (1, 1, 20, 2)
    assert graph.tensors[graph.ops[1].inputs[1]].shape == (1, 1, 3, 16)  # 1HW(C*multiplier)
    assert graph.ops[0].options.activation.value == "RELU6"
    assert graph.ops[1].options.depth_multiplier == 2
    data = write_tflite(graph)
    # Layer by layer, on the same int8 input: every IR activation is the fake-quant one within 1 LSB.
    from tinyprec.runtimes.tflm import run_tflm_with_taps

    q = quantize_input(x.numpy(), graph.tensors[graph.inputs[0]].qparams)
    xf = (q.astype(np.float32) - graph.tensors[graph.inputs[0]].qparams.zero_point[0]) * \
        graph.tensors[graph.inputs[0]].qparams.scale[0]
    fq = fake_quant_taps(converted, torch.from_numpy(xf.astype(np.float32)), lowered)
    taps = run_tflm_with_taps(data, to_ir_layout(q, "NCL"))
    for op in graph.ops:
        name = op.outputs[0]
        diff = np.abs(fq[name].astype(int) - taps[name].reshape(fq[name].shape).astype(int))
        assert diff.max() <= 1, (op.type, name)
    agreement = compare_with_converted(converted, graph, data, x.numpy())
    assert agreement.tflm_equals_tflite and agreement.max_abs_diff <= 1


def test_every_tensor_names_its_module() -> None:
    x = _data((2, 10, 6))
    graph = lower_to_ir(_convert(_PadConvFc((0, 1, 1, 1)), x), x, name="src")
    conv, fc, _ = graph.ops
    assert conv.source == "conv" and fc.source == "fc"
    assert graph.tensors[conv.outputs[0]].source == "conv"
    assert graph.tensors[conv.inputs[1]].source == "conv"
    assert graph.tensors[fc.inputs[2]].source == "fc"


def test_flattened_map_as_output_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten())
    x = _data((2, 5, 5))
    with pytest.raises(UnsupportedOpError, match="flatten"):
        lower_to_ir(_convert(model, x), x, name="bad")


def test_relu_with_its_own_qparams_becomes_mul_by_one() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)
            self.act = nn.ReLU6()

        def forward(self, x: Any) -> Any:
            return self.act(self.conv(x))

    x = _data((2, 5, 5))
    converted = _convert(Block(), x, separate_relu=True)
    graph = lower_to_ir(converted, x, name="relu")
    assert [op.type for op in graph.ops] == [OpType.CONV_2D, OpType.MUL]
    mul = graph.ops[1]
    assert mul.source == "act" and mul.options.activation.value == "RELU6"
    assert graph.tensors[mul.outputs[0]].qparams != graph.tensors[mul.inputs[0]].qparams
    agreement = compare_with_converted(converted, graph, write_tflite(graph), x.numpy())
    assert agreement.tflm_equals_tflite and agreement.max_abs_diff <= 1 and agreement.exact_fraction >= 0.99


def test_unquantized_output_is_a_spec_error() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Sigmoid())  # sigmoid is not annotated here
    x = _data((2, 5, 5))
    with pytest.raises((QuantSpecError, UnsupportedOpError)):
        lower_to_ir(_convert(model, x), x, name="bad")


class _Mixed(nn.Module):
    """cat, sigmoid gate (mul), tanh, add, 2x2 average pool, flatten -> Linear, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.sig = nn.Sigmoid()
        self.th = nn.Tanh()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 3 * 3, 5)
        self.sm = nn.Softmax(dim=1)

    def forward(self, x: Any) -> Any:
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        y = y * self.sig(self.gate(y)) + self.th(y)
        return self.sm(self.fc(torch.flatten(self.pool(y), 1)))


def test_product_quantizer_graph_with_cat_gates_and_softmax() -> None:
    from tinyprec.data import Dataset
    from tinyprec.lowering.check import per_op_agreement
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import QuantConfig

    rng = np.random.default_rng(0)
    ds = Dataset.from_arrays(rng.standard_normal((80, 2, 6, 6)).astype(np.float32), np.arange(80) % 5, seed=0)
    converted = ptq(_Mixed().eval(), ds, QuantConfig(mode="ptq", calibration_batches=2, batch_size=16))
    x = ds.inputs("test")
    lowered = lower_with_trace(converted, torch.from_numpy(x[:2]), name="mixed")
    types = [op.type for op in lowered.graph.ops]
    assert types == [OpType.CONV_2D, OpType.CONV_2D, OpType.CONCATENATION, OpType.CONV_2D, OpType.LOGISTIC,
                     OpType.MUL, OpType.TANH, OpType.ADD, OpType.AVERAGE_POOL_2D, OpType.CONV_2D, OpType.SOFTMAX,
                     OpType.RESHAPE]
    concat = lowered.graph.ops[2]
    assert concat.options.axis == 3  # channels, NHWC
    data = write_tflite(lowered.graph)
    assert compare_with_converted(converted, lowered.graph, data, x).tflm_equals_tflite
    for op in per_op_agreement(converted, lowered, data, x):
        # Fed TFLM's inputs, each op is within 1 LSB by construction (single round-half-even vs TFLM's
        # double rounding, half away from zero; a 2x2 average has an exact half in 1 of 4 cases). How
        # often ties occur depends on the weights: exactness is tflm_exact's test (test_quant_exact.py).
        assert op.max_abs_diff <= 1, op
