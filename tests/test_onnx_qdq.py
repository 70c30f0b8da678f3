"""The ONNX QDQ writer: checker-valid, the TFLite file's qparams exactly, and ONNX Runtime close to TFLM.

ONNX Runtime is run with ``session.disable_quant_qdq=1``: it then evaluates the QDQ graph as written
(float ops between QuantizeLinear/DequantizeLinear). Its fused int8 kernels (the default) saturate on
x86 CPUs without VNNI (u8s8 pairs summed into int16), which is a property of the runtime, not the file.
Measured on these micro-models: every element within 1 LSB of TFLM; the exact share is asserted below.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._micro import MICRO_MODELS, MicroBuilder, random_inputs, run_tflm
from tinyprec.errors import UnsupportedOpError
from tinyprec.formats import onnx_qdq
from tinyprec.formats.onnx_qdq import write_onnx_qdq
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import Conv2DOptions, DType, ElementwiseOptions, Graph, OpType, Padding, QParams

SINGLE_INPUT = sorted(n for n, f in MICRO_MODELS.items()
                      if len(f(np.random.default_rng(0)).inputs) == 1 and n != "multi_op")
# Share of output elements equal to TFLM's, lowest measured over seeds 0-3, rounded down.
MIN_EXACT = {"average_pool2d": 0.9, "mean": 0.8}


def ort_run(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.ascontiguousarray(x)})[0]


def _to_onnx_input(graph: Graph, q: np.ndarray) -> np.ndarray:
    qp = graph.tensors[graph.inputs[0]].qparams
    assert qp is not None
    x = ((q.astype(np.float32) - np.float32(qp.zero_point[0])) * qp.scale[0]).astype(np.float32)
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def _to_int8_output(graph: Graph, y: np.ndarray) -> np.ndarray:
    qp = graph.tensors[graph.outputs[0]].qparams
    assert qp is not None
    q = np.round(y / qp.scale[0]) + qp.zero_point[0]
    assert np.all((q >= -128) & (q <= 127))
    return (np.transpose(q, (0, 2, 3, 1)) if q.ndim == 4 else q).astype(np.int8)


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_onnxruntime_within_one_lsb_of_tflm(name: str) -> None:
    import onnx

    graph = MICRO_MODELS[name](np.random.default_rng(0))
    data = write_onnx_qdq(graph)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    xq = random_inputs(graph, np.random.default_rng(1), 16)
    y_tflm = run_tflm(write_tflite(graph), xq)
    y_ort = _to_int8_output(graph, ort_run(data, _to_onnx_input(graph, xq[0])))
    diff = np.abs(y_ort.astype(np.int32) - y_tflm)
    assert diff.max() <= 1
    assert np.mean(diff == 0) >= MIN_EXACT.get(name, 0.99)


def test_multi_op_model_tensor_by_tensor() -> None:
    """Every int8 tensor of a 7-op model within 1 LSB of TFLM's; softmax rows whose logits agree too.

    (A 1-LSB logit difference legitimately moves a softmax output by several LSB, so rows with
    different logits are excluded from that one check.)
    """
    import onnx
    from onnx import TensorProto, helper

    from tinyprec.runtimes.tflm import run_tflm_with_taps

    graph = MICRO_MODELS["multi_op"](np.random.default_rng(1))
    model = onnx.load_from_string(write_onnx_qdq(graph))
    q_out = {n.doc_string: n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for out in q_out.values():
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.INT8, None))
    xq = random_inputs(graph, np.random.default_rng(11), 32)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outs = dict(zip(["output", *q_out], sess.run(None, {"input": _to_onnx_input(graph, xq[0])})))
    taps = run_tflm_with_taps(write_tflite(graph), xq[0])
    assert set(q_out) == {"x", "a", "s", "m", "c", "r", "logits", "p"}
    for name in q_out:
        got = outs[name].transpose(0, 2, 3, 1) if outs[name].ndim == 4 else outs[name]
        diff = np.abs(got.astype(np.int32) - taps[name])
        if name == "p":
            same = np.all(outs["logits"] == taps["logits"], axis=1)
            assert same.sum() >= 16
            diff = diff[same]
        assert diff.max() <= 1 and np.mean(diff == 0) >= 0.8, name


def _initializers(model) -> dict[str, np.ndarray]:  # noqa: ANN001
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("name", ["multi_op", "depthwise_conv2d", "pool_fc", "conv2d_valid_nobias"])
def test_qparams_equal_the_tflite_file_tensor_by_tensor(name: str) -> None:
    import onnx

    graph = MICRO_MODELS[name](np.random.default_rng(0))
    tfl = read_tflite(write_tflite(graph))  # what the .tflite says, read back
    model = onnx.load_from_string(write_onnx_qdq(graph))
    inits = _initializers(model)
    activations, weights = set(), set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            t = tfl.tensors[node.doc_string]
            scale, zp = inits[node.input[1]], inits[node.input[2]]
            assert scale.dtype == np.float32 and zp.dtype == np.int8 and scale.shape == zp.shape == ()
            assert scale == t.qparams.scale[0] and zp == t.qparams.zero_point[0]
            activations.add(t.name)
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            t = tfl.tensors[node.doc_string]
            data, scale, zp = (inits[n] for n in node.input)
            np.testing.assert_array_equal(np.atleast_1d(scale), t.qparams.scale)
            np.testing.assert_array_equal(np.atleast_1d(zp), t.qparams.zero_point)
            assert zp.dtype == (np.int8 if t.data.dtype == np.int8 else np.int32)
            axis = {a.name: a.i for a in node.attribute}.get("axis")
            assert (axis is None) == (t.qparams.scale.size == 1) and axis in (None, 0)
            expected = t.data
            if t.data.ndim == 4:  # OHWI -> OIHW; depthwise 1HWC -> C1HW
                expected = np.transpose(t.data, (3, 0, 1, 2) if t.data.shape[0] == 1 else (0, 3, 1, 2))
            np.testing.assert_array_equal(data, expected)
            weights.add(t.name)
    int8_acts = {n for n, t in tfl.tensors.items() if t.data is None and t.dtype.value == "int8"}
    assert activations == int8_acts
    # (the .tflite also carries the zero bias the TFLite writer adds to a bias-less convolution)
    consts = {n for op in graph.ops if op.type in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)
              for n in op.inputs[1:] if n is not None}
    assert weights == consts


def test_conv1d_layout_at_the_boundary() -> None:
    rng = np.random.default_rng(0)
    b = MicroBuilder(rng, "conv1d")
    x = b.input("x", (1, 1, 12, 3))
    w = b.weights("w", (4, 1, 3, 3), axis=0)
    y = b.out_for_accumulator("y", (1, 1, 12, 4), x, w, 9)
    b.op(OpType.CONV_2D, (x, w, b.bias("b", x, w, 4, 9)), (y,), Conv2DOptions(padding=Padding.SAME))
    graph = b.graph([y])
    graph.metadata.update(input_layout="NCL", output_layout="NCL")
    data = write_onnx_qdq(graph)
    xq = random_inputs(graph, np.random.default_rng(1), 5)
    x_ncl = _to_onnx_input(graph, xq[0])[:, :, 0, :]  # (N, C, 1, L) -> (N, C, L)
    out = ort_run(data, x_ncl)
    assert out.shape == (5, 4, 12)
    y_ort = _to_int8_output(graph, out[:, :, None, :])
    diff = np.abs(y_ort.astype(np.int32) - run_tflm(write_tflite(graph), xq))
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99


def test_broadcast_across_ranks_is_unsupported() -> None:
    b = MicroBuilder(np.random.default_rng(0), "broadcast")
    x = b.input("x", (1, 4, 4, 3))
    c = b.const("c", np.arange(3, dtype=np.int8), DType.INT8, QParams.per_tensor(0.1, 0))
    y = b.act("y", (1, 4, 4, 3), 0.1, 0)
    b.op(OpType.ADD, (x, c), (y,), ElementwiseOptions())
    with pytest.raises(UnsupportedOpError, match="'ADD' at node 0 'add_0'.*broadcasting"):
        write_onnx_qdq(b.graph([y]))


def test_op_without_emitter_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(onnx_qdq.EMITTERS)
    del table[OpType.TANH]
    monkeypatch.setattr(onnx_qdq, "EMITTERS", table)
    with pytest.raises(UnsupportedOpError, match="TANH.*tanh_0"):
        write_onnx_qdq(MICRO_MODELS["tanh"](np.random.default_rng(0)))


def test_deterministic() -> None:
    make = MICRO_MODELS["multi_op"]
    assert write_onnx_qdq(make(np.random.default_rng(0))) == write_onnx_qdq(make(np.random.default_rng(0)))
