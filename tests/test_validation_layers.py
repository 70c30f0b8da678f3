"""Per-layer error mapping and the metrics, on hand-made tensors with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.ir import Activation, Conv2DOptions, DType, FullyConnectedOptions, Graph, Op, OpType, QParams, Tensor
from tinyprec.validation import metrics
from tinyprec.validation.layers import per_layer_errors, record_activations
from tinyprec.validation.runners import quantize, to_ir_layout


def _model():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 2.0)
    return model.eval()


def _graph(conv_qp: QParams, fc_qp: QParams) -> Graph:
    tensors = {
        "x": Tensor("x", (1, 5, 5, 1), DType.INT8, QParams.per_tensor(0.05, 0)),
        "conv": Tensor("conv", (1, 5, 5, 4), DType.INT8, conv_qp, source="0"),
        "flat": Tensor("flat", (1, 100), DType.INT8, conv_qp, source="3"),
        "fc": Tensor("fc", (1, 3), DType.INT8, fc_qp, source="4"),
    }
    ops = [
        Op(OpType.CONV_2D, ("x", None, None), ("conv",), Conv2DOptions(activation=Activation.RELU), "conv", "0"),
        Op(OpType.RESHAPE, ("conv", None), ("flat",), FullyConnectedOptions(), "flat", "3"),
        Op(OpType.FULLY_CONNECTED, ("flat", None, None), ("fc",), FullyConnectedOptions(), "fc", "4"),
    ]
    return Graph(tensors, ops, ["x"], ["fc"])


def test_layer_errors_use_the_fused_bn_relu_output_in_nhwc() -> None:
    model = _model()
    x = np.random.default_rng(0).normal(size=(6, 1, 5, 5)).astype(np.float32)
    log = record_activations(model, x)
    assert [name for name, _, _ in log] == ["0", "1", "2", "3", "4"]
    after_relu = log[2][2]
    conv_qp = QParams.per_tensor(float(after_relu.max()) / 255.0, -128)
    fc_qp = QParams.per_tensor(float(np.abs(log[4][2]).max()) / 127.0, 0)
    taps = {
        "conv": quantize(to_ir_layout(after_relu, "NCHW"), conv_qp),
        "flat": quantize(to_ir_layout(after_relu, "NCHW").reshape(6, 100), conv_qp),
        "fc": quantize(log[4][2], fc_qp),
    }
    rows = per_layer_errors(_graph(conv_qp, fc_qp), taps, log)
    assert [r.module for r in rows] == ["0", "4"]  # no row for RESHAPE: its NHWC flatten order differs from torch's
    for row in rows:
        assert row.max_err_lsb <= 0.5 + 1e-4  # only the rounding of quantize()
        assert row.sqnr_db > 35.0
    # Taps of the raw conv output (pre-BN) must show up as a large error: the mapping is not lenient.
    raw = {**taps, "conv": quantize(to_ir_layout(log[0][2], "NCHW"), conv_qp)}
    bad = per_layer_errors(_graph(conv_qp, fc_qp), raw, log)
    assert bad[0].sqnr_db < 15.0


def test_sources_mapping_overrides_missing_tensor_sources() -> None:
    model = _model()
    x = np.zeros((2, 1, 5, 5), np.float32)
    log = record_activations(model, x)
    conv_qp, fc_qp = QParams.per_tensor(0.05, -128), QParams.per_tensor(0.05, 0)
    g = _graph(conv_qp, fc_qp)
    for t in g.tensors.values():
        t.source = None
    for op in g.ops:
        op.source = None
    taps = {"fc": quantize(log[4][2], fc_qp)}
    assert per_layer_errors(g, taps, log) == []
    rows = per_layer_errors(g, taps, log, {"fc": "4"})
    assert [r.tensor for r in rows] == ["fc"]


def test_metrics_known_values() -> None:
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    assert metrics.sqnr_db(ref, ref) == float("inf")
    assert metrics.sqnr_db(ref, ref * 0.9) == pytest.approx(20.0)  # noise 0.1 of signal amplitude
    a = metrics.agreement("a", "b", np.array([[1, 2], [3, 4]], np.int8), np.array([[1, 2], [3, 7]], np.int8),
                          np.array([1, 1]), np.array([1, 0]))
    assert a.identical_outputs == 50.0 and a.identical_top1 == 50.0 and a.max_abs_diff_lsb == 3
    cm = metrics.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert metrics.top1_percent(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])) == 75.0
    assert metrics.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert metrics.roc_auc(np.array([0.1, 0.2]), np.array([0, 0])) is None


def test_quantize_rounds_half_away_and_saturates() -> None:
    qp = QParams.per_tensor(0.5, -1)
    got = quantize(np.array([0.25, -0.25, 0.75, 1000.0, -1000.0], np.float32), qp)
    assert got.tolist() == [0, -2, 1, 127, -128]


def test_roc_auc_matches_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 300).astype(np.float64)  # many ties
    labels = rng.integers(0, 2, 300)
    assert metrics.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
