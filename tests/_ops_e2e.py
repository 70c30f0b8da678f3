"""One PyTorch model through the product quantizer (PTQ), the lowering and every int8 runtime, compared exactly.

``run_everywhere(model, input_shape)`` calibrates ``model`` with our TFLite-int8 quantizer, lowers it,
writes the .tflite and the QDQ ONNX, reads the .tflite back, and runs the same int8 batch through TFLM,
TF Lite's reference kernels, the emulator (on the written graph and on the re-read one) and the
``tflm_exact`` program. Each op test asserts exact equality where the runtimes must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Outputs:
    graph: Any
    tflite: bytes
    tflm: np.ndarray  # IR layout, batch first
    emulator: np.ndarray
    emulator_reread: np.ndarray
    exact: np.ndarray  # tflm_exact program, IR layout
    tflite_ref: np.ndarray | None  # None where TF Lite refuses the file
    onnx: np.ndarray | None  # int8 of ONNX Runtime's output (None without onnxruntime)

    def op_types(self) -> list[str]:
        return [op.type.value for op in self.graph.ops]


def convert(model: Any, input_shape: tuple[int, ...], n: int = 64, seed: int = 0,
            overrides: tuple[tuple[str, str], ...] = ()) -> tuple[Any, np.ndarray]:
    """PTQ of ``model`` with the product quantizer on ``n`` random samples: (converted program, inputs).
    ``overrides``: per-layer precisions (``QuantConfig.overrides``, e.g. ``(("rnn", "a16w8"),)``)."""
    from tinyprec.data import Dataset
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import QuantConfig

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32) * 1.5
    ds = Dataset.from_arrays(x, np.arange(n) % 2, num_classes=2, seed=seed)
    model = model.eval()
    check_graph(export_for_quant(model, example_like(input_shape), train=False))
    cfg = QuantConfig(mode="ptq", batch_size=16, calibration_batches=4, autocast="fp32", overrides=overrides)
    return ptq(model, ds, cfg), ds.inputs("test")


def run_everywhere(model: Any, input_shape: tuple[int, ...], *, n: int = 64, seed: int = 0,
                   overrides: tuple[tuple[str, str], ...] = ()) -> Outputs:
    import torch

    from tinyprec.emulator import Emulator
    from tinyprec.formats.onnx_qdq import write_onnx_qdq
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import float_input_for, quantize_input, reference_output
    from tinyprec.ir.layout import to_ir_layout
    from tinyprec.runtimes.tflm import run_tflm

    converted, x = convert(model, input_shape, n=n, seed=seed, overrides=overrides)
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="micro")
    data = write_tflite(graph)
    in_qp = graph.tensors[graph.inputs[0]].qparams
    q = quantize_input(x, in_qp)
    layout_in = graph.metadata.get("input_layout", "NF")
    layout_out = graph.metadata.get("output_layout", "NF")
    x_ir = to_ir_layout(q, layout_in)
    tflm = np.asarray(run_tflm(data, x_ir))
    out_shape = graph.tensors[graph.outputs[0]].shape
    tflm = tflm.reshape((len(q), *out_shape[1:]))
    emu = Emulator(graph).run(x_ir)
    emu2 = Emulator(read_tflite(data)).run(x_ir)
    exact_torch = reference_output(tflm_exact(converted), graph, q)
    exact = to_ir_layout(exact_torch, layout_out) if exact_torch.ndim in (3, 4) else exact_torch
    exact = exact.reshape(tflm.shape)
    try:
        from tinyprec.runtimes.tflite import run_tflite

        ref: np.ndarray | None = np.asarray(run_tflite(data, x_ir, kernels="reference")).reshape(tflm.shape)
    except Exception:  # noqa: BLE001 - TF Lite lacks some kernels TFLM has; callers say where that is expected
        ref = None
    onnx_q = None
    try:
        from tinyprec.runtimes.ort import run_onnx
    except ImportError:  # pragma: no cover
        run_onnx = None  # type: ignore[assignment]
    if run_onnx is not None:
        y = run_onnx(write_onnx_qdq(graph), float_input_for(q, in_qp))
        out_qp = graph.tensors[graph.outputs[0]].qparams
        yq = np.clip(np.round(y / out_qp.scale[0]) + out_qp.zero_point[0], -128, 127).astype(np.int8)
        onnx_q = (to_ir_layout(yq, layout_out) if yq.ndim in (3, 4) else yq).reshape(tflm.shape)
    return Outputs(graph, data, tflm, emu.reshape(tflm.shape), emu2.reshape(tflm.shape), exact, ref, onnx_q)


def assert_exact(out: Outputs, *, tflite: bool = True, onnx_lsb: int = 1) -> None:
    """TFLM == emulator == re-read emulator == tflm_exact on every element; TF Lite reference == TFLM."""
    assert out.tflm.size > 0
    assert np.array_equal(out.emulator, out.tflm), _diff("emulator", out.emulator, out.tflm)
    assert np.array_equal(out.emulator_reread, out.tflm), _diff("emulator (re-read)", out.emulator_reread, out.tflm)
    assert np.array_equal(out.exact, out.tflm), _diff("tflm_exact", out.exact, out.tflm)
    if tflite:
        assert out.tflite_ref is not None, "TF Lite could not run the file"
        assert np.array_equal(out.tflite_ref, out.tflm), _diff("TF Lite reference", out.tflite_ref, out.tflm)
    if out.onnx is not None:
        worst = int(np.abs(out.onnx.astype(np.int64) - out.tflm.astype(np.int64)).max(initial=0))
        assert worst <= onnx_lsb, f"ONNX Runtime differs from TFLM by {worst} LSB"


def _diff(what: str, got: np.ndarray, want: np.ndarray) -> str:
    d = np.abs(got.astype(np.int64) - want.astype(np.int64))
    return f"{what} != TFLM on {(d != 0).mean():.2%} of elements (max {d.max(initial=0)} LSB)"
