"""Capture a model with torch.export (dynamic batch) and refuse what stage 2 cannot quantize, before training.

Every exported node carries ``meta['nn_module_stack']``; :func:`module_path` turns it into the dotted
path of the user's module (``features.3``), which errors and the IR sources name.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

from tinyprec.errors import UnsupportedOpError
from tinyprec.quant.ops import OP_ROLES, SUPPORTED_SUMMARY, Role

if TYPE_CHECKING:
    import torch
    from torch import fx


def module_path(node: fx.Node) -> str:
    """Dotted path of the innermost user module that produced ``node`` ('' for the root module)."""
    stack = node.meta.get("nn_module_stack") or {}
    for key, value in reversed(list(stack.items())):
        path = value[0] if isinstance(value, tuple) else key
        if path.startswith("_empty_nn_module_stack"):
            continue
        return _clean_path(str(path))
    return ""


def _clean_path(path: str) -> str:
    # torch.export spells submodule access as L['self'].features[3] or features.3 depending on the version.
    path = path.replace("L['self'].", "").replace("L['self']", "")
    out = path.replace("[", ".").replace("]", "").replace("'", "")
    return out.strip(".")


def describe_where(node: fx.Node) -> str:
    """'module features.3 (Conv2d), model.py:41' for error messages."""
    path = module_path(node) or "<root module>"
    stack = node.meta.get("nn_module_stack") or {}
    kind = ""
    if stack:
        last = list(stack.values())[-1]
        kind = str(last[1]).rsplit(".", 1)[-1] if isinstance(last, tuple) else ""
    where = f"module '{path}'" + (f" ({kind})" if kind and kind not in ("_empty_nn_module_stack_from_metadata_hook",) else "")
    trace = str(node.meta.get("stack_trace") or "").strip().splitlines()
    for line in reversed(trace):
        line = line.strip()
        if line.startswith("File "):
            parts = line.split(",")
            if len(parts) >= 2:
                where += f", {parts[0][5:].strip().strip(chr(34))}:{parts[1].strip().removeprefix('line ').strip()}"
            break
    return where


def with_biases(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` where every Conv/Linear has a bias (zeros where it had none).

    The TFLite int8 spec needs an int32 bias per conv/linear; PT2E quantizes (and folds BN into) a bias
    only if the exported graph has one.
    """
    import torch
    from torch import nn

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and module.bias is None:
            out = module.weight.shape[0]
            module.bias = nn.Parameter(torch.zeros(out, dtype=module.weight.dtype, device=module.weight.device))
    return model


def with_output_softmax(model: torch.nn.Module) -> torch.nn.Module:
    """``softmax(model(x), -1)`` as a module whose exported nodes keep ``model``'s own module paths."""
    return _output_softmax_class()(model)


@functools.cache
def _output_softmax_class() -> type:
    from torch import nn

    class OutputSoftmax(nn.Module):
        _tinyprec_unwrap = "model"  # export_for_quant drops this level from the module paths

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model
            self.output_softmax = nn.Softmax(dim=-1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.output_softmax(self.model(x))

    return OutputSoftmax


def _rebase_paths(gm: fx.GraphModule, prefix: str) -> None:
    """Drop the wrapper level ``prefix`` from every node's nn_module_stack (see with_output_softmax)."""
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        rebased = {}
        for key, value in stack.items():
            path, kind = value if isinstance(value, tuple) else (key, "")
            clean = _clean_path(str(path))
            if clean == prefix:
                continue
            if clean.startswith(prefix + "."):
                clean = clean[len(prefix) + 1:]
            rebased[key] = (clean, kind)
        node.meta["nn_module_stack"] = rebased


def export_for_quant(model: torch.nn.Module, example_input: torch.Tensor, *, train: bool) -> fx.GraphModule:
    """torch.export ``model`` (batch dimension dynamic) in train or eval mode, as a GraphModule for PT2E."""
    import torch
    from torch.export import Dim

    was_training = model.training
    model.train(train)
    example = example_input
    if example.shape[0] < 2:  # export specializes sizes 0 and 1; a dynamic batch needs an example of >= 2
        example = example.expand(2, *example.shape[1:]).contiguous()
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: Dim("batch")},), strict=False)
    finally:
        model.train(was_training)
    gm = program.module()
    prefix = getattr(model, "_tinyprec_unwrap", None)
    if prefix:
        _rebase_paths(gm, prefix)
    return gm


