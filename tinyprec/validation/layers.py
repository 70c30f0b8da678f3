"""Per-layer error: the integer tensors the MCU computes against float activations.

For each op of the quantized graph, its output tensor (from the emulator's or TFLM's taps) is dequantized
and compared with the float activation of the PyTorch module it came from (IR tensor ``source``, or
model/ir_sources.json). The main reference is the same network's own float weights (after QAT: the
fine-tuned float weights, so the error is quantization alone); a second reference, the stage-1 FP32
model, adds the weight drift of fine-tuning and is reported beside it. The FP32 activation is taken after the module and the BatchNorm/activation
modules that directly follow it (they are folded or fused into the int8 op), with the op's fused
activation applied, and moved to the IR layout (NCHW -> NHWC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tinyprec.ir import Activation, DType, Graph, OpType
from tinyprec.validation.metrics import sqnr_db
from tinyprec.validation.runners import LAYOUT_BY_RANK, dequantize, to_ir_layout

# Modules whose output replaces their input's in the int8 graph (folded or fused into the producer).
_FUSED_FOLLOWERS = ("BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "Hardtanh", "Identity", "Dropout")
# No rows for ops that only move values: PAD, and RESHAPE whose flattening order in the IR (NHWC) may
# differ from PyTorch's (NCHW) flatten; their values are their input's, already compared.
_SKIP_OPS = (OpType.QUANTIZE, OpType.DEQUANTIZE, OpType.PAD, OpType.RESHAPE)


@dataclass(frozen=True)
class LayerError:
    """Error of one quantized tensor against float activations. LSB = the tensor's quantization step.

    ``sqnr_db`` and the LSB errors are against the network's own float weights; ``sqnr_stage1_db``
    against the stage-1 FP32 model (NaN when not measured). ``precision`` is "w<weight bits>a<output
    activation bits>" (e.g. "w8a8", "w4a8", "w8a16"; "a8" for ops without weights).
    """

    index: int
    op: str
    tensor: str
    module: str
    shape: tuple[int, ...]
    sqnr_db: float
    max_err_lsb: float
    mean_err_lsb: float
    sqnr_stage1_db: float = float("nan")
    precision: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("sqnr_db", "max_err_lsb", "mean_err_lsb", "sqnr_stage1_db"):
            v = d[key]
            d[key] = None if not np.isfinite(v) else round(float(v), 3)
        return d


_WEIGHTED = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)


def _bits(dtype: DType) -> int:
    return int(dtype.value[3:]) if dtype.value.startswith("int") else 32


def op_precision(graph: Graph, op: Any) -> str:
    """"w4a8" style label of an op: its constant weight's bits (if any) and its output's bits."""
    out = graph.tensors[op.outputs[0]]
    label = f"a{_bits(out.dtype)}"
    weight = graph.tensors.get(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] is not None else None
    if weight is not None and weight.is_const and op.type in _WEIGHTED:
        label = f"w{_bits(weight.dtype)}{label}"
    return label


def record_activations(model: Any, x: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """Run ``model`` on ``x`` (PyTorch layout) and log (module path, module type, output) in completion order."""
    import torch

    log: list[tuple[str, str, np.ndarray]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: Any, _inp: Any, out: Any, _name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                log.append((_name, type(mod).__name__, out.detach().float().cpu().numpy()))

        handles.append(module.register_forward_hook(hook))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return log


def _apply_activation(ref: np.ndarray, act: Activation) -> np.ndarray:
    if act is Activation.RELU:
        return np.maximum(ref, 0.0)
    if act is Activation.RELU6:
        return np.clip(ref, 0.0, 6.0)
    if act is Activation.RELU_N1_TO_1:
        return np.clip(ref, -1.0, 1.0)
    return ref


def _reference(log: list[tuple[str, str, np.ndarray]], module: str) -> np.ndarray | None:
    hits = [i for i, (name, _, _) in enumerate(log) if name == module]
    if not hits:
        return None
    i = hits[-1]
    out = log[i][2]
    j = i + 1
    while j < len(log) and log[j][1] in _FUSED_FOLLOWERS and log[j][2].shape == out.shape:
        out = log[j][2]
        j += 1
    return out


def per_layer_errors(
    graph: Graph,
    taps: Mapping[str, np.ndarray],
    log: list[tuple[str, str, np.ndarray]],
    sources: Mapping[str, str | None] | None = None,
    stage1_log: list[tuple[str, str, np.ndarray]] | None = None,
) -> list[LayerError]:
    """One row per quantized op output with a known source module whose float activation has the same size.

    ``log`` holds the activations of the network's own float weights, ``stage1_log`` (optional) those of
    the stage-1 FP32 model. When several ops come from one module, the last one (the module's final
    output) is kept.
    """
    rows: dict[str, LayerError] = {}
    weighted: dict[str, str] = {}  # module -> its weighted op's precision (a split layer ends in a CONCATENATION)
    for op in graph.ops:
        module = (sources or {}).get(op.outputs[0]) or graph.tensors[op.outputs[0]].source or op.source
        if op.type in _WEIGHTED and module:
            weighted[module] = op_precision(graph, op)
    for index, op in enumerate(graph.ops):
        if op.type in _SKIP_OPS:
            continue
        name = op.outputs[0]
        t = graph.tensors[name]
        module = (sources or {}).get(name) or t.source or op.source
        if module is None or name not in taps or t.qparams is None or t.dtype not in (DType.INT8, DType.INT16):
            continue
        q = np.asarray(taps[name])
        act = getattr(op.options, "activation", Activation.NONE)
        ref_n = _aligned(log, module, q, act)
        if ref_n is None:
            continue
        n = ref_n.shape[0]
        deq = dequantize(q[:n], t.qparams)
        err_lsb = np.abs(deq.astype(np.float64) - ref_n) / float(t.qparams.scale[0])
        stage1 = _aligned(stage1_log, module, q, act) if stage1_log is not None else None
        rows[module] = LayerError(index, op.type.value, name, module, tuple(int(d) for d in t.shape),
                                  sqnr_db(ref_n, deq), float(err_lsb.max()), float(err_lsb.mean()),
                                  sqnr_db(stage1, deq) if stage1 is not None and stage1.shape == deq.shape
                                  else float("nan"), weighted.get(module) or op_precision(graph, op))
    return sorted(rows.values(), key=lambda r: r.index)


def _aligned(log: list[tuple[str, str, np.ndarray]], module: str, q: np.ndarray, act: Activation) -> np.ndarray | None:
    """The float activation of ``module`` in the IR layout and shape of ``q``, with the fused activation."""
    ref = _reference(log, module)
    if ref is None:
        return None
    if ref.ndim in (3, 4):
        ref = to_ir_layout(ref, LAYOUT_BY_RANK[ref.ndim])
    n = min(q.shape[0], ref.shape[0])
    if ref[:n].size != q[:n].size or n == 0:
        return None
    return _apply_activation(ref[:n].reshape(q[:n].shape), act)
