"""Capture a model with torch.export (dynamic batch) and refuse what stage 2 cannot quantize, before training.

Every exported node carries ``meta['nn_module_stack']``; :func:`module_path` turns it into the dotted
path of the user's module (``features.3``), which errors and the IR sources name.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any


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
        transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear, *transposed)) and module.bias is None:
            out = module.weight.shape[0]
            if isinstance(module, transposed):  # weight [in, out / groups, k...]
                out = module.weight.shape[1] * module.groups
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

    from tinyprec.quant.recurrent import fold_recurrent_outputs, unroll_recurrent

    model, refused_recurrent = unroll_recurrent(model)  # nn.GRU / nn.LSTM -> one op per time step
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
    from tinyprec.quant.conv_padding import explicit_conv_padding
    from tinyprec.quant.split_slices import split_to_slices

    explicit_conv_padding(gm)
    split_to_slices(gm)  # chunk/split -> one slice per piece (STRIDED_SLICE)
    from tinyprec.quant.select_rewrite import select_rewrite

    select_rewrite(gm)  # unbind -> one select per piece; x[:, [0, 2]] -> slices (+ cat)
    from tinyprec.quant.act_rewrite import rewrite_for_tflm

    rewrite_for_tflm(gm)  # silu, hardsigmoid, gelu, scalar operands, standalone BN, global max pool
    fold_recurrent_outputs(gm)  # out[:, -1], h_n[-1] -> that step's h; other stacks -> CONCATENATION
    prefix = getattr(model, "_tinyprec_unwrap", None)
    if prefix:
        _rebase_paths(gm, prefix)
        refused_recurrent = {k.removeprefix(prefix + "."): v for k, v in refused_recurrent.items()}
    gm.meta["tinyprec_refused_recurrent"] = refused_recurrent  # read by the op check (quant/opcheck.py)
    return gm


def check_graph(gm: fx.GraphModule) -> None:
    """Raise one UnsupportedOpsError naming every node of ``gm`` the TFLite int8 quantizer cannot handle."""
    from tinyprec.quant.opcheck import check_ops

    check_ops(gm)


def is_bookkeeping(node: fx.Node) -> bool:
    """An in-place update of a buffer nobody reads in the graph (BatchNorm's num_batches_tracked += 1)."""
    first = node.args[0] if node.args else None
    return (node.op == "call_function" and not node.users and str(node.target).endswith("_.Tensor")
            and getattr(first, "op", None) == "get_attr")


def check_supported(model: torch.nn.Module, example_input: torch.Tensor) -> None:
    """Raise :class:`~tinyprec.errors.UnsupportedOpError` if ``model`` has an op stage 2 cannot quantize.

    Call it before training: the error names every refused op, its module path, the user's source line and
    what to use instead.

    >>> import torch
    >>> check_supported(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()), torch.zeros(2, 4))
    """
    gm = export_for_quant(model, example_input, train=False)
    check_graph(gm)


def example_like(shape: tuple[int, ...], batch: int = 2) -> Any:
    """A zero input of ``(batch, *shape)`` for export."""
    import torch

    return torch.zeros((batch, *shape), dtype=torch.float32)