def check_graph(gm: fx.GraphModule) -> None:
    """Raise UnsupportedOpError for the first node of ``gm`` that the TFLite int8 quantizer cannot handle."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or is_bookkeeping(node):
            continue
        name = str(node.target)
        role = OP_ROLES.get(name)
        where = describe_where(node)
        if role is None:
            raise UnsupportedOpError(_op_name(name), where, f"stage 2 quantizes only: {SUPPORTED_SUMMARY}")
        problem = _argument_problem(node, name, role)
        if problem:
            raise UnsupportedOpError(_op_name(name), where, problem)


def is_bookkeeping(node: fx.Node) -> bool:
    """An in-place update of a buffer nobody reads in the graph (BatchNorm's num_batches_tracked += 1)."""
    first = node.args[0] if node.args else None
    return (node.op == "call_function" and not node.users and str(node.target).endswith("_.Tensor")
            and getattr(first, "op", None) == "get_attr")


def _op_name(target: str) -> str:
    return target.removeprefix("aten.").split(".")[0]


def _argument_problem(node: fx.Node, name: str, role: Role) -> str | None:
    """A hint when the op is known but used in a way the int8 spec cannot express, else None."""
    from torch import fx

    args = node.args
    if name.startswith("aten.hardtanh"):
        lo = args[1] if len(args) > 1 else node.kwargs.get("min_val", -1.0)
        hi = args[2] if len(args) > 2 else node.kwargs.get("max_val", 1.0)
        if (float(lo), float(hi)) != (0.0, 6.0):
            return f"only Hardtanh(0, 6) (ReLU6) is supported, got Hardtanh({lo}, {hi}); use ReLU6 or ReLU"
    if role is Role.ELEMENTWISE:
        if len(args) < 2 or not all(isinstance(a, fx.Node) for a in args[:2]):
            return "add/mul need two tensors; a Python scalar operand has no int8 tensor, register it as a buffer"
        if name.startswith("aten.add") and node.kwargs.get("alpha", 1) != 1:
            return "add with alpha != 1 is not supported"
    if name.startswith("aten.adaptive_avg_pool"):
        size = args[1]
        sizes = list(size) if isinstance(size, (list, tuple)) else [size]
        if any(int(s) != 1 for s in sizes):
            return f"adaptive average pooling only to size 1 (global pooling), got {tuple(sizes)}"
    if name == "aten.mean.dim":
        dims = args[1] if len(args) > 1 else None
        src = args[0]
        rank = len(src.meta["val"].shape) if isinstance(src, fx.Node) and "val" in src.meta else 0
        if rank < 3 or dims is None or {int(d) % rank for d in dims} != set(range(2, rank)):
            return "mean is supported only over all spatial dims (global average pooling)"
    if name == "aten.pad.default":
        mode = args[2] if len(args) > 2 else node.kwargs.get("mode", "constant")
        value = args[3] if len(args) > 3 else node.kwargs.get("value", None)
        if mode != "constant" or (value not in (None, 0, 0.0)):
            return f"only constant zero padding is supported, got mode={mode!r} value={value!r}"
    if name == "aten.constant_pad_nd.default":
        value = args[2] if len(args) > 2 else 0
        if value not in (0, 0.0):
            return f"only zero padding is supported, got value={value!r}"
    if role is Role.FOLDED:
        src = args[0]
        prod = src.target if isinstance(src, fx.Node) else None
        if str(prod) not in ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default"):
            return "batch norm is folded into the conv/linear before it; a batch norm elsewhere cannot be"
        if len(src.users) != 1:
            return "the conv/linear before this batch norm has other users, so the batch norm cannot be folded"
        if str(prod) == "aten.linear.default":
            val = src.args[0].meta.get("val") if isinstance(src.args[0], fx.Node) else None
            if val is None or len(val.shape) != 2:
                return "batch norm after a linear folds only for 2-D (N, features) inputs"
    if role is Role.COMPUTE and name.startswith("aten.conv"):
        if len(args) > 4 and isinstance(args[4], str):
            return "string padding ('same'/'valid') is not supported; give explicit padding or nn.ZeroPad2d"
    return None


def check_supported(model: torch.nn.Module, example_input: torch.Tensor) -> None:
    """Raise :class:`~tinyprec.errors.UnsupportedOpError` if ``model`` has an op stage 2 cannot quantize.

    Call it before training: the error names the op, the module path in ``model`` and the supported list.

    >>> import torch
    >>> check_supported(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()), torch.zeros(2, 4))
    """
    gm = export_for_quant(model, example_input, train=False)
    check_graph(gm)


def example_like(shape: tuple[int, ...], batch: int = 2) -> Any:
    """A zero input of ``(batch, *shape)`` for export."""
    import torch

    return torch.zeros((batch, *shape), dtype=torch.float32)
