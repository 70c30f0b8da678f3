"""ONNX Runtime on the exported ONNX models (int8 QDQ and FP32), batched on the CPU provider."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyprec.errors import DataError, ModelFormatError

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _session(onnx_bytes: bytes, where: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Evaluate the QDQ graph as written: ORT's default fusion into QLinearConv/QGemm runs MLAS u8s8
    # kernels that saturate 16-bit pair sums on AVX2 CPUs without VNNI (measured here: up to 47 LSB
    # off TFLM on digits_cnn); with fusion off ORT stays within 1 LSB of TFLM.
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(bytes(onnx_bytes), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception classes for every kind of bad file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFormatError(f"{where}: ONNX Runtime cannot load the model: {first[:200]}") from err


def onnx_input_spec(onnx_bytes: bytes, *, where: str = "<bytes>") -> tuple[tuple[int | None, ...], np.dtype]:
    """The first input's shape (None for a symbolic dimension) and numpy dtype."""
    inp = _session(onnx_bytes, where).get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
    return shape, np.dtype(_ORT_DTYPES.get(inp.type, np.float32))


def run_onnx(onnx_bytes: bytes, x: np.ndarray, *, chunk: int = 256, where: str = "<bytes>") -> np.ndarray:
    """Run ``x`` (leading batch dimension) through ONNX Runtime; returns output 0, batch first.

    A model with a fixed batch dimension of 1 is run sample by sample; otherwise in chunks.
    ``x`` must already have the model's input dtype and layout (DataError otherwise).
    """
    sess = _session(onnx_bytes, where)
    inp = sess.get_inputs()[0]
    want = np.dtype(_ORT_DTYPES.get(inp.type, np.float32))
    x = np.asarray(x)
    dims = list(inp.shape)
    if x.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], x.shape[1:])):
        raise DataError(f"{where}: input batch has shape {x.shape}; the ONNX model takes {tuple(dims)}")
    if x.dtype != want:
        raise DataError(f"{where}: input is {x.dtype}; the ONNX model's input is {want.name}")
    step = 1 if dims and dims[0] == 1 else max(1, chunk)
    results = []
    try:
        for start in range(0, x.shape[0], step):
            results.append(sess.run(None, {inp.name: np.ascontiguousarray(x[start : start + step])})[0])
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFormatError(f"{where}: ONNX Runtime failed to run the model: {first[:200]}") from err
    if not results:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(results, axis=0)
