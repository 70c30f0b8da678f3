"""The op check before training: every op of the exported model against :data:`tinyprec.optable.table.OPS`.

:func:`find_refusals` walks the whole graph and returns every refused op (not only the first), each with
its module path, the user's own source line (from ``node.meta['stack_trace']``, skipping torch's frames)
and what to use instead. Layers torch.export decomposes into several ops (GRU, LSTM, ...) are reported
once, as the layer. :func:`check_ops` raises them together as one :class:`UnsupportedOpsError`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tinyprec.errors import TinyprecError, UnsupportedOpError, UnsupportedOpsError
from tinyprec.optable.table import INSTEAD, REFUSED_MODULES, row_of, supported_summary

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_LIBRARY = ("/site-packages/torch/", "/site-packages/torchao/", "/torch/nn/", "/torch/fx/", "/torch/_", "<eval_with_key")


def user_line(node: Any) -> str | None:
    """'model.py:41: y = self.gru(x)' — the innermost frame of the recorded stack that is not torch's own."""
    lines = str(node.meta.get("stack_trace") or "").splitlines()
    found: str | None = None
    for i, line in enumerate(lines):
        m = _FRAME.search(line)
        if not m or any(lib in m.group(1) for lib in _LIBRARY):
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME.search(lines[i + 1]) else ""
        path = m.group(1).rsplit("/", 1)[-1]
        found = f"{path}:{m.group(2)}" + (f": {code}" if code else "")
    return found


def _stack(node: Any) -> list[tuple[str, str]]:
    """(module path, class name) from the outermost to the innermost module of ``node``."""
    from tinyprec.quant.capture import _clean_path

    out = []
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        path, kind = value if isinstance(value, tuple) else (key, "")
        if str(path).startswith("_empty_nn_module_stack"):
            continue
        out.append((_clean_path(str(path)), str(kind).rsplit(".", 1)[-1]))
    return out


def _where(node: Any, path: str, kind: str) -> str:
    where = f"module '{path or '<root module>'}'" + (f" ({kind})" if kind else "")
    line = user_line(node)
    return where + (f", {line}" if line else "")


def find_refusals(gm: fx.GraphModule) -> list[UnsupportedOpError]:
    """Every op of ``gm`` that stage 2 cannot quantize or lower, in graph order (one per refused layer)."""
    from tinyprec.quant.capture import is_bookkeeping
    from tinyprec.quant.recurrent import is_constant

    refusals: list[UnsupportedOpError] = []
    layers_seen: set[str] = set()
    reasons = gm.meta.get("tinyprec_refused_recurrent") or {}  # GRU/LSTM forms quant/recurrent.py leaves alone
    constant: dict[Any, bool] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or is_bookkeeping(node):
            continue
        stack = _stack(node)
        layer = next(((p, k) for p, k in stack if k in REFUSED_MODULES), None)
        if layer is not None:
            if layer[0] not in layers_seen:
                layers_seen.add(layer[0])
                hint = reasons.get(layer[0], REFUSED_MODULES[layer[1]])
                refusals.append(UnsupportedOpError(layer[1], _where(node, *layer), hint))
            continue
        if is_constant(node, constant):
            continue  # arithmetic on parameters only: folded at convert, quantized where an op reads it
        name = str(node.target)
        row = row_of(name)
        path, kind = stack[-1] if stack else ("", "")
        op = name.removeprefix("aten.").split(".")[0]
        if row is None:
            hint = INSTEAD.get(op) or f"no int8 lowering; stage 2 supports: {supported_summary()}"
            refusals.append(UnsupportedOpError(op, _where(node, path, kind), hint))
        elif row.check is not None:
            problem = row.check(node)
            if problem:
                refusals.append(UnsupportedOpError(op, _where(node, path, kind), problem))
    return refusals


def check_ops(gm: fx.GraphModule, what: str = "the model") -> None:
    """Raise one :class:`UnsupportedOpsError` listing every refused op of ``gm`` (nothing when all pass)."""
    refusals = find_refusals(gm)
    if refusals:
        raise UnsupportedOpsError(refusals, what)


def check_model_ops(model: torch.nn.Module, example_input: torch.Tensor, *, output_softmax: bool = False) -> None:
    """torch.export ``model`` on ``example_input`` and refuse, all at once, every op stage 2 cannot convert.

    Stage 1 (``tinyprec.train``, ``tinyprec train``, the pipeline) calls this before training, so a model
    that cannot convert fails in seconds, not after its FP32 run. ``output_softmax`` checks the model as
    stage 2 will see it (a softmax appended to a classifier).
    """
    import copy

    from tinyprec.quant.capture import export_for_quant, with_output_softmax

    m = copy.deepcopy(model).float().cpu()
    if output_softmax:
        m = with_output_softmax(m)
    try:
        gm = export_for_quant(m, example_input.float().cpu(), train=False)
    except TinyprecError:
        raise  # a refusal raised while tracing (an unrolled GRU/LSTM given an initial state)
    except Exception as err:  # noqa: BLE001 - torch.export's many error types: one line for the user
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UnsupportedOpError("torch.export", f"the model on an input of shape {tuple(example_input.shape)}",
                                 f"torch.export cannot capture it ({type(err).__name__}: {first.strip()[:300]}); "
                                 "stage 2 needs a graph without data-dependent Python control flow") from None
    check_ops(gm)


def check_before_training(model: torch.nn.Module, dataset: Any, *, output_softmax: bool = False) -> None:
    """Stage 1's first step: the model runs on two samples of ``dataset`` (DataError if the shapes do not
    fit), then :func:`check_model_ops` on a batch shaped like them."""
    from tinyprec.data import check_model_fits
    from tinyprec.quant.capture import example_like

    check_model_fits(dataset, model)
    classifier = output_softmax and dataset.task == "classification"
    check_model_ops(model, example_like(tuple(dataset.input_shape)), output_softmax=classifier)
