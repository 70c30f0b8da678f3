"""INT4 and int16 in the .tflite writer and reader, the precision support table and the verifier, and
TFLM's arena cost of INT4 weights (the unpack scratch), measured."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from tests._micro import MicroBuilder
from tests._micro_lowbits import LOWBITS_MODELS, conv, fully_connected, int8_twin
from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError, QuantSpecError
from tinyprec.formats.tflite_reader import read_tflite, unpack_int4
from tinyprec.formats.tflite_writer import pack_int4, write_tflite
from tinyprec.ir import DType, FullyConnectedOptions, Graph, OpType, QParams
from tinyprec.ir.support import OP_SUPPORT, check_op_precision
from tinyprec.ir.verify import verify_quantized


def _graph(case: str) -> Graph:
    return LOWBITS_MODELS[case](np.random.default_rng(zlib.crc32(case.encode())))


def _schema():  # type: ignore[no-untyped-def]
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    return s


def test_int4_packing_is_low_nibble_first_twos_complement() -> None:
    values = np.array([1, -1, -8, 7, 0, -3, 5], np.int8)
    packed = pack_int4(values)
    assert packed == bytes([0xF1, 0x78, 0xD0, 0x05])  # (1, -1), (-8, 7), (0, -3), (5, pad 0)
    np.testing.assert_array_equal(unpack_int4(packed, values.size), values)
    every = np.arange(-8, 8, dtype=np.int8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(every), 16), every)


@pytest.mark.parametrize("case", sorted(LOWBITS_MODELS))
def test_reader_round_trips_int4_and_int16_models(case: str) -> None:
    graph = _graph(case)
    tflite = write_tflite(graph)
    back = read_tflite(tflite, where=case)
    for name, t in graph.tensors.items():
        got = back.tensors[name]
        assert (got.dtype, got.shape, got.qparams) == (t.dtype, t.shape, t.qparams), name
        if t.data is not None:
            np.testing.assert_array_equal(got.data, t.data)  # type: ignore[arg-type]
    assert back.metadata["kind"] == graph.quant_kind()
    added = sum(t.nbytes for n, t in back.tensors.items() if n.endswith("_zero_bias"))  # TF Lite needs a bias
    assert back.const_bytes() == graph.const_bytes() + added
    s = _schema()
    model = s.Model.GetRootAs(tflite, 0)
    sub = model.Subgraphs(0)
    for i in range(sub.TensorsLength()):  # INT4 buffers hold ceil(n / 2) bytes, the packed values
        t = sub.Tensors(i)
        if t.Type() == 17:
            raw = model.Buffers(t.Buffer()).DataAsNumpy().tobytes()
            assert raw == pack_int4(graph.tensors[t.Name().decode()].data)  # type: ignore[arg-type]


def test_quant_kind_and_precision_describe_mixed_graphs() -> None:
    assert (_graph("w4_conv2d").quant_kind(), _graph("w4_conv2d").precision()) == ("int8", "w4a8")
    assert (_graph("a16_fc_per_tensor").quant_kind(), _graph("a16_fc_per_tensor").precision()) == ("int16x8", "w8a16")
    mixed = _graph("mixed_w4_a16")
    assert (mixed.quant_kind(), mixed.precision()) == ("int8+int16", "w4/8a8/16")
    w = mixed.tensors["w1"]
    assert w.nbytes == (w.data.size + 1) // 2 and w.dtype.numpy == np.int8  # type: ignore[union-attr]


def _options(tflite: bytes, op_index: int) -> tuple[int, object]:
    s = _schema()
    model = s.Model.GetRootAs(tflite, 0)
    op = model.Subgraphs(0).Operators(op_index)
    version = model.OperatorCodes(op.OpcodeIndex()).Version()
    table = op.BuiltinOptions()
    kinds = {s.BuiltinOptions.Conv2DOptions: s.Conv2DOptions, s.BuiltinOptions.FullyConnectedOptions:
             s.FullyConnectedOptions, s.BuiltinOptions.AddOptions: s.AddOptions}
    cls = kinds.get(op.BuiltinOptionsType())
    if cls is None or table is None:
        return version, None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return version, opts


@pytest.mark.parametrize(("case", "version", "bias_type"), [
    ("a16_conv2d_same_stride2", 8, 4), ("a16_fc_per_tensor", 11, 4), ("a16_depthwise_mult2_valid", 1, None),
    ("w4_conv2d", 7, 0), ("w4_depthwise", 7, None), ("w4_fc", 10, 0), ("a16_add", 3, None),
    ("a16_mul", 4, None), ("a16_softmax", 3, None), ("a16_logistic", 3, None), ("a16_average_pool2d", 3, None),
    ("a16_mean", 3, None), ("a16_concatenation", 3, None), ("a16_pad", 3, None), ("quantize_int8_to_int16", 2, None),
])
def test_op_versions_and_int16_options_follow_tensorflow(case: str, version: int, bias_type: int | None) -> None:
    """Versions per TensorFlow's op_version.cc; quantized_bias_type INT64 (4) on 16x8 CONV_2D / FC, which
    TF Lite reads to take its int64 bias path; pot_scale_int16 false on int16 ADD (general scales)."""
    got_version, opts = _options(write_tflite(_graph(case)), 0)
    assert got_version == version
    if bias_type is not None:
        assert opts.QuantizedBiasType() == bias_type  # type: ignore[attr-defined]
    if case == "a16_add":
        assert opts.PotScaleInt16() is False  # type: ignore[attr-defined]


def test_corrupt_int4_buffer_is_a_one_line_error() -> None:
    graph = _graph("w4_fc")
    s = _schema()
    import flatbuffers

    model = s.ModelT.InitFromObj(s.Model.GetRootAs(write_tflite(graph), 0))
    w = next(t for t in model.subgraphs[0].tensors if t.type == 17)
    model.buffers[w.buffer].data = model.buffers[w.buffer].data[:-1]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ModelFormatError, match="int4 needs 40"):
        read_tflite(bytes(builder.Output()), where="bad.tflite")


def test_support_table_has_a_row_per_op() -> None:
    assert set(OP_SUPPORT) == set(OpType)
    assert OP_SUPPORT[OpType.CONV_2D].int4_per_channel and not OP_SUPPORT[OpType.FULLY_CONNECTED].int4_per_channel
    assert OP_SUPPORT[OpType.RESHAPE].weights == frozenset()


def _int16_with_int4(rng: np.random.Generator) -> Graph:
    graph = conv(rng, act=DType.INT16)
    w = graph.tensors["w"]
    assert w.data is not None
    graph.tensors["w"] = dataclasses.replace(w, dtype=DType.INT4, data=np.clip(w.data, -7, 7).astype(np.int8))
    return graph


def _fc_int4_per_channel(rng: np.random.Generator) -> Graph:
    return fully_connected(rng, bits=4, per_channel=True)


def _int16_int32_bias(rng: np.random.Generator) -> Graph:
    graph = fully_connected(rng, act=DType.INT16)
    b = graph.tensors["b"]
    graph.tensors["b"] = dataclasses.replace(b, dtype=DType.INT32, data=np.zeros(b.shape, np.int32))
    return graph


def _int16_nonzero_zp(rng: np.random.Generator) -> Graph:
    graph = LOWBITS_MODELS["a16_reshape"](rng)
    for n in ("x", "y"):
        graph.tensors[n] = dataclasses.replace(graph.tensors[n], qparams=QParams.per_tensor(1e-4, 3))
    return graph


def _int4_out_of_range(rng: np.random.Generator) -> Graph:
    graph = conv(rng, bits=4)
    w = graph.tensors["w"]
    assert w.data is not None
    w.data[0, 0, 0, 0] = 8
    return graph


@pytest.mark.parametrize(("build", "message"), [
    (_int16_with_int4, r"CONV_2D 'conv_2d_0' \(micro.conv_2d\): INT4 weights 'w' need int8 activations"),
    (_fc_int4_per_channel, r"FULLY_CONNECTED .*INT4 weights 'w' must be per-tensor"),
    (_int16_int32_bias, r"FULLY_CONNECTED .*bias 'b' is int32; int16 activations take a int64 bias"),
    (_int16_nonzero_zp, r"RESHAPE .*int16 activation 'x' must have zero point 0"),
    (_int4_out_of_range, r"CONV_2D .*weights 'w' use 8; the int4 spec allows \[-7, 7\]"),
])
def test_verifier_refuses_what_tflm_does_not_run(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QuantSpecError, match=message):
        verify_quantized(build(np.random.default_rng(0)))


def test_emulator_refuses_by_the_same_table() -> None:
    graph = _int16_with_int4(np.random.default_rng(0))
    assert check_op_precision(graph.ops[0], graph) is not None
    with pytest.raises(ModelFormatError, match="INT4 weights 'w' need int8 activations"):
        Emulator(graph)


def _two_fc(rng: np.random.Generator, bits: int) -> Graph:
    b = MicroBuilder(rng, "two_fc")
    x = b.input("x", (1, 256))
    w1 = b.weights("w1", (128, 256), axis=None, bits=bits)
    h = b.out_for_accumulator("h", (1, 128), x, w1, 256)
    b.op(OpType.FULLY_CONNECTED, (x, w1, b.bias("b1", x, w1, 128, 256)), (h,), FullyConnectedOptions())
    w2 = b.weights("w2", (10, 128), axis=None, bits=bits)
    y = b.out_for_accumulator("y", (1, 10), h, w2, 128)
    b.op(OpType.FULLY_CONNECTED, (h, w2, b.bias("b2", h, w2, 10, 128)), (y,), FullyConnectedOptions())
    return b.graph([y])


@pytest.mark.parametrize(("name", "build", "largest"), [
    ("fc_256x256", lambda r: fully_connected(r, bits=4, depth=256, cout=256), 65536),
    ("conv_3x3_16_to_32", lambda r: conv(r, bits=4, hw=16, cin=16, cout=32, stride=1), 4608),
    ("two_fc_256x128_128x10", lambda r: _two_fc(r, 4), 32768),
])
def test_tflm_arena_grows_by_the_largest_int4_layer(name: str, build, largest: int) -> None:  # type: ignore[no-untyped-def]
    """TFLM unpacks INT4 weights into one arena scratch region, reused by every INT4 layer: measured, the
    arena grows by the largest INT4 layer's weight count (a 256x256 FC: 1,488 B at int8, 67,024 B at INT4)."""
    from tinyprec.runtimes.arena import smallest_arena

    graph = build(np.random.default_rng(0))
    int4 = smallest_arena(write_tflite(graph), where=name)
    int8 = smallest_arena(write_tflite(int8_twin(graph)), where=name)
    assert 0 <= int4 - int8 - largest < 32, (name, int8, int4)
