"""The TFLite writer against the real runtimes: TFLM's interpreter and TensorFlow's TFLite interpreter."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from tests._micro import MICRO_MODELS, random_inputs, run_tf, run_tflm
from tinyprec.errors import ModelFormatError, UnsupportedOpError
from tinyprec.formats import tflite_writer
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import BUFFER_ALIGNMENT, write_tflite
from tinyprec.ir import OpType
from tinyprec.ir.verify import verify_int8

# Versions TensorFlow's op_version.cc gives these int8 micro-models (rules read from its source).
EXPECTED_VERSION: dict[str, int | None] = {
    "conv2d": 3, "conv2d_valid_nobias": 3, "depthwise_conv2d": 3, "fully_connected": 4,
    "fully_connected_per_channel": 4, "add": 2, "mul": 2, "average_pool2d": 2, "max_pool2d": 2,
    "mean": 2, "reshape": 1, "concatenation": 2, "pad": 2, "softmax": 2, "logistic": 2, "tanh": 2,
    "multi_op": None, "pool_fc": None,
}


def _schema():  # noqa: ANN202
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _model(data: bytes):  # noqa: ANN202
    return _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def _opcodes(data: bytes) -> list[tuple[int, int]]:
    m = _model(data)
    return [(max(c.builtinCode, c.deprecatedBuiltinCode), c.version) for c in m.operatorCodes]


@pytest.mark.parametrize("name", sorted(MICRO_MODELS))
def test_micro_model_tflm_equals_tensorflow(name: str) -> None:
    graph = MICRO_MODELS[name](np.random.default_rng(0))
    verify_int8(graph)
    data = write_tflite(graph)
    xs = random_inputs(graph, np.random.default_rng(1), 12)
    y_tflm = run_tflm(data, xs)
    y_tf = run_tf(data, xs)
    assert y_tflm.dtype == np.int8 and y_tflm.shape == (12, *graph.tensors[graph.outputs[0]].shape[1:])
    np.testing.assert_array_equal(y_tflm, y_tf)
    # The model must exercise the op: outputs spread over many codes, few saturated.
    assert len(np.unique(y_tflm)) > 8
    assert np.mean((y_tflm == 127) | (y_tflm == -128)) < 0.2
    if EXPECTED_VERSION[name] is not None:  # single-op models
        op_type = graph.ops[0].type
        assert _opcodes(data) == [(tflite_writer.OP_TABLE[op_type].code, EXPECTED_VERSION[name])]


def test_micro_model_reads_back_to_the_same_graph() -> None:
    graph = MICRO_MODELS["depthwise_conv2d"](np.random.default_rng(0))
    back = read_tflite(write_tflite(graph))
    assert [op.type for op in back.ops] == [OpType.DEPTHWISE_CONV_2D]
    assert back.ops[0].options == graph.ops[0].options
    for a, b in zip(graph.ops[0].inputs, back.ops[0].inputs):
        ta, tb = graph.tensors[a], back.tensors[b]  # type: ignore[index]
        assert ta.shape == tb.shape and ta.dtype == tb.dtype and ta.qparams == tb.qparams
        if ta.data is not None:
            np.testing.assert_array_equal(ta.data, tb.data)


def test_int8_io_by_default_has_no_quantize_ops() -> None:
    graph = MICRO_MODELS["conv2d"](np.random.default_rng(0))
    m = _model(write_tflite(graph))
    sg = m.subgraphs[0]
    assert [sg.tensors[i].type for i in (*sg.inputs, *sg.outputs)] == [9, 9]  # INT8
    assert {code for code, _ in _opcodes(write_tflite(graph))} == {3}


def test_float_io_quantizes_at_the_input_and_dequantizes_at_the_output() -> None:
    graph = MICRO_MODELS["fully_connected"](np.random.default_rng(0))
    data = write_tflite(graph, float_io=True)
    codes = _opcodes(data)
    assert codes == [(114, 1), (9, 4), (6, 2)]  # QUANTIZE, FULLY_CONNECTED, DEQUANTIZE
    qx = random_inputs(graph, np.random.default_rng(1), 12)
    x_qp = graph.tensors[graph.inputs[0]].qparams
    y_qp = graph.tensors[graph.outputs[0]].qparams
    assert x_qp is not None and y_qp is not None
    # Float inputs that quantize exactly to qx (no rounding ties), so both paths see the same int8.
    xf = ((qx[0].astype(np.int32) - int(x_qp.zero_point[0])) * x_qp.scale[0]).astype(np.float32)
    y_float = run_tflm(data, [xf])
    y_int8 = run_tflm(write_tflite(graph), qx)
    assert y_float.dtype == np.float32
    expected = (y_int8.astype(np.int32) - int(y_qp.zero_point[0])).astype(np.float32) * y_qp.scale[0]
    np.testing.assert_array_equal(y_float, expected)
    np.testing.assert_array_equal(run_tf(data, [xf]), y_float)


def test_deterministic_across_processes() -> None:
    graph = MICRO_MODELS["concatenation"](np.random.default_rng(0))
    here = hashlib.sha256(write_tflite(graph)).hexdigest()
    code = (
        "import hashlib, numpy as np; from tests._micro import MICRO_MODELS;"
        "from tinyprec.formats.tflite_writer import write_tflite;"
        "print(hashlib.sha256(write_tflite(MICRO_MODELS['concatenation'](np.random.default_rng(0)))).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == here


def test_buffers_aligned_and_buffer_zero_empty() -> None:
    graph = MICRO_MODELS["conv2d"](np.random.default_rng(0))
    data = write_tflite(graph)
    m = _schema().Model.GetRootAs(data, 0)
    assert m.Buffers(0).DataLength() == 0
    with_data = 0
    for i in range(1, m.BuffersLength()):
        buf = m.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))  # absolute position of the first data byte
            assert start % BUFFER_ALIGNMENT == 0, (i, start)
            with_data += 1
    assert with_data == 2  # weights and bias
    assert m.MetadataLength() == 0 and m.Description() is None


def test_long_tensor_names_are_shortened() -> None:
    graph = MICRO_MODELS["reshape"](np.random.default_rng(0))
    long = "x" * 100
    graph.tensors[long] = graph.tensors.pop("x")
    graph.tensors[long].name = long
    graph.inputs = [long]
    op = graph.ops[0]
    op.inputs = (long, *op.inputs[1:])
    sg = _model(write_tflite(graph)).subgraphs[0]
    names = [t.name.decode() for t in sg.tensors]
    assert all(len(n) <= tflite_writer.MAX_NAME_LEN for n in names)
    assert names[sg.inputs[0]] == f"t{sg.inputs[0]}"


def test_unsupported_op_names_op_and_node(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(tflite_writer.OP_TABLE)
    del table[OpType.MUL]
    monkeypatch.setattr(tflite_writer, "OP_TABLE", table)
    graph = MICRO_MODELS["mul"](np.random.default_rng(0))
    with pytest.raises(UnsupportedOpError) as err:
        write_tflite(graph)
    assert err.value.op == "MUL" and "mul_0" in str(err.value) and "micro.mul" in str(err.value)


def test_dangling_tensor_reference_is_a_format_error() -> None:
    graph = MICRO_MODELS["tanh"](np.random.default_rng(0))
    graph.ops[0].inputs = ("missing",)
    with pytest.raises(ModelFormatError, match="missing"):
        write_tflite(graph)
