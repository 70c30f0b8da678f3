"""Batch norm in QAT: train/eval switching of the exported ops, and the final fold before convert_pt2e.

prepare_qat_pt2e rewrites each annotated conv + batch_norm into torchao's simulated-folding subgraph::

    sf = gamma / sqrt(running_var + eps)
    y  = conv(x, fake_quant(W * sf), observe(zeros)) / sf + b
    y  = batch_norm(y, running_mean, running_var, gamma, beta, training, momentum, eps)

so QAT trains against the folded, fake-quantized weight while batch norm keeps its statistics. Before
conversion :func:`fold_bn_qat` replaces that subgraph by ``conv(x, fake_quant(W'), observe(b'))`` with
W' = W * sf and b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta: the same arithmetic
the trained scales saw, and a graph with no batch norm left. (torchao's own fold at convert time exports
64 pattern graphs per conv kind and takes minutes on a small CPU; this one is a direct graph edit.)
"""

from __future__ import annotations

import torch
from torch import fx

from tinyprec.errors import QuantSpecError
from tinyprec.quant.capture import is_bookkeeping

_BN = "aten.batch_norm.default"
_DROPOUT = "aten.dropout.default"


def set_train_mode(gm: fx.GraphModule, *, bn_train: bool, dropout_train: bool) -> None:
    """Switch the exported batch_norm ops (batch vs running statistics) and dropout ops, in place."""
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name, index, value = str(node.target), None, None
        if name == _BN:
            index, value = 5, bn_train
        elif name == _DROPOUT:
            index, value = 2, dropout_train
        if index is not None and len(node.args) > index and node.args[index] is not value:
            args = list(node.args)
            args[index] = value
            node.args = tuple(args)
            changed = True
    if changed:
        gm.recompile()


def _attr(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        raise QuantSpecError(f"batch-norm fold: expected a parameter, found '{getattr(node, 'name', node)}'")
    obj = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def _arg(node: fx.Node, i: int, target: str) -> fx.Node:
    arg = node.args[i]
    if not (isinstance(arg, fx.Node) and (str(arg.target) == target or arg.op == target)):
        raise QuantSpecError(f"batch-norm fold: '{node.name}' argument {i} is not {target}; "
                             "the QAT conv-bn pattern changed (torchao version?)")
    return arg


def fold_bn_qat(gm: fx.GraphModule) -> int:
    """Fold every simulated conv-bn of a trained prepare_qat_pt2e program into its conv, in place.

    Returns the number of batch norms folded. Raises QuantSpecError if a batch norm is left that is not
    in torchao's simulated-folding pattern.
    """
    folded = 0
    for index, bn in enumerate([n for n in gm.graph.nodes if n.op == "call_function" and str(n.target) == _BN]):
        add = _arg(bn, 0, "aten.add.Tensor")
        div = _arg(add, 0, "aten.div.Tensor")
        conv = div.args[0]
        if str(getattr(conv, "target", "")) not in ("aten.conv1d.default", "aten.conv2d.default"):
            raise QuantSpecError(f"batch-norm fold: '{bn.name}' does not follow a conv")
        w_fq = _arg(conv, 1, "call_module")
        b_obs = _arg(conv, 2, "call_module")
        mul = _arg(w_fq, 0, "aten.mul.Tensor")
        weight = _attr(gm, mul.args[0])
        conv_bias = _attr(gm, _arg(add, 1, "aten.reshape.default").args[0])
        gamma, beta, mean, var = (_attr(gm, bn.args[i]) for i in range(1, 5))
        eps = float(bn.args[7])
        sf_node = _arg(div, 1, "aten.reshape.default").args[0]  # gamma / sqrt(var + eps') as trained
        eps_w = float(sf_node.args[1].args[0].args[1])
        with torch.no_grad():
            sf_w = gamma / torch.sqrt(var + eps_w)
            w_folded = weight * sf_w.reshape(-1, *([1] * (weight.dim() - 1)))
            b_folded = (conv_bias - mean) * (gamma / torch.sqrt(var + eps)) + beta
        w_name, b_name = f"_bn_folded_{index}_weight", f"_bn_folded_{index}_bias"
        gm.register_buffer(w_name, w_folded.detach().clone())
        gm.register_buffer(b_name, b_folded.detach().clone())
        with gm.graph.inserting_before(w_fq):
            w_node = gm.graph.get_attr(w_name)
        with gm.graph.inserting_before(b_obs):
            b_node = gm.graph.get_attr(b_name)
        for new, old in ((w_node, w_fq), (b_node, b_obs)):
            new.meta.update({k: v for k, v in old.args[0].meta.items() if k in ("val", "tensor_meta")})
            old.args = (new, *old.args[1:])
        bn.replace_all_uses_with(conv)
        gm.graph.erase_node(bn)
        folded += 1
    for node in list(gm.graph.nodes):
        if is_bookkeeping(node):
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded
