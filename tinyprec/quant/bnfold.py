"""Batch norm in QAT: train/eval switching of the exported ops, and the final fold before convert_pt2e.

prepare_qat_pt2e rewrites each annotated conv + batch_norm into torchao's simulated-folding subgraph::

    sf = gamma / sqrt(running_var + eps)
    y  = conv(x, fake_quant(W * sf), observe(zeros)) / sf + b
    y  = batch_norm(y, running_mean, running_var, gamma, beta, training, momentum, eps)

so QAT trains against the folded, fake-quantized weight while batch norm keeps its statistics. Before
conversion :func:`fold_bn_qat` replaces that subgraph by ``conv(x, fake_quant(W'), observe(b'))`` with
W' = W * sf and b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta: the same arithmetic
the trained scales saw, and a graph with no batch norm left.

:func:`simulate_conv_bn` builds that subgraph itself (torchao's ``_fuse_conv_bn_qat`` builds the same one by
exporting and matching 12 pattern graphs, ~10 s per model on a small CPU; torchao's fold at convert
time exports 128 and takes minutes); both are direct graph edits of the annotated graph.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import fx

from tinyprec.errors import QuantSpecError
from tinyprec.quant.capture import is_bookkeeping

_BN = "aten.batch_norm.default"
_CONVS = ("aten.conv1d.default", "aten.conv2d.default")
_TRANSPOSED = ("aten.conv_transpose1d.default", "aten.conv_transpose2d.input")  # weight [in, out, k...]
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


def simulate_conv_bn(gm: fx.GraphModule) -> int:
    """Rewrite each annotated conv -> batch_norm (training) into the simulated-folding subgraph, in place.

    The conv node stays (its annotation is remapped to the scaled weight and the zero bias), so every
    SharedQuantizationSpec that names it keeps working. Returns the number of conv-bn pairs rewritten.
    """
    from torchao.quantization.pt2e.quantizer import DerivedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    aten = torch.ops.aten
    count = 0
    for bn in [n for n in gm.graph.nodes if n.op == "call_function" and str(n.target) == _BN]:
        conv = bn.args[0]
        if str(getattr(conv, "target", "")) not in (*_CONVS, *_TRANSPOSED):
            continue
        x, weight, bias = conv.args[0], conv.args[1], conv.args[2] if len(conv.args) > 2 else None
        if bias is None:
            raise QuantSpecError(f"batch-norm simulation: conv '{conv.name}' has no bias (with_biases not applied)")
        gamma, var = bn.args[1], bn.args[4]
        eps = float(bn.args[7])
        rank = len(_attr(gm, weight).shape)
        w_shape, b_shape = [-1] + [1] * (rank - 1), [1, -1] + [1] * (rank - 2)
        if str(conv.target) in _TRANSPOSED:
            w_shape = [1, -1] + [1] * (rank - 2)  # output channels on axis 1
        graph = gm.graph
        with graph.inserting_before(conv):
            sf = graph.call_function(aten.div.Tensor, (gamma, graph.call_function(
                aten.sqrt.default, (graph.call_function(aten.add.Tensor, (var, eps)),))))
            scaled_w = graph.call_function(aten.mul.Tensor, (weight, graph.call_function(
                aten.reshape.default, (sf, w_shape))))
            zero_b = graph.call_function(aten.zeros_like.default, (bias,), {"dtype": torch.float32})
        with graph.inserting_before(bn):
            div = graph.call_function(aten.div.Tensor, (conv, graph.call_function(aten.reshape.default,
                                                                                   (sf, b_shape))))
            add = graph.call_function(aten.add.Tensor, (div, graph.call_function(aten.reshape.default,
                                                                                   (bias, b_shape))))
        bn.replace_input_with(conv, add)
        conv.args = (x, scaled_w, zero_b, *conv.args[3:])
        for new in (sf, scaled_w, zero_b, div, add):
            new.meta["nn_module_stack"] = dict(conv.meta.get("nn_module_stack") or {})
        ann = conv.meta[Q_ANNOTATION_KEY]
        remapped = {}
        for node, spec in ann.input_qspec_map.items():
            if node is weight:
                remapped[scaled_w] = spec
            elif node is bias:
                assert isinstance(spec, DerivedQuantizationSpec)
                remapped[zero_b] = dataclasses.replace(spec, derived_from=[(x, conv), (scaled_w, conv)])
            else:
                remapped[node] = spec
        ann.input_qspec_map = remapped
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


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
        if str(getattr(conv, "target", "")) not in (*_CONVS, *_TRANSPOSED):
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
            axis = 1 if str(conv.target) in _TRANSPOSED else 0
            shape = [1] * weight.dim()
            shape[axis] = -1
            w_folded = weight * sf_w.reshape(shape)
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


def prefold_linear_bn(gm: fx.GraphModule) -> int:
    """Fold each batch norm that follows a linear layer into it with its running statistics, in place.

    torchao simulates folding only for conv + batch norm; a linear + BatchNorm1d is folded before QAT
    (its statistics frozen from stage 1), which keeps the fake-quantized weight the one exported.
    """
    folded = 0
    for index, bn in enumerate([n for n in gm.graph.nodes if n.op == "call_function" and str(n.target) == _BN]):
        linear = bn.args[0]
        if str(getattr(linear, "target", "")) != "aten.linear.default":
            continue
        weight = _attr(gm, linear.args[1])
        bias_node = linear.args[2] if len(linear.args) > 2 else None
        bias = _attr(gm, bias_node) if bias_node is not None else torch.zeros(weight.shape[0])
        gamma, beta, mean, var = (_attr(gm, bn.args[i]) for i in range(1, 5))
        with torch.no_grad():
            sf = gamma / torch.sqrt(var + float(bn.args[7]))
            w_folded = weight * sf.reshape(-1, 1)
            b_folded = (bias - mean) * sf + beta
        w_name, b_name = f"_linear_bn_folded_{index}_weight", f"_linear_bn_folded_{index}_bias"
        gm.register_parameter(w_name, torch.nn.Parameter(w_folded.detach().clone()))
        gm.register_parameter(b_name, torch.nn.Parameter(b_folded.detach().clone()))
        with gm.graph.inserting_before(linear):
            w_node, b_node = gm.graph.get_attr(w_name), gm.graph.get_attr(b_name)
        w_node.meta.update(linear.args[1].meta)
        if bias_node is not None:
            b_node.meta.update(bias_node.meta)
        linear.args = (linear.args[0], w_node, b_node, *linear.args[3:])
        bn.replace_all_uses_with(linear)
        gm.graph.erase_node(bn)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded
