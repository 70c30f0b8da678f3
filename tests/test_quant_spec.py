"""Stage 2: the converted programs follow the TFLite int8 spec (per-channel symmetric weights, int32 bias at
input*weight scale, fixed softmax/sigmoid/tanh qparams, shared qparams through pooling/reshape/pad/cat,
fused ReLU/ReLU6, no batch norm or dropout) and the artifacts round-trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import fx, nn

from tinyprec.data import Dataset
from tinyprec.errors import UnsupportedOpError
from tinyprec.recipe import QuantConfig
from tinyprec.zoo import build_model

QD = "quantized_decomposed."
COMPUTE = ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default")
SHARED = ("aten.max_pool2d.default", "aten.max_pool1d.default", "aten.avg_pool2d.default",
          "aten.adaptive_avg_pool2d.default", "aten.flatten.using_ints", "aten.view.default",
          "aten.reshape.default", "aten.pad.default", "aten.constant_pad_nd.default", "aten.cat.default")
FAST = QuantConfig(mode="qat", epochs=1, batch_size=8, calibration_batches=2, lr=1e-4, output_softmax=True,
                   autocast="fp32")


def tiny_images(n: int = 60, shape: tuple[int, ...] = (1, 8, 8), classes: int = 4, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape))).astype(np.float32)
    return Dataset.from_arrays(x, y, num_classes=classes, seed=seed)


class ManyOps(nn.Module):
    """Every op kind the quantizer handles, in one small graph."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 1, 1, 1))
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.relu6 = nn.ReLU6()
        self.pw = nn.Conv2d(4, 4, 1)
        self.pool = nn.AvgPool2d(2)
        self.conv1d = nn.Conv1d(8, 4, 3, padding=1)
        self.fc = nn.Linear(32, 6)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn(self.conv(self.pad(x))))           # 4x8x8
        b = self.relu6(self.dw(a))
        c = torch.relu(a + self.pw(b))                             # add + fused relu
        d = torch.cat([c, c * torch.sigmoid(b)], dim=1)            # mul, sigmoid, cat
        d = self.pool(nn.functional.max_pool2d(d, 2))              # 8x2x2
        e = torch.tanh(self.conv1d(d.reshape(d.shape[0], 8, 4)))   # reshape, conv1d, tanh
        f = torch.cat([torch.flatten(torch.relu(e), 1), torch.flatten(e, 1)], 1)  # lone relu, requantizing cat
        return self.fc(self.drop(f))


def _ops(gm: fx.GraphModule, name: str) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and str(n.target) == name]


def _const(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return getattr(gm, str(node.target))


def _input_qargs(node: fx.Node) -> tuple:
    dq = node.args[0] if not isinstance(node.args[0], (list, tuple)) else node.args[0][0]
    assert str(dq.target) == QD + "dequantize_per_tensor.default", f"{node.name} input is {dq.target}"
    return tuple(dq.args[1:])


def _output_qargs(node: fx.Node) -> tuple:
    (q,) = node.users
    assert str(q.target) == QD + "quantize_per_tensor.default", f"{node.name} output goes to {q.target}"
    return tuple(q.args[1:])


@pytest.fixture(scope="module")
def qat_result(tmp_path_factory):
    from tinyprec.quant import quantize_model

    torch.manual_seed(0)
    model = build_model("digits_cnn", {"width": 4, "num_classes": 4})
    out = tmp_path_factory.mktemp("qat")
    return quantize_model(model, tiny_images(), FAST, out, seed=0, max_steps=2)


@pytest.fixture(scope="module")
def many_ops_program():
    from tinyprec.quant.stage import ptq

    torch.manual_seed(0)
    ds = tiny_images(n=40, classes=6)
    return ptq(ManyOps(), ds, dataclasses.replace(FAST, mode="ptq", output_softmax=False, calibration="minmax"))


@pytest.fixture(params=["qat", "many_ops"])
def program(request, qat_result, many_ops_program) -> fx.GraphModule:
    return qat_result.converted if request.param == "qat" else many_ops_program


def test_weights_per_channel_symmetric_int8(program):
    computes = [n for name in COMPUTE for n in _ops(program, name)]
    assert computes
    for node in computes:
        dq = node.args[1]
        assert str(dq.target) == QD + "dequantize_per_channel.default"
        w = _const(program, dq.args[0])
        scales, zps = _const(program, dq.args[1]), _const(program, dq.args[2])
        assert w.dtype == torch.int8 and int(w.min()) >= -127 and int(w.max()) <= 127
        assert tuple(dq.args[3:]) == (0, -127, 127, torch.int8)  # axis 0 = output channels in torch layout
        assert scales.shape == (w.shape[0],) and scales.dtype == torch.float32
        assert torch.all(zps == 0)
        assert int(w.abs().amax(dim=tuple(range(1, w.dim()))).max()) == 127  # min-max symmetric range


def test_bias_int32_with_input_times_weight_scale(program):
    for node in [n for name in COMPUTE for n in _ops(program, name)]:
        dq_b = node.args[2]
        assert str(dq_b.target) == QD + "dequantize_per_channel.default", f"{node.name} has no int32 bias"
        b = _const(program, dq_b.args[0])
        assert b.dtype == torch.int32 and tuple(dq_b.args[3:]) == (0, -(2**31), 2**31 - 1, torch.int32)
        in_scale = np.float32(_input_qargs(node)[0])
        w_scale = _const(program, node.args[1].args[1]).numpy()
        b_scale = _const(program, dq_b.args[1]).numpy()
        np.testing.assert_allclose(b_scale, in_scale * w_scale, rtol=np.finfo(np.float32).eps)
        assert torch.all(_const(program, dq_b.args[2]) == 0)


def test_every_activation_edge_is_quantized(program):
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if name.startswith(QD) or name == "aten.sym_size.int":
            continue
        first = node.args[0][0] if isinstance(node.args[0], (list, tuple)) else node.args[0]
        assert str(first.target) == QD + "dequantize_per_tensor.default" or (
            name.startswith(("aten.relu", "aten.hardtanh")) and str(first.target) in (*COMPUTE, "aten.add.Tensor")
        ), f"{node.name} reads {first.target}"


def test_no_batch_norm_dropout_or_observers_left(program):
    names = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [n for n in names if "batch_norm" in n or "dropout" in n]
    assert not [n for n in program.graph.nodes if n.op == "call_module"]


def test_shared_qparams_through_pooling_reshape_pad_cat(program):
    checked = 0
    for name in SHARED:
        for node in _ops(program, name):
            in_q = _input_qargs(node)
            assert _output_qargs(node) == in_q, f"{name} changes qparams"
            if name == "aten.cat.default":
                assert {tuple(dq.args[1:]) for dq in node.args[0]} == {in_q}
            checked += 1
    assert checked >= 3


def test_softmax_output_fixed_qparams(qat_result):
    (softmax,) = _ops(qat_result.converted, "aten.softmax.int") or _ops(qat_result.converted, "aten._softmax.default")
    assert _output_qargs(softmax) == (1.0 / 256.0, -128, -128, 127, torch.int8)
    assert qat_result.output_qparams == (1.0 / 256.0, -128)


def test_sigmoid_tanh_fixed_and_relu_relu6_fused(many_ops_program):
    gm = many_ops_program
    (sig,) = _ops(gm, "aten.sigmoid.default")
    (tanh,) = _ops(gm, "aten.tanh.default")
    assert _output_qargs(sig)[:2] == (1.0 / 256.0, -128)
    assert _output_qargs(tanh)[:2] == (1.0 / 128.0, 0)
    (relu6,) = _ops(gm, "aten.hardtanh.default")
    assert str(relu6.args[0].target) == "aten.conv2d.default" and tuple(relu6.args[1:]) == (0.0, 6.0)
    fused = [r for r in _ops(gm, "aten.relu.default") if str(r.args[0].target) in (*COMPUTE, "aten.add.Tensor")]
    assert {str(r.args[0].target) for r in fused} == {"aten.conv2d.default", "aten.add.Tensor"}
    for r in fused + [relu6]:
        assert _output_qargs(r)[1] == -128  # ReLU output range starts at 0 -> zero point at qmin


def test_converted_program_runs_with_dynamic_batch(program):
    example = next(n for n in program.graph.nodes if n.op == "placeholder").meta["val"]
    for batch in (1, 3):
        out = program(torch.randn(batch, *example.shape[1:]))
        assert out.shape[0] == batch and torch.isfinite(out).all()


def test_artifacts_round_trip(qat_result):
    from tinyprec.quant import load_converted

    run = qat_result.program_path.parents[1]
    loaded = load_converted(run)
    x = torch.from_numpy(tiny_images().inputs("test"))
    assert torch.equal(loaded(x), qat_result.converted(x))
    from tinyprec.quant.capture import module_path

    paths = {str(n.target): module_path(n) for n in loaded.graph.nodes if str(n.target).startswith("aten.")}
    assert paths["aten.linear.default"] == "13" and paths["aten.softmax.int"] == "output_softmax"
    table = json.loads(qat_result.qparams_path.read_text())["tensors"]
    n_quant = len(_ops(qat_result.converted, QD + "quantize_per_tensor.default"))
    assert sum(r["kind"] in ("activation", "input") for r in table) == n_quant
    weights = [r for r in table if r["kind"] == "weight"]
    assert len(weights) == 4 and all(r["axis"] == 0 and set(r["zero_point"]) == {0} for r in weights)
    assert {r["module"] for r in weights} == {"0", "3", "7", "13"}  # digits_cnn's conv/linear indices
    metrics = json.loads(qat_result.metrics_path.read_text())
    assert metrics["mode"] == "qat" and metrics["fake_quant"] == qat_result.fake_quant_accuracy
    assert metrics["ptq"] == qat_result.ptq_accuracy and metrics["qat_steps"] == 2
    roles = json.loads((run / "manifest.json").read_text())["artifacts"]
    assert {"quant_program", "quant_qparams", "quant_metrics"} <= set(roles)


def test_load_converted_missing_names_the_stage(tmp_path):
    from tinyprec.errors import ArtifactError
    from tinyprec.quant import load_converted

    with pytest.raises(ArtifactError, match="tinyprec qat"):
        load_converted(tmp_path)


@pytest.mark.parametrize("layer, op, hint", [
    (nn.Softplus(), "softplus", "no int8 lowering"),  # GELU and SiLU convert now (tests/test_ops_act.py)
    (nn.ELU(alpha=0.5), "elu", "alpha=1"),
])
def test_unsupported_op_named_with_module_path(layer, op, hint):
    from tinyprec.quant import check_supported

    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Identity(), layer), nn.Linear(4, 2))
    with pytest.raises(UnsupportedOpError) as info:
        check_supported(model, torch.zeros(2, 3))
    assert info.value.op == op and "'1.1'" in info.value.where and hint in info.value.hint
    assert "\n" not in str(info.value)


def test_division_by_a_tensor_refused_before_training(tmp_path):
    from tinyprec.quant import quantize_model

    class DividesByInput(nn.Module):  # a scalar operand converts (x + 1.0 is an ADD of a constant)
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) / (x[:, :2] + 1.0)

    ds = tiny_images(n=20, shape=(4,), classes=2)
    with pytest.raises(UnsupportedOpError, match="constant number"):
        quantize_model(DividesByInput(), ds, FAST, tmp_path)
    assert not (tmp_path / "quant").exists()
