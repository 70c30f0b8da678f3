"""The .tflite reader on the MLPerf Tiny fixtures, cross-checked against TensorFlow's own interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.errors import ModelFormatError
from tinyprec.formats.tflite_reader import read_tflite, read_tflite_indexed
from tinyprec.ir import DType, OpType, Padding
from tinyprec.ir.verify import verify_int8

KWS_OPS = [OpType.CONV_2D] + [OpType.DEPTHWISE_CONV_2D, OpType.CONV_2D] * 4 + [
    OpType.AVERAGE_POOL_2D, OpType.RESHAPE, OpType.FULLY_CONNECTED, OpType.SOFTMAX]


def test_kws_structure(kws_tflite: bytes) -> None:
    g = read_tflite(kws_tflite, where="kws.tflite")
    assert [op.type for op in g.ops] == KWS_OPS
    assert g.metadata["kind"] == "int8"
    x, y = g.tensor(g.inputs[0]), g.tensor(g.outputs[0])
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((1, 49, 10, 1), DType.INT8, (1, 12), DType.INT8)
    # README: 22,606 constant parameters.
    assert sum(t.data.size for t in g.tensors.values() if t.data is not None) == 22606
    first = g.ops[0]
    assert first.options.stride_h == 2 and first.options.padding is Padding.SAME  # type: ignore[union-attr]
    w = g.tensor(first.inputs[1])  # type: ignore[arg-type]
    assert w.shape == (64, 10, 4, 1) and w.qparams is not None and w.qparams.axis == 0
    dw = g.tensor(g.ops[1].inputs[1])  # type: ignore[arg-type]
    assert dw.qparams is not None and dw.qparams.axis == 3 and dw.qparams.scale.size == 64
    assert g.tensor(g.outputs[0]).qparams.zero_point[0] == -128  # type: ignore[union-attr]
    verify_int8(g)


def test_ic_structure(ic_tflite: bytes) -> None:
    g = read_tflite(ic_tflite, where="ic.tflite")
    counts = {t: sum(op.type is t for op in g.ops) for t in g.op_types()}
    assert counts == {OpType.CONV_2D: 9, OpType.ADD: 3, OpType.AVERAGE_POOL_2D: 1, OpType.RESHAPE: 1,
                      OpType.FULLY_CONNECTED: 1, OpType.SOFTMAX: 1}
    assert g.tensor(g.inputs[0]).shape == (1, 32, 32, 3)
    assert sum(t.data.size for t in g.tensors.values() if t.data is not None) == 77708
    verify_int8(g)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["kws_tflite", "ic_tflite"])
def test_tensors_match_tensorflow_interpreter(fixture: str, request: pytest.FixtureRequest) -> None:
    """Every tensor's shape, dtype, qparams and constant data equal what TF Lite itself reads."""
    import tensorflow as tf

    data: bytes = request.getfixturevalue(fixture)
    graph, names = read_tflite_indexed(data)
    interp = tf.lite.Interpreter(model_content=data)
    interp.allocate_tensors()
    details = interp.get_tensor_details()
    assert len(details) == len(names)
    for d in details:
        t = graph.tensor(names[d["index"]])
        assert t.shape == tuple(d["shape"]) and t.dtype.numpy == d["dtype"], t.name
        q = d["quantization_parameters"]
        if len(q["scales"]):
            assert t.qparams is not None
            np.testing.assert_array_equal(t.qparams.scale, q["scales"].astype(np.float32))
            np.testing.assert_array_equal(t.qparams.zero_point, q["zero_points"])
            if len(q["scales"]) > 1:
                assert t.qparams.axis == q["quantized_dimension"]
        else:
            assert t.qparams is None
        if t.data is not None:
            np.testing.assert_array_equal(t.data, interp.get_tensor(d["index"]))


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: b"", "too short"),
    (lambda d: d[:12], "too short"),
    (lambda d: d[:4] + b"XXXX" + d[8:], "not a TFLite flatbuffer"),
    (lambda d: d[: len(d) // 2], "corrupt"),
    (lambda d: (0xFFFFFFF0).to_bytes(4, "little") + d[4:], "corrupt"),
])
def test_bad_files_raise_one_line_model_format_error(kws_tflite: bytes, mutate, needle: str) -> None:
    with pytest.raises(ModelFormatError) as info:
        read_tflite(mutate(kws_tflite), where="bad.tflite")
    message = str(info.value)
    assert needle in message and message.startswith("bad.tflite: ") and "\n" not in message


def test_not_bytes_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="expected the bytes"):
        read_tflite("model.tflite", where="arg")  # type: ignore[arg-type]


def test_huge_shape_is_refused_before_allocation(kws_tflite: bytes) -> None:
    """A shape entry set to 2**30 must be refused by the element bound, not allocated."""
    graph, names = read_tflite_indexed(kws_tflite)
    shape = np.array(graph.tensor(graph.inputs[0]).shape, np.int32).tobytes()  # 1,49,10,1
    pos = kws_tflite.find(shape)
    assert pos > 0
    hostile = kws_tflite[:pos + 4] + np.int32(1 << 30).tobytes() + kws_tflite[pos + 8:]
    with pytest.raises(ModelFormatError, match="elements"):
        read_tflite(hostile, where="big.tflite")
