"""The converted Q/DQ program: tidying, the qparams table, saving and loading quant/converted.pt2."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import torch
from torch import fx

from tinyprec._io import atomic_path, atomic_write_text
from tinyprec.errors import ArtifactError, ModelFormatError
from tinyprec.quant.capture import is_bookkeeping, module_path

QD = "quantized_decomposed."
PROGRAM_NAME = "converted.pt2"
QPARAMS_NAME = "qparams.json"
METRICS_NAME = "metrics.json"

_DROPOUT = ("aten.dropout.default", "aten.dropout_.default", "aten.clone.default")


def _is(node: Any, op: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and str(node.target) == QD + op + ".default"


def _qargs(node: fx.Node) -> tuple[Any, ...]:
    return tuple(node.args[1:])


def tidy(gm: fx.GraphModule) -> fx.GraphModule:
    """Remove what inference does not need, in place: dropout, export's input guards, and the
    dequantize -> quantize pairs with identical qparams that removing dropout leaves behind."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards_fn"):
            graph.erase_node(node)
        elif is_bookkeeping(node):
            graph.erase_node(node)
        elif node.op == "call_function" and str(node.target) in _DROPOUT:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        src = node.args[0] if _is(node, "quantize_per_tensor") else None
        if _is(src, "dequantize_per_tensor") and _qargs(src) == _qargs(node):
            node.replace_all_uses_with(src.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    for name, _ in list(gm.named_children()):
        if name.startswith("_guards_fn"):
            delattr(gm, name)
    gm.recompile()
    return gm


def _const(gm: fx.GraphModule, node: Any) -> torch.Tensor | Any:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        obj: Any = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj
    return node


def _listify(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().reshape(-1).tolist() if value.numel() != 1 or value.dim() else value.item()
    return value


def qparams_table(gm: fx.GraphModule) -> list[dict[str, Any]]:
    """Every quantized tensor of a converted program: activations (one row per quantize op) and
    constants (weights int8, biases int32), with scale(s), zero point(s), axis, dtype and source module."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if _is(node, "quantize_per_tensor"):
            producer = node.args[0]
            name = producer.name if isinstance(producer, fx.Node) else node.name
            kind = "input" if getattr(producer, "op", "") == "placeholder" else "activation"
            rows.append(_row(gm, name, kind, node, module_path(producer) if kind != "input" else "", None))
        elif (_is(node, "dequantize_per_channel") or _is(node, "dequantize_per_tensor")) \
                and getattr(node.args[0], "op", "") == "get_attr" and node.args[0].target not in seen:
            seen.add(node.args[0].target)
            consumer = next(iter(node.users), None)
            data = _const(gm, node.args[0])
            kind = "bias" if data.dtype == torch.int32 else "weight"
            where = module_path(consumer) if consumer is not None else ""
            cname = consumer.name if consumer is not None else ""
            axis = node.args[3] if _is(node, "dequantize_per_channel") else None
            rows.append(_row(gm, f"{cname}.{kind}", kind, node, where, axis, list(data.shape)))
    return rows


def _row(gm: fx.GraphModule, name: str, kind: str, qnode: fx.Node, where: str, axis: int | None,
         shape: list[int] | None = None) -> dict[str, Any]:
    per_channel = "per_channel" in str(qnode.target)
    scale = _const(gm, qnode.args[1])
    zp = _const(gm, qnode.args[2])
    qmin, qmax, dtype = (qnode.args[4:7] if per_channel else qnode.args[3:6])
    row = {
        "name": name, "kind": kind, "module": where, "dtype": str(dtype).removeprefix("torch."),
        "scale": _listify(scale), "zero_point": _listify(zp), "axis": axis, "quant_min": int(qmin),
        "quant_max": int(qmax),
    }
    if shape is not None:
        row["shape"] = shape
    return row


def io_qparams(gm: fx.GraphModule) -> tuple[tuple[float, int], tuple[float, int]]:
    """(scale, zero point) of the graph input's and the graph output's int8 tensors."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    q_in = next(u for u in placeholder.users if _is(u, "quantize_per_tensor"))
    out = next(n for n in gm.graph.nodes if n.op == "output")
    last = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    if last.target is operator.getitem:  # pragma: no cover - converted graphs return the dequantize directly
        last = last.args[0]
    if not _is(last, "dequantize_per_tensor"):
        raise ModelFormatError(f"converted program output '{last.name}' is not a dequantize; the graph is not int8")
    return (float(q_in.args[1]), int(q_in.args[2])), (float(last.args[1]), int(last.args[2]))


def save_program(gm: fx.GraphModule, example: torch.Tensor, path: Path) -> Path:
    """torch.export the converted module again (dynamic batch) and torch.export.save it atomically."""
    from torch.export import Dim

    example = example if example.shape[0] >= 2 else example.expand(2, *example.shape[1:]).contiguous()
    program = torch.export.export(gm, (example,), dynamic_shapes=({0: Dim("batch")},), strict=False)
    with atomic_path(Path(path)) as tmp:
        torch.export.save(program, str(tmp))
    return Path(path)


def load_converted(out_dir: Path) -> fx.GraphModule:
    """The converted program of a run folder (``out_dir/quant/converted.pt2``) as an fx GraphModule.

    Raises ArtifactError if stage 2 has not run, ModelFormatError if the file is unreadable.
    """
    import tinyprec.quant.observers  # noqa: F401  (registers torchao's quantized_decomposed ops)

    path = Path(out_dir) / "quant" / PROGRAM_NAME
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run `tinyprec qat RECIPE` (stage 2) first")
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # torch raises many kinds for a damaged archive
        raise ModelFormatError(f"{path}: cannot load the converted program ({type(err).__name__}: {err}); "
                               "re-run `tinyprec qat RECIPE`") from err
    return tidy(program.module())


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=False) + "\n")
