"""nn.GRU / nn.LSTM / nn.RNN unrolled over time into ops TFLM has int8 kernels for, right before torch.export.

Training keeps the user's own ``nn.GRU`` / ``nn.LSTM`` (cuDNN-fast, unchanged). Stage 2 and the op check
export a copy of the model in which each such layer is replaced by :class:`UnrolledGRU` /
:class:`UnrolledLSTM`: the same parameters under the same names (so QAT trains the user's weights and the
float twin reads them back by name), computed one time step at a time from ops the table already lowers
exactly:

- ``x_t = x[:, t:t + 1].squeeze(1)``: STRIDED_SLICE (+ RESHAPE);
- the gate products ``x_t W_ih^T + b_ih`` and ``h W_hh^T + b_hh``: one Linear each (CONV_2D / FULLY_CONNECTED),
  whose weight is ONE constant read by every step (one observer in the PT2E program, one buffer in the
  .tflite: quantizer and lowering share it);
- gates: STRIDED_SLICE of the products, ADD, LOGISTIC, TANH, MUL, SUB.

GRU (PyTorch's gate order r, z, n)::

    rz = sigmoid(gi[:, :2H] + gh[:, :2H]);  r, z = rz[:, :H], rz[:, H:]
    n  = tanh(gi[:, 2H:] + r * gh[:, 2H:])
    h  = n + z * (h - n)                       # = (1 - z) * n + z * h

nn.RNN: ``h = tanh(gi + gh)`` (or relu, fused into the ADD). LSTM (gate order i, f, g, o)::

    a = gi + gh;  i, f, o = sigmoid(a[...]);  g = tanh(a[:, 2H:3H])
    c = f * c + i * g;  h = o * tanh(c)

The initial state is zero (an h0 passed by the user is refused), so the first step has no recurrent
product: its ``gh`` is the bias ``b_hh`` alone, a constant (GRU: an ADD and a MUL with it; LSTM: folded
into the first step's Linear bias as ``b_ih + b_hh``). Each step's activations get their own observer
(the LSTM cell state ``c`` is int8 with a scale per step; at a16w8 every gate, ``c`` and ``h`` are int16,
a GRU's first-step ``b_hh`` an int16 constant operand).

The layer's outputs are ``(torch.stack(h_t, 1), torch.stack(h_last_per_layer, 0))`` (LSTM: ``(out, (h_n,
c_n))``); :func:`fold_recurrent_outputs` rewrites, after export, ``out[:, k]`` / ``h_n[k]`` /
``h_n.squeeze(0)`` into the step's own ``h`` and any other use of a stack into a CONCATENATION of RESHAPEs.

Layers in a form this does not unroll (bidirectional, ``proj_size``, ``batch_first=False``) stay as they
are and the op check refuses them, naming the reason (:func:`unroll_recurrent` returns the reasons).
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import fx


def recurrent_problem(module: Any) -> str | None:
    """Why ``module`` (an nn.GRU / nn.LSTM / nn.RNN) cannot be unrolled, or None when it can."""
    if getattr(module, "bidirectional", False):
        return ("bidirectional=True is not unrolled; use bidirectional=False (or run two layers, one on "
                "x.flip(1), yourself)")
    if not getattr(module, "batch_first", False):
        return "only batch_first=True (input (N, T, F)) is unrolled; construct the layer with batch_first=True"
    if int(getattr(module, "proj_size", 0) or 0):
        return "LSTM proj_size > 0 is not unrolled; use proj_size=0 and a Linear after the layer"
    return None


def unroll_recurrent(model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, str]]:
    """``model`` with every supported nn.GRU / nn.LSTM / nn.RNN replaced by its unrolled twin (a deep copy; ``model``
    itself is returned unchanged when it has none), and ``{module path: reason}`` for those left alone."""
    from torch import nn

    kinds = (nn.GRU, nn.LSTM, nn.RNN)
    found = [(name, m) for name, m in model.named_modules() if type(m) in kinds]
    if not found:
        return model, {}
    refused = {name: problem for name, m in found if (problem := recurrent_problem(m)) is not None}
    if len(refused) == len(found):
        return model, refused
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if type(m) not in kinds or name in refused:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        twin = _classes()[type(m).__name__](m, name)
        if child.isdigit() and isinstance(parent, (nn.Sequential, nn.ModuleList)):
            parent[int(child)] = twin
        else:
            setattr(parent, child, twin)
    return model, refused


@functools.cache
def _classes() -> dict[str, type]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tinyprec.errors import UnsupportedOpError

    class _Unrolled(nn.Module):
        """The parameters of ``layer`` under their own names, computed one step at a time."""

        kind = ""
        gates = 0

        def __init__(self, layer: nn.Module, path: str) -> None:
            super().__init__()
            for name, p in layer.named_parameters(recurse=False):
                self.register_parameter(name, p)
            self.hidden_size, self.num_layers = int(layer.hidden_size), int(layer.num_layers)
            self.dropout, self.path = float(layer.dropout), path

        def _params(self, k: int) -> tuple[Any, Any, Any, Any]:
            get = functools.partial(getattr, self)
            return (get(f"weight_ih_l{k}"), get(f"weight_hh_l{k}"), getattr(self, f"bias_ih_l{k}", None),
                    getattr(self, f"bias_hh_l{k}", None))

        def _check(self, x: Any, state: Any) -> None:
            where = f"module '{self.path}' ({self.kind})"
            if state is not None:
                raise UnsupportedOpError(f"{self.kind}(x, initial state)", where,
                                         "the unrolled layer starts from a zero state; call it with x only")
            if x.dim() != 3:
                raise UnsupportedOpError(f"{self.kind} on a rank-{x.dim()} input", where,
                                         "pass a batched (N, T, F) sequence (batch_first=True)")

        def _layers(self, x: Any) -> tuple[list[Any], list[Any], list[Any]]:
            """(the last layer's h per step, each layer's last h, each layer's last c or None)."""
            seq = [x[:, t:t + 1, :].squeeze(1) for t in range(int(x.shape[1]))]
            last_h, last_c = [], []
            for k in range(self.num_layers):
                if k and self.dropout and self.training:
                    seq = [F.dropout(s, self.dropout, True) for s in seq]
                h = c = None
                outs = []
                for xt in seq:
                    h, c = self._step(xt, h, c, *self._params(k))
                    outs.append(h)
                seq = outs
                last_h.append(h)
                last_c.append(c)
            return seq, last_h, last_c

        def _step(self, xt: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, Any]:
            raise NotImplementedError

    class UnrolledGRU(_Unrolled):
        kind = "GRU"

        def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            self._check(x, hx)
            seq, last_h, _ = self._layers(x)
            return torch.stack(seq, 1), torch.stack(last_h, 0)

        def _step(self, xt: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, None]:
            n_h = self.hidden_size
            gi = F.linear(xt, w_ih, b_ih)
            if h is None:  # h0 = 0: the recurrent product is its bias alone (a constant), or nothing
                gh_rz = None if b_hh is None else b_hh[:2 * n_h].unsqueeze(0)
                gh_n = None if b_hh is None else b_hh[2 * n_h:].unsqueeze(0)
            else:
                gh = F.linear(h, w_hh, b_hh)
                gh_rz, gh_n = gh[:, :2 * n_h], gh[:, 2 * n_h:]
            rz_pre = gi[:, :2 * n_h] if gh_rz is None else gi[:, :2 * n_h] + gh_rz
            rz = torch.sigmoid(rz_pre)
            z = rz[:, n_h:]
            n_pre = gi[:, 2 * n_h:] if gh_n is None else gi[:, 2 * n_h:] + rz[:, :n_h] * gh_n
            n = torch.tanh(n_pre)
            return (n - z * n if h is None else n + z * (h - n)), None

    class UnrolledLSTM(_Unrolled):
        kind = "LSTM"

        def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            self._check(x, hx)
            seq, last_h, last_c = self._layers(x)
            return torch.stack(seq, 1), (torch.stack(last_h, 0), torch.stack(last_c, 0))

        def _step(self, xt: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, Any]:
            n_h = self.hidden_size
            if h is None:  # h0 = c0 = 0: one Linear whose bias is b_ih + b_hh (a constant expression)
                bias = b_hh if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)
                a = F.linear(xt, w_ih, bias)
            else:
                a = F.linear(xt, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
            i = torch.sigmoid(a[:, :n_h])
            g = torch.tanh(a[:, 2 * n_h:3 * n_h])
            o = torch.sigmoid(a[:, 3 * n_h:])
            c = i * g if c is None else torch.sigmoid(a[:, n_h:2 * n_h]) * c + i * g
            return o * torch.tanh(c), c

    class UnrolledRNN(UnrolledGRU):
        """Elman RNN: ``h = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu, fused into the ADD)."""

        kind = "RNN"

        def __init__(self, layer: nn.Module, path: str) -> None:
            super().__init__(layer, path)
            self.nonlinearity = str(layer.nonlinearity)

        def _step(self, xt: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> tuple[Any, None]:
            if h is None:  # h0 = 0: one Linear whose bias is b_ih + b_hh
                bias = b_hh if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)
                a = F.linear(xt, w_ih, bias)
            else:
                a = F.linear(xt, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
            return (torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)), None

    return {"GRU": UnrolledGRU, "LSTM": UnrolledLSTM, "RNN": UnrolledRNN}


def _unrolled_kinds(node: Any) -> set[str]:
    stack = node.meta.get("nn_module_stack") or {}
    names = {str(v[1]).rsplit(".", 1)[-1] for v in stack.values() if isinstance(v, tuple)}
    return names & {"UnrolledGRU", "UnrolledLSTM", "UnrolledRNN"}


def from_unrolled(node: Any) -> bool:
    """True when ``node`` was traced inside an unrolled GRU / LSTM / RNN."""
    return bool(_unrolled_kinds(node))


def fold_recurrent_outputs(gm: fx.GraphModule) -> int:
    """After export: ``select(stack(hs, d), d, k)`` -> ``hs[k]`` and ``squeeze(stack([h], d), d)`` -> ``h`` (torch
    may spell the stack ``cat([h.unsqueeze(d) ...], d)``; full slices in between are skipped); any other use of
    an unrolled layer's ``aten.stack`` becomes ``cat([h.unsqueeze(d) ...], d)``. Returns the rewrites."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        found = _stacked(node, aten)
        if found is None:
            continue
        items, dim, rank = found
        for user, through in _readers(node, aten):
            picked = _picked(user, dim, rank, len(items), aten)
            if picked is None:
                continue
            user.replace_all_uses_with(items[picked])
            gm.graph.erase_node(user)
            for sliced in reversed(through):
                if not sliced.users:
                    gm.graph.erase_node(sliced)
            count += 1
        if not node.users:
            parts = list(node.args[0]) if node.target is aten.cat.default else []
            gm.graph.erase_node(node)
            for part in parts:
                if not part.users:
                    gm.graph.erase_node(part)
            continue
        if node.target is aten.stack.default:
            _stack_as_cat(gm, node, items, dim, aten)
            count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def _stacked(node: Any, aten: Any) -> tuple[list[Any], int, int] | None:
    """(items, dim, rank of the result) of an unrolled layer's stack (or cat of unsqueezes), else None."""
    if node.op != "call_function" or not from_unrolled(node):
        return None
    if node.target is aten.stack.default:
        items = list(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    elif node.target is aten.cat.default:
        parts = list(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not parts or any(getattr(p, "target", None) is not aten.unsqueeze.default for p in parts):
            return None
        rank = len(parts[0].meta["val"].shape)
        if any(int(p.args[1]) % rank != int(dim) % rank or len(p.users) != 1 for p in parts):
            return None
        items = [p.args[0] for p in parts]
    else:
        return None
    rank = len(items[0].meta["val"].shape) + 1
    return items, int(dim) % rank, rank


def _readers(node: Any, aten: Any) -> list[tuple[Any, list[Any]]]:
    """The users of ``node``, looking through full slices (``out[:, -1]`` slices the batch dim whole first)."""
    found: list[tuple[Any, list[Any]]] = []
    todo = [(u, []) for u in node.users]
    while todo:
        user, through = todo.pop()
        if user.target is aten.slice.Tensor and _full_slice(user):
            todo += [(u, [*through, user]) for u in user.users]
        else:
            found.append((user, through))
    return found


def _full_slice(node: Any) -> bool:
    args = list(node.args) + [None] * (5 - len(node.args))
    start, end, step = args[2], args[3], args[4]
    return start in (None, 0) and (end is None or int(end) >= 2**62) and step in (None, 1)


def _stack_as_cat(gm: fx.GraphModule, node: Any, items: list[Any], dim: int, aten: Any) -> None:
    with gm.graph.inserting_before(node):
        parts = []
        for item in items:
            part = gm.graph.call_function(aten.unsqueeze.default, (item, dim))
            part.meta.update({k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace")})
            part.meta["val"] = item.meta["val"].unsqueeze(dim)
            parts.append(part)
        cat = gm.graph.call_function(aten.cat.default, (parts, dim))
    cat.meta.update(node.meta)
    node.replace_all_uses_with(cat)
    gm.graph.erase_node(node)


def _picked(user: Any, dim: int, rank: int, n: int, aten: Any) -> int | None:
    """The stacked item a user reads whole (``select`` on the stack dim, or ``squeeze`` of a one-item stack)."""
    if user.target is aten.select.int and int(user.args[1]) % rank == dim:
        return int(user.args[2]) % n
    if n == 1 and user.target is aten.squeeze.dim and int(user.args[1]) % rank == dim:
        return 0
    if n == 1 and user.target is aten.squeeze.dims and [int(d) % rank for d in user.args[1]] == [dim]:
        return 0
    return None


def is_constant(node: Any, memo: dict[Any, bool] | None = None) -> bool:
    """True when ``node``'s value depends on no graph input: parameters, buffers and arithmetic on them
    (a constant expression torchao folds at convert, quantized once where an op reads it)."""
    if node.op == "get_attr":
        return True
    if node.op != "call_function":
        return False
    if memo is not None and node in memo:
        return memo[node]
    inputs = node.all_input_nodes
    found = bool(inputs) and all(is_constant(a, memo) for a in inputs)
    if memo is not None:
        memo[node] = found
    return found


def split_shared_biases(gm: fx.GraphModule) -> int:
    """Give each conv/linear its own get_attr node of a bias several of them read (every time step's
    recurrent Linear reads ``b_hh``). PT2E reuses an observer already on the same input node, so a shared
    bias node would get the first reader's derived int32 scale, while each step's input scale differs."""
    import torch

    aten = torch.ops.aten
    readers = (aten.linear.default, aten.conv1d.default, aten.conv2d.default)
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "get_attr":
            continue
        users = [u for u in node.users if u.target in readers and len(u.args) > 2 and u.args[2] is node]
        for user in users[1:]:
            with gm.graph.inserting_before(user):
                own = gm.graph.get_attr(str(node.target))
            own.meta.update(node.meta)
            user.replace_input_with(node, own)
            count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
