"""The runtime wrappers against the runtimes themselves, on the MLPerf Tiny int8 models."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.errors import DataError, ModelFormatError
from tinyprec.runtimes import tflm
from tinyprec.runtimes.tflite import run_tflite

KWS_SHAPE = (49, 10, 1)
IC_SHAPE = (32, 32, 3)


def _batch(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape)).astype(np.int8)


def _allocates(data: bytes, size: int) -> bool:
    from tflite_micro.python.tflite_micro import runtime

    from tinyprec.runtimes._capture import captured_native_output

    with captured_native_output():
        try:
            runtime.Interpreter.from_bytes(data, arena_size=size)
        except RuntimeError:
            return False
    return True


@pytest.mark.parametrize("name,readme_kb", [("kws_tflite", 24.3), ("ic_tflite", 56.0)])
def test_arena_is_the_smallest_that_allocates(name: str, readme_kb: float, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(name)
    arena = tflm.tflm_arena_bytes(data)
    assert _allocates(data, arena)
    assert not _allocates(data, arena - 1)
    assert abs(arena / 1000 - readme_kb) < 0.1
    report = tflm.tflm_arena_report(data)
    assert report.arena_bytes == arena
    assert report.head_bytes + report.tail_bytes == arena  # the recording allocator agrees to the byte


def test_run_tflm_matches_manual_loop_and_batch_order(kws_tflite: bytes) -> None:
    from tflite_micro.python.tflite_micro import runtime

    x = _batch(KWS_SHAPE, 6)
    got = tflm.run_tflm(kws_tflite, x)
    assert got.shape == (6, 12) and got.dtype == np.int8
    interp = runtime.Interpreter.from_bytes(kws_tflite, arena_size=100_000)
    for i in range(6):
        interp.set_input(x[i : i + 1], 0)
        interp.invoke()
        np.testing.assert_array_equal(got[i], interp.get_output(0)[0])
    assert len({got[i].tobytes() for i in range(6)}) > 1  # different inputs, different outputs


def test_progress_is_reported(kws_tflite: bytes) -> None:
    seen: list[tuple[int, int]] = []
    tflm.run_tflm(kws_tflite, _batch(KWS_SHAPE, 3), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)


def test_taps_include_input_and_output(ic_tflite: bytes) -> None:
    x = _batch(IC_SHAPE, 2, seed=3)
    taps = tflm.run_tflm_with_taps(ic_tflite, x)
    out = tflm.run_tflm(ic_tflite, x)
    names = [t.name for t in tflm.model_tensors(ic_tflite) if not t.is_const]
    assert list(taps) == names
    np.testing.assert_array_equal(taps["input_1_int8"], x)
    np.testing.assert_array_equal(taps["Identity_int8"], out)
    assert all(v.shape[0] == 2 for v in taps.values())


def test_tflite_optimized_kernels_agree_with_tflm_on_kws(kws_tflite: bytes) -> None:
    # Measured: TF Lite's builtin (non-delegate) kernels give TFLM's int8 outputs exactly on KWS.
    x = _batch(KWS_SHAPE, 40, seed=7)
    np.testing.assert_array_equal(run_tflite(kws_tflite, x, kernels="optimized", chunk=16), tflm.run_tflm(kws_tflite, x))


def test_tflite_reference_kernels_close_to_tflm_on_ic(ic_tflite: bytes) -> None:
    x = _batch(IC_SHAPE, 8, seed=5)
    ref = run_tflite(ic_tflite, x, kernels="reference")
    micro = tflm.run_tflm(ic_tflite, x)
    assert ref.shape == micro.shape == (8, 10)
    assert np.abs(ref.astype(int) - micro).max() <= 16


@pytest.mark.parametrize("cut", [100, 5000, 40000, 53000])
def test_truncated_model_is_a_format_error(kws_tflite: bytes, cut: int) -> None:
    with pytest.raises(ModelFormatError, match="not a readable"):
        tflm.run_tflm(kws_tflite[:cut], _batch(KWS_SHAPE, 1))


def test_not_a_tflite_file() -> None:
    with pytest.raises(ModelFormatError, match="TFL3"):
        tflm.tflm_arena_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="TFL3"):
        run_tflite(b"garbage" * 10, np.zeros((1, 2), np.int8))


def test_wrong_input_shape_or_dtype(kws_tflite: bytes) -> None:
    with pytest.raises(DataError, match=r"\(N, 49, 10, 1\)"):
        tflm.run_tflm(kws_tflite, np.zeros((2, 10, 49, 1), np.int8))
    with pytest.raises(DataError, match="int8"):
        tflm.run_tflm(kws_tflite, np.zeros((2, 49, 10, 1), np.float32))
    with pytest.raises(DataError, match="shape"):
        run_tflite(kws_tflite, np.zeros((2, 49, 10), np.int8))


def test_run_onnx_batches_like_single_samples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper

    from tinyprec.runtimes.ort import onnx_input_spec, run_onnx

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(data, x, chunk=2), x @ w, rtol=1e-6)
    assert onnx_input_spec(data)[0] == (None, 4)
    with pytest.raises(DataError):
        run_onnx(data, x.astype(np.float64))
    with pytest.raises(ModelFormatError):
        run_onnx(b"not onnx", x)


def _reshape_opcode_as_add(kws: bytes) -> bytes:
    """KWS with RESHAPE's operator code turned into ADD: readable, but TFLM's Prepare aborts on it."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(kws, 0))
    for code in model.operatorCodes:
        if code.deprecatedBuiltinCode == 22:  # RESHAPE -> ADD
            code.deprecatedBuiltinCode = code.builtinCode = 0
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_isolated_arena_turns_a_native_abort_into_an_error(kws_tflite: bytes) -> None:
    with pytest.raises(ModelFormatError, match=r"TFLM crashed \(signal 6\)"):
        tflm.tflm_arena_report_isolated(_reshape_opcode_as_add(kws_tflite), where="bad.tflite")
    assert tflm.tflm_arena_report_isolated(kws_tflite).arena_bytes == 24272


def test_loader_parse_errors_and_batch_dimension(kws_tflite: bytes) -> None:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(kws_tflite, 0))
    model.subgraphs[0].tensors[0].shape = np.array([129, 49, 10, 1], np.int32)  # batch 129 in the file
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ModelFormatError, match="batch"):
        tflm.run_tflm(bytes(builder.Output()), _batch(KWS_SHAPE, 1))
    # Cut short at the end (metadata and quantization vectors run past the end of the file).
    data = bytearray(kws_tflite)
    with pytest.raises(ModelFormatError):
        tflm.run_tflm(bytes(data[: len(data) - 40]), _batch(KWS_SHAPE, 1))
