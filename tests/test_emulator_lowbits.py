"""int16x8 activations, INT4 weights and QUANTIZE int8 <-> int16: emulator == TFLM on every element, and
TensorFlow Lite (reference kernels) == TFLM where TF Lite runs the combination the same way.

Where TF Lite differs, the test pins down how, so that a change on either side shows:
- TF Lite refuses QUANTIZE int8 -> int16; DEQUANTIZE + QUANTIZE gives TFLM's result there.
- TF Lite's reference resolver has no DEPTHWISE_CONV_2D version 7 (INT4 filter, per op_version.cc); the
  same file with version 6 runs and agrees.
- TF Lite's int16 MUL computes its multiplier in float32 (TFLM in double): TF Lite equals that.
- TF Lite's FULLY_CONNECTED rounds once (TFLITE_SINGLE_ROUNDING's arithmetic; its int16 path keeps the
  full 32-bit multiplier where TFLM reduces it to 16 bits): TF Lite equals that arithmetic, not TFLM's.
INT4 files are also checked against an int8 twin holding the same 4-bit values (a swapped nibble order
would make TFLM and TF Lite agree with each other and both be wrong).
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from tests._micro import random_inputs, run_tf, run_tflm
from tests._micro_lowbits import LOWBITS_MODELS, fixed, int8_twin
from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.formats.tflite_writer import write_tflite
from tinyprec.ir import DType, Graph, NoOptions, Op, OpType, Tensor, quantize_multiplier
from tinyprec.ir.verify import verify_quantized

CASES = sorted(LOWBITS_MODELS)
INT4_CASES = [c for c in CASES if c.startswith("w4_") or c.startswith("mixed")]
_FC16 = {"a16_fc_per_tensor", "a16_fc_per_channel_wide", "a16_fc_keep_num_dims"}


def _graph(case: str) -> Graph:
    graph = LOWBITS_MODELS[case](np.random.default_rng(zlib.crc32(case.encode())))
    verify_quantized(graph)
    return graph


def _batch(graph: Graph, n: int = 12) -> list[np.ndarray]:
    xs = random_inputs(graph, np.random.default_rng(7), n)
    for x in xs:  # saturation: an all-minimum and an all-maximum sample
        info = np.iinfo(x.dtype)
        x[0], x[1] = info.min, info.max
    return xs


@pytest.mark.parametrize("case", CASES)
def test_emulator_matches_tflm_exactly(case: str) -> None:
    graph = _graph(case)
    tflite = write_tflite(graph)
    xs = _batch(graph)
    expected = run_tflm(tflite, xs)
    got_ir = Emulator(graph).run_all(xs)[0]
    got_file = Emulator(read_tflite(tflite, where=case)).run_all(xs)[0]
    assert got_ir.dtype == expected.dtype == graph.tensors[graph.outputs[0]].dtype.numpy
    np.testing.assert_array_equal(got_ir, expected)
    np.testing.assert_array_equal(got_file, expected)
    assert len(np.unique(expected)) >= 8, "the micro-model's output is degenerate; it would test little"


@pytest.mark.parametrize("case", INT4_CASES)
def test_int4_file_matches_its_int8_twin_on_tflm(case: str) -> None:
    graph = _graph(case)
    xs = _batch(graph)
    packed, twin = write_tflite(graph), write_tflite(int8_twin(graph))
    np.testing.assert_array_equal(run_tflm(packed, xs), run_tflm(twin, xs))
    int4 = [t for t in graph.tensors.values() if t.dtype is DType.INT4 and t.data is not None]
    saved = sum(t.data.size - t.nbytes for t in int4)  # type: ignore[union-attr]
    assert saved > 0 and abs(len(twin) - len(packed) - saved) < 16 * len(int4)  # 16-byte buffer alignment


def _dequant_quant(graph: Graph) -> Graph:
    """QUANTIZE int8 -> int16 as DEQUANTIZE + QUANTIZE through float32 (what TF Lite accepts)."""
    tensors, ops = dict(graph.tensors), []
    for op in graph.ops:
        x = graph.tensors[op.inputs[0]]  # type: ignore[index]
        y = graph.tensors[op.outputs[0]]
        if op.type is OpType.QUANTIZE and x.dtype is DType.INT8 and y.dtype is DType.INT16:
            mid = Tensor(f"{x.name}_float", x.shape, DType.FLOAT32)
            tensors[mid.name] = mid
            ops += [Op(OpType.DEQUANTIZE, (x.name,), (mid.name,), NoOptions(), name=f"{op.name}_dq"),
                    Op(OpType.QUANTIZE, (mid.name,), (y.name,), NoOptions(), name=op.name)]
        else:
            ops.append(op)
    return dataclasses.replace(graph, tensors=tensors, ops=ops)


def _with_version(tflite: bytes, builtin: int, version: int) -> bytes:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    model = s.ModelT.InitFromObj(s.Model.GetRootAs(tflite, 0))
    for code in model.operatorCodes:
        if code.builtinCode == builtin:
            code.version = version
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _fc_single_rounding_full_multiplier(graph: Graph, xs: list[np.ndarray]) -> np.ndarray:
    """int16 FULLY_CONNECTED as TF Lite computes it: int64 sums, (acc * m + 2**(30 - s)) >> (31 - s) with
    the full q31 multiplier m (TFLM uses m reduced to 16 bits)."""
    op = graph.ops[0]
    x, w, b, y = (graph.tensors[n] for n in (*op.inputs, op.outputs[0]))  # type: ignore[index]
    assert x.qparams and w.qparams and y.qparams and w.data is not None and b.data is not None
    acc = xs[0].reshape(-1, w.shape[1]).astype(np.int64) @ w.data.astype(np.int64).T + b.data.astype(np.int64)
    si, so = float(x.qparams.scale[0]), float(y.qparams.scale[0])
    ws = np.broadcast_to(w.qparams.scale, (w.shape[0],))
    out = np.empty_like(acc)
    for c in range(w.shape[0]):
        product = float(np.float32(si) * np.float32(ws[c])) if w.qparams.scale.size == 1 else si * float(ws[c])
        m, s = quantize_multiplier(product / so, True)
        out[:, c] = (acc[:, c] * m + (1 << (30 - s))) >> (31 - s)
    return np.clip(out, -32768, 32767).astype(np.int16).reshape((len(xs[0]), *y.shape[1:]))


def _mul16_float32_multiplier(graph: Graph, xs: list[np.ndarray]) -> np.ndarray:
    """int16 MUL as TF Lite computes it: the multiplier from float32 s1 * s2 / s_out."""
    from tinyprec.emulator.common import act_range
    from tinyprec.emulator.fixedpoint import mbqm

    op = graph.ops[0]
    s1, s2, so = (np.float32(graph.tensors[n].qparams.scale[0]) for n in (*op.inputs, op.outputs[0]))  # type: ignore
    m, s = quantize_multiplier(float(np.float32(np.float32(s1 * s2) / so)))
    lo, hi = act_range(op, op.options.activation, float(so), 0, DType.INT16)  # type: ignore[union-attr]
    product = (xs[0].astype(np.int64) * xs[1].astype(np.int64)).reshape(-1)
    out = np.array([min(max(mbqm(int(p), m, s, False), lo), hi) for p in product], np.int16)
    return out.reshape(np.broadcast_shapes(xs[0].shape, xs[1].shape))


@pytest.mark.parametrize("case", CASES)
def test_tf_lite_reference_kernels_agree(case: str) -> None:
    graph = _graph(case)
    xs = _batch(graph)
    tf_graph = _dequant_quant(graph)
    tflite = write_tflite(tf_graph)
    if any(op.type is OpType.DEPTHWISE_CONV_2D and graph.tensors[op.inputs[1]].dtype is DType.INT4  # type: ignore[index]
           for op in graph.ops):
        tflite = _with_version(tflite, 4, 6)
    got = run_tf(tflite, xs)
    if case.startswith("a16_mul"):
        expected = _mul16_float32_multiplier(graph, xs)
    elif case in _FC16:
        expected = _fc_single_rounding_full_multiplier(graph, xs)
        assert not np.array_equal(expected, run_tflm(write_tflite(graph), xs)), "TFLM now rounds like TF Lite"
    elif any(op.type is OpType.FULLY_CONNECTED for op in graph.ops):
        expected = Emulator(graph, rounding="single").run_all(xs)[0]
    else:
        expected = run_tflm(write_tflite(graph), xs)
    np.testing.assert_array_equal(got, expected)


def test_tf_lite_refuses_int8_to_int16_quantize_and_depthwise_v7() -> None:
    for case in ("quantize_int8_to_int16", "w4_depthwise"):
        graph = _graph(case)
        with pytest.raises((RuntimeError, ValueError)):
            run_tf(write_tflite(graph), _batch(graph, 2))


@pytest.mark.parametrize(("op_type", "scale"), [
    (OpType.LOGISTIC, 2.0**-12), (OpType.LOGISTIC, 3.1e-4), (OpType.LOGISTIC, 1e-5), (OpType.LOGISTIC, 2.0**-9),
    (OpType.TANH, 2.0**-12), (OpType.TANH, 2.0**-11), (OpType.TANH, 7e-4), (OpType.TANH, 2e-6),
])
def test_int16_logistic_tanh_on_every_input(op_type: OpType, scale: float) -> None:
    """All 65,536 int16 inputs at once: power-of-two scales (TFLM's 3 << shift path) and general ones."""
    graph = fixed(np.random.default_rng(0), op_type, scale)
    graph.tensors["x"] = dataclasses.replace(graph.tensors["x"], shape=(1, 65536))
    graph.tensors["y"] = dataclasses.replace(graph.tensors["y"], shape=(1, 65536))
    x = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 65536)
    expected = run_tflm(write_tflite(graph), [x], arena_size=1 << 20)
    np.testing.assert_array_equal(Emulator(graph).run(x), expected)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_int16_softmax_on_wide_rows(beta: float) -> None:
    """SOFTMAX int16 on 400 rows of 37 with spreads from all-equal to one dominant value."""
    graph = fixed(np.random.default_rng(0), OpType.SOFTMAX, 2e-4, beta=beta)
    for name in ("x", "y"):
        graph.tensors[name] = dataclasses.replace(graph.tensors[name], shape=(1, 400, 37))
    rng = np.random.default_rng(1)
    spread = np.geomspace(1, 65535, 400)[:, None]
    x = np.clip(rng.uniform(-0.5, 0.5, (400, 37)) * spread, -32768, 32767).astype(np.int16)[None]
    expected = run_tflm(write_tflite(graph), [x], arena_size=1 << 20)
    np.testing.assert_array_equal(Emulator(graph).run(x), expected)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_int16x8_kernels_do_not_depend_on_the_rounding_build(rounding: str) -> None:
    """The int64 requantization of 16x8 convolutions has one rounding in both TFLM builds."""
    graph = _graph("a16_conv2d_same_stride2")
    xs = _batch(graph)
    np.testing.assert_array_equal(Emulator(graph, rounding=rounding).run_all(xs)[0],
                                  run_tflm(write_tflite(graph), xs))
