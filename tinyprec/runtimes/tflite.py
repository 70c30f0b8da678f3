"""TensorFlow's TF Lite interpreter: a batched cross-check of the TFLM results.

The model is resized to the whole batch (chunked) and run at once. ``kernels="optimized"`` (default)
selects TF Lite's builtin optimized kernels without delegates (fast; on the MLPerf KWS model they give
TFLM's int8 outputs exactly), ``"reference"`` TF Lite's reference kernels (about 10x slower),
``"auto"`` what a TensorFlow user gets by default (XNNPACK where it applies, which rounds differently).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from tinyprec.errors import DataError, ModelFormatError
from tinyprec.runtimes._capture import captured_native_output
from tinyprec.runtimes.tflm import check_tflite_bytes

Kernels = Literal["reference", "optimized", "auto"]
_RESOLVER = {"reference": "BUILTIN_REF", "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "auto": "AUTO"}


def _interpreter(tflite_bytes: bytes, kernels: Kernels, where: str) -> Any:
    check_tflite_bytes(tflite_bytes, where=where)
    if kernels not in _RESOLVER:
        raise DataError(f"{where}: unknown TF Lite kernels '{kernels}'; use one of {', '.join(_RESOLVER)}")
    from tinyprec._quiet import quiet_third_party

    quiet_third_party()
    with captured_native_output() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        resolver = getattr(tf.lite.experimental.OpResolverType, _RESOLVER[kernels])
        try:
            return tf.lite.Interpreter(model_content=bytes(tflite_bytes), experimental_op_resolver_type=resolver, num_threads=1)
        except (ValueError, RuntimeError) as err:
            failure = err
    lines = [ln for ln in "".join(out).splitlines() if ln.strip()]
    reason = lines[-1] if lines else str(failure).splitlines()[0]
    raise ModelFormatError(f"{where}: TF Lite refused the model: {reason}")


def run_tflite(
    tflite_bytes: bytes,
    x: np.ndarray,
    *,
    kernels: Kernels = "optimized",
    chunk: int = 256,
    where: str = "<bytes>",
) -> np.ndarray:
    """Run ``x`` (leading batch dimension, the model's input dtype) through TF Lite; output 0, batch first.

    Raises :class:`DataError` for input of the wrong shape or dtype, :class:`ModelFormatError`
    when TF Lite cannot load or run the model.
    """
    interp = _interpreter(tflite_bytes, kernels, where)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    shape = tuple(int(d) for d in inp["shape"])
    x = np.asarray(x)
    if x.ndim != len(shape) or tuple(x.shape[1:]) != shape[1:]:
        raise DataError(f"{where}: input batch has shape {x.shape}; the model takes (N, {', '.join(map(str, shape[1:]))})")
    if x.dtype != np.dtype(inp["dtype"]):
        raise DataError(f"{where}: input is {x.dtype}; the model's input is {np.dtype(inp['dtype']).name}")
    if _batch_pinned(interp):
        chunk = 1
    results = []
    size = -1
    with captured_native_output():
        try:
            for start in range(0, x.shape[0], chunk):
                part = x[start : start + chunk]
                if part.shape[0] != size:
                    size = part.shape[0]
                    interp.resize_tensor_input(inp["index"], [size, *shape[1:]], strict=False)
                    interp.allocate_tensors()
                interp.set_tensor(inp["index"], np.ascontiguousarray(part))
                interp.invoke()
                results.append(np.array(interp.get_tensor(out["index"]), copy=True))
        except (ValueError, RuntimeError) as err:
            failure: Exception | None = err
        else:
            failure = None
    if failure is not None:
        raise ModelFormatError(f"{where}: TF Lite failed to run the model: {str(failure).splitlines()[0]}")
    if not results:
        return np.zeros((0, *tuple(int(d) for d in out["shape"][1:])), dtype=np.dtype(out["dtype"]))
    return np.concatenate(results, axis=0)


#: Ops whose constant shape input fixes the output's batch (TF Lite resizes the output to it): such a
#: model runs one sample at a time.
_BATCH_PINNED_OPS = frozenset({"TRANSPOSE_CONV"})


def _batch_pinned(interp: Any) -> bool:
    try:
        details = interp._get_ops_details()
    except AttributeError:  # pragma: no cover - older TF
        return False
    return any(d.get("op_name") in _BATCH_PINNED_OPS for d in details)


def tf_lite_compatible(graph: Any) -> Any:
    """``graph`` (an ir.Graph) as TF Lite runs it: a QUANTIZE int8 -> int16 becomes DEQUANTIZE + QUANTIZE.

    TF Lite's QUANTIZE refuses int8 -> int16 (TFLM requantizes directly); through float32 it gives TFLM's
    result (tests/test_emulator_lowbits.py). Returns ``graph`` itself when nothing needs rewriting.
    """
    import dataclasses

    from tinyprec.ir import DType, NoOptions, Op, OpType, Tensor

    tensors, ops, changed = dict(graph.tensors), [], False
    for op in graph.ops:
        x = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] is not None else None
        y = graph.tensors[op.outputs[0]]
        if op.type is OpType.QUANTIZE and x is not None and x.dtype is DType.INT8 and y.dtype is DType.INT16:
            mid = Tensor(f"{x.name}_float", x.shape, DType.FLOAT32)
            tensors[mid.name] = mid
            ops += [Op(OpType.DEQUANTIZE, (x.name,), (mid.name,), NoOptions(), name=f"{op.name}_dq"),
                    Op(OpType.QUANTIZE, (mid.name,), (y.name,), NoOptions(), name=op.name)]
            changed = True
        else:
            ops.append(op)
    return dataclasses.replace(graph, tensors=tensors, ops=ops) if changed else graph
