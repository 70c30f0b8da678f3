"""THE aten-op table: one row per exported op, driving the quantizer's check, its annotation and the lowering.

Each row says how stage 2 quantizes the op (:class:`~tinyprec.quant.ops.Role`), which lowering handler
(by name, in :data:`tinyprec.lowering.table.LOWERINGS`) turns it into IR ops, what a user writes in
PyTorch, which TFLM op(s) it becomes and any caveat, and an optional argument check that refuses uses the
lowering cannot express. The quantizer's role table (:data:`tinyprec.quant.ops.OP_ROLES`), the lowering's
handler table (:data:`tinyprec.lowering.table.HANDLERS`) and the README's op table are all derived
from :data:`OPS`, so they cannot disagree. torch-free: a check reads only ``node.args``, ``node.kwargs``
and ``node.meta['val'].shape``.

Adding an op: a row here, the lowering handler (if no existing one fits), then the IR layers (see
docs/DESIGN.md, "Adding an op").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tinyprec.optable import select as _select_checks, shape as _shape_checks
from tinyprec.optable.checks import (
    check_adaptive_max as _check_adaptive_max,
    check_amax as _check_amax,
    check_elu as _check_elu,
    check_mean_any as _check_mean_any,
    check_scalar as _check_scalar,
    is_node as _is_node,
    node_arg as _arg,
    node_rank as _rank,
)
from tinyprec.optable.norm import OWN_QPARAMS, check_layer_norm as _check_layer_norm
from tinyprec.optable.roles import Fixed, Role

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class OpRow:
    """One exported aten op: quantizer role, lowering handler name, documentation, argument check."""

    role: Role
    lowering: str | None  # key of tinyprec.lowering.table.LOWERINGS; None: never reaches the lowering (folded/meta)
    pytorch: str  # what a user writes
    tflm: str  # the TFLM op(s) it becomes ("" when it disappears)
    caveat: str = ""
    check: Check | None = None
    fixed: Fixed | None = None  # output qparams fixed by the spec (Role.FIXED)
    role_of: Callable[[Any], Role] | None = None  # a role that depends on the arguments (clamp bounds)


# --- argument checks (each returns the broken rule, or None) ----------------------------------------------
#: Clamp bounds TFLite fuses into the op before it (CONV_2D, ADD, ...): (lo, hi) -> activation name.
FUSABLE_CLAMPS: MappingProxyType[tuple[float, float], str] = MappingProxyType({
    (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1",
})


def clamp_bounds(node: Any) -> tuple[float, float]:
    """(lo, hi) of a hardtanh or clamp node; a missing clamp bound is -inf / +inf."""
    if str(node.target).startswith("aten.hardtanh"):
        return float(_arg(node, 1, "min_val", -1.0)), float(_arg(node, 2, "max_val", 1.0))
    lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    return (float("-inf") if lo is None else float(lo)), (float("inf") if hi is None else float(hi))


def fused_activation(node: Any) -> str | None:
    """The TFLite fused activation an activation node becomes ("RELU", "RELU6", "RELU_N1_TO_1"), or None
    when its bounds have none (it is then lowered standalone as MAXIMUM/MINIMUM with shared qparams)."""
    name = str(node.target)
    if name.startswith("aten.relu6"):
        return "RELU6"
    if name.startswith("aten.relu"):
        return "RELU"
    if name.startswith(("aten.hardtanh", "aten.clamp")):
        bounds = clamp_bounds(node)
        return "RELU" if bounds == (0.0, float("inf")) else FUSABLE_CLAMPS.get(bounds)
    return None


def _clamp_role(node: Any) -> Role:
    return Role.ACTIVATION if fused_activation(node) is not None else Role.SHARED


def _check_clamp(node: Any) -> str | None:
    lo, hi = clamp_bounds(node)
    if not lo <= hi:
        return f"clamp bounds ({lo:g}, {hi:g}) are empty"
    if lo == float("-inf") and hi == float("inf"):
        return "a clamp without bounds: remove it"
    return None


def _mean_role(node: Any) -> Role:
    """A mean keeps its input's qparams, except LayerNorm's variance (tagged by quant/norm_rewrite.py), which
    gets its own range (a rescaling MEAN) so that its 256 steps span the variances, not the squares."""
    return Role.UNARY if node.meta.get(OWN_QPARAMS) else Role.SHARED


def _check_elementwise(node: Any) -> str | None:
    if len(node.args) < 2 or not all(_is_node(a) for a in node.args[:2]):
        return "needs two tensors; a Python scalar operand has no int8 tensor: register it as a buffer"
    if str(node.target).startswith(("aten.add", "aten.sub")) and node.kwargs.get("alpha", 1) != 1:
        return "add/sub with alpha != 1 is not supported; scale the operand with a mul"
    ranks = {_rank(a) for a in node.args[:2]}
    if len(ranks) > 1 and None not in ranks:
        return "both operands must have the same rank; write the broadcast with view/unsqueeze (s[:, :, None, None])"
    return None


def _check_adaptive(node: Any) -> str | None:
    size = node.args[1]
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    if any(int(s) != 1 for s in sizes):
        return f"adaptive average pooling only to size 1 (global pooling), got {tuple(sizes)}; use AvgPool"
    return None


def _check_pad(node: Any) -> str | None:
    if str(node.target) == "aten.pad.default":
        mode, value = _arg(node, 2, "mode", "constant"), _arg(node, 3, "value", None)
    else:
        mode, value = "constant", _arg(node, 2, "value", 0)
    if mode != "constant" or value not in (None, 0, 0.0):
        return f"only constant zero padding, got mode={mode!r} value={value!r}; use nn.ZeroPad2d or F.pad(x, p)"
    if any(int(p) < 0 for p in node.args[1]):
        return "negative padding (cropping) is not supported; slice instead"
    return None


_CONVS = ("aten.conv1d.default", "aten.conv2d.default", "aten.conv1d.padding", "aten.conv2d.padding")


def _check_conv(node: Any) -> str | None:
    groups = int(_arg(node, 6, "groups", 1))
    w = node.args[1]
    val = getattr(w, "meta", {}).get("val")
    if groups != 1 and val is not None and int(val.shape[1]) != 1:
        return f"grouped conv (groups={groups}) has no TFLM op; use groups=1 or groups=in_channels (depthwise)"
    return None


def _check_linear(node: Any) -> str | None:
    rank = _rank(node.args[0])
    if rank is not None and rank not in (2, 3):
        return (f"Linear on a rank-{rank} input (N, ..., F) is not lowered yet; use (N, F) or (N, T, F) (view the "
                "extra dims into T first)")
    return None


def _check_batch_norm(node: Any) -> str | None:
    src = node.args[0]
    prod = str(getattr(src, "target", ""))
    if prod.startswith("aten.conv_transpose"):  # issue 11: folded per output channel (weight axis 1)
        if len(src.users) != 1:
            return "the ConvTranspose before this BatchNorm has other users, so the BatchNorm cannot be folded"
        return None
    if prod not in ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default"):
        return ("a BatchNorm folds into the conv/linear right before it, and one elsewhere becomes a depthwise "
                "1x1 conv only with running statistics (track_running_stats=True) on a 2-D to 4-D input")
    if len(src.users) != 1:
        return "the conv/linear before this BatchNorm has other users, so the BatchNorm cannot be folded"
    if prod == "aten.linear.default" and _rank(src.args[0]) != 2:
        return "BatchNorm after a Linear folds only for 2-D (N, features) inputs"
    return None


def _check_slice(node: Any) -> str | None:
    start, end, step = _arg(node, 2, "start", None), _arg(node, 3, "end", None), _arg(node, 4, "step", 1)
    if start in (None, 0) and (end is None or int(end) >= 2**62) and int(step or 1) == 1:
        return None  # a full slice (x[:, :, None] writes one): nothing to do
    rank = _rank(node.args[0])
    if int(_arg(node, 1, "dim", 0)) % (rank or 1) == 0:
        return "slicing the batch dim is not supported"
    if rank is not None and rank > 4:
        return f"slicing a rank-{rank} tensor: ranks 2 to 4 only"
    return None


def torch_perm(node: Any, rank: int | None = None) -> list[int] | None:
    """The permutation of a permute/transpose node (None when the rank is unknown)."""
    rank = rank if rank is not None else _rank(node.args[0])
    if rank is None:
        return None
    if str(node.target).startswith("aten.permute"):
        return [int(d) % rank for d in node.args[1]]
    a, b = int(node.args[1]) % rank, int(node.args[2]) % rank
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _check_permute(node: Any) -> str | None:
    perm = torch_perm(node)
    if perm is None:
        return None
    if perm[0] != 0:
        return "a permute/transpose that moves the batch dim is not supported"
    if len(perm) > 4:
        return f"permute of a rank-{len(perm)} tensor: ranks 2 to 4 only"
    return None


_BROADCASTING = ("aten.add", "aten.mul", "aten.sub", "aten.maximum", "aten.minimum")


def _check_expand(node: Any) -> str | None:
    users = list(getattr(node, "users", ()))
    if users and all(str(u.target).startswith(_BROADCASTING) for u in users):
        return None
    return "expand/expand_as only as an operand of add/mul/sub/maximum/minimum (which broadcast)"


def _check_softmax(node: Any) -> str | None:
    rank = _rank(node.args[0])
    dim = _arg(node, 1, "dim", -1)
    if rank in (3, 4) and int(dim) % rank == rank - 1:
        return None  # (N, [H,] M, P) attention scores over P: TRANSPOSE + SOFTMAX + TRANSPOSE
    if rank is not None and rank in (3, 4) and int(dim) % rank != 1:
        return "softmax on a feature map only over the channel dim (dim=1), or the last dim of a rank-3 tensor"
    return None


_R = Role
_RECURRENT_HINT = ("a recurrent layer torch.export could not see as an nn.GRU / nn.LSTM / nn.RNN module: call the "
                   "layer module (batch_first=True), so it is unrolled before export")
_CLAMP_TFLM = "fused RELU / RELU6 / RELU_N1_TO_1, else MAXIMUM + MINIMUM"
_CLAMP_NOTE = "bounds (0, 6), (-1, 1), (0, inf) fuse into the op before; others keep the input's qparams"
_CONV_DOC = ("CONV_2D / DEPTHWISE_CONV_2D",
             "groups 1 or in_channels; any padding (SAME when it matches TF's split, else PAD); a BatchNorm "
             "right after it is folded")

OPS: MappingProxyType[str, OpRow] = MappingProxyType({
    # compute
    "aten.conv1d.default": OpRow(_R.COMPUTE, "conv", "Conv1d (incl. depthwise)", *_CONV_DOC,
                                 check=_check_conv),
    "aten.conv2d.default": OpRow(_R.COMPUTE, "conv", "Conv2d (incl. depthwise)", *_CONV_DOC, check=_check_conv),
    "aten.conv1d.padding": OpRow(_R.COMPUTE, "conv", "Conv1d(padding='same'/'valid')", "CONV_2D / DEPTHWISE_CONV_2D",
                                 "string padding; a BatchNorm after it folds only with an odd kernel",
                                 check=_check_conv),
    "aten.conv2d.padding": OpRow(_R.COMPUTE, "conv", "Conv2d(padding='same'/'valid')", "CONV_2D / DEPTHWISE_CONV_2D",
                                 "string padding; a BatchNorm after it folds only with an odd kernel",
                                 check=_check_conv),
    "aten.linear.default": OpRow(_R.COMPUTE, "linear", "Linear", "CONV_2D (default) or FULLY_CONNECTED",
                                 "input (N, F): after a flatten it reads the map directly; (N, T, F): TRANSPOSE, "
                                 "1x1 CONV_2D, TRANSPOSE (always CONV_2D; transposes between layers cancel)",
                                 check=_check_linear),
    # activations fused into the op before them when possible
    "aten.relu.default": OpRow(_R.ACTIVATION, "activation", "ReLU, F.relu", "fused RELU (or MUL by 1 standalone)"),
    "aten.relu_.default": OpRow(_R.ACTIVATION, "activation", "ReLU(inplace=True)", "fused RELU"),
    "aten.relu6.default": OpRow(_R.ACTIVATION, "activation", "ReLU6, F.relu6", "fused RELU6"),
    "aten.hardtanh.default": OpRow(_R.ACTIVATION, "clamp", "Hardtanh, F.hardtanh", _CLAMP_TFLM, _CLAMP_NOTE,
                                   check=_check_clamp, role_of=_clamp_role),
    "aten.hardtanh_.default": OpRow(_R.ACTIVATION, "clamp", "Hardtanh(inplace=True)", _CLAMP_TFLM, _CLAMP_NOTE,
                                    check=_check_clamp, role_of=_clamp_role),
    "aten.clamp.default": OpRow(_R.ACTIVATION, "clamp", "torch.clamp(x, lo, hi)", _CLAMP_TFLM, _CLAMP_NOTE,
                                check=_check_clamp, role_of=_clamp_role),
    "aten.clamp_.default": OpRow(_R.ACTIVATION, "clamp", "x.clamp_(lo, hi)", _CLAMP_TFLM, _CLAMP_NOTE,
                                 check=_check_clamp, role_of=_clamp_role),
    "aten.hardswish.default": OpRow(_R.UNARY, "hard_swish", "Hardswish, F.hardswish", "HARD_SWISH",
                                    "own output qparams; TFLM's fixed point is within 1 LSB of float"),
    "aten.hardswish_.default": OpRow(_R.UNARY, "hard_swish", "Hardswish(inplace=True)", "HARD_SWISH"),
    "aten.leaky_relu.default": OpRow(_R.UNARY, "leaky_relu", "LeakyReLU, F.leaky_relu", "LEAKY_RELU",
                                     "own output qparams; with a negative slope TF Lite's kernel differs from "
                                     "TFLM by 1 LSB (tests/test_ops_micro.py)"),
    "aten.leaky_relu_.default": OpRow(_R.UNARY, "leaky_relu", "LeakyReLU(inplace=True)", "LEAKY_RELU"),
    "aten.prelu.default": OpRow(_R.PARAMETRIC, "prelu", "PReLU", "PRELU",
                                "own output qparams; the slopes int8 with their own scale and zero point"),
    "aten.abs.default": OpRow(_R.UNARY, "abs", "torch.abs, x.abs()", "ABS", "own output qparams"),
    # elementwise
    "aten.add.Tensor": OpRow(_R.ELEMENTWISE, "add", "+, torch.add", "ADD", "same-rank operands (broadcast allowed)",
                             check=_check_elementwise),
    "aten.add_.Tensor": OpRow(_R.ELEMENTWISE, "add", "+=", "ADD", "same-rank operands", check=_check_elementwise),
    "aten.mul.Tensor": OpRow(_R.ELEMENTWISE, "mul", "*, torch.mul", "MUL", "same-rank operands (broadcast allowed)",
                             check=_check_elementwise),
    "aten.mul_.Tensor": OpRow(_R.ELEMENTWISE, "mul", "*=", "MUL", "same-rank operands", check=_check_elementwise),
    "aten.sub.Tensor": OpRow(_R.ELEMENTWISE, "sub", "-, torch.sub", "SUB", "same-rank operands (broadcast allowed)",
                             check=_check_elementwise),
    "aten.sub_.Tensor": OpRow(_R.ELEMENTWISE, "sub", "-=", "SUB", "same-rank operands", check=_check_elementwise),
    "aten.maximum.default": OpRow(_R.EXTREMUM, "maximum", "torch.maximum", "MAXIMUM",
                                  "both inputs share the output's qparams", check=_check_elementwise),
    "aten.minimum.default": OpRow(_R.EXTREMUM, "minimum", "torch.minimum", "MINIMUM",
                                  "both inputs share the output's qparams", check=_check_elementwise),
    "aten.permute.default": OpRow(_R.SHARED, "transpose", "x.permute(...)", "TRANSPOSE",
                                  "batch dim stays first; ranks 2-4", check=_check_permute),
    "aten.transpose.int": OpRow(_R.SHARED, "transpose", "x.transpose(a, b)", "TRANSPOSE",
                                "batch dim stays first; ranks 2-4", check=_check_permute),
    "aten.expand_as.default": OpRow(_R.SHARED, "expand", "w.expand_as(y) (into a mul/add)", "(none: broadcast)",
                                    "only as an operand of a broadcasting op", check=_check_expand),
    "aten.expand.default": OpRow(_R.SHARED, "expand", "w.expand(...) (into a mul/add)", "(none: broadcast)",
                                 "only as an operand of a broadcasting op", check=_check_expand),
    # same qparams in and out
    "aten.max_pool1d.default": OpRow(_R.SHARED, "max_pool", "MaxPool1d", "MAX_POOL_2D"),
    "aten.max_pool2d.default": OpRow(_R.SHARED, "max_pool", "MaxPool2d", "MAX_POOL_2D",
                                     "padding only as TF's SAME split"),
    "aten.avg_pool1d.default": OpRow(_R.SHARED, "avg_pool", "AvgPool1d", "AVERAGE_POOL_2D"),
    "aten.avg_pool2d.default": OpRow(_R.SHARED, "avg_pool", "AvgPool2d", "AVERAGE_POOL_2D",
                                     "padding only as SAME with count_include_pad=False"),
    "aten.adaptive_avg_pool1d.default": OpRow(_R.SHARED, "adaptive_avg_pool", "AdaptiveAvgPool1d(1)",
                                              "AVERAGE_POOL_2D or MEAN", "output size 1", check=_check_adaptive),
    "aten.adaptive_avg_pool2d.default": OpRow(_R.SHARED, "adaptive_avg_pool", "AdaptiveAvgPool2d(1)",
                                              "AVERAGE_POOL_2D or MEAN", "output size 1", check=_check_adaptive),
    "aten.mean.dim": OpRow(_R.SHARED, "mean_any", "x.mean(dims, keepdim)", "AVERAGE_POOL_2D or MEAN",
                           "any dims but the batch, keepdim both ways (a RESHAPE that would reorder NHWC data "
                           "is refused)", check=_check_mean_any, role_of=_mean_role),
    "aten.flatten.using_ints": OpRow(_R.SHARED, "reshape", "Flatten, x.flatten(1)", "RESHAPE (or none before a Linear)"),
    "aten.view.default": OpRow(_R.SHARED, "reshape", "x.view(...)", "RESHAPE", "no NHWC reordering except a flatten"),
    "aten.reshape.default": OpRow(_R.SHARED, "reshape", "x.reshape(...)", "RESHAPE",
                                  "no NHWC reordering except a flatten"),
    "aten._unsafe_view.default": OpRow(_R.SHARED, "reshape", "(internal view)", "RESHAPE"),
    "aten.unsqueeze.default": OpRow(_R.SHARED, "reshape", "x.unsqueeze(d), s[:, :, None, None]", "RESHAPE"),
    "aten.squeeze.dim": OpRow(_R.SHARED, "reshape", "x.squeeze(d)", "RESHAPE"),
    "aten.squeeze.dims": OpRow(_R.SHARED, "reshape", "x.squeeze((d, e))", "RESHAPE"),
    "aten.squeeze.default": OpRow(_R.SHARED, "reshape", "x.squeeze()", "RESHAPE"),
    "aten.slice.Tensor": OpRow(_R.SHARED, "slice", "x[:, a:b:s], x.chunk(n, d), x.split(...)", "STRIDED_SLICE (none for a full slice)",
                               "not the batch dim; ranks 2-4", check=_check_slice),
    "aten.pad.default": OpRow(_R.SHARED, "pad", "F.pad(x, p)", "PAD (or SAME padding of the next conv)",
                              "zero padding only", check=_check_pad),
    "aten.constant_pad_nd.default": OpRow(_R.SHARED, "pad", "ZeroPad1d/2d, ConstantPad(0)",
                                          "PAD (or SAME padding of the next conv)", "zero padding only",
                                          check=_check_pad),
    "aten.cat.default": OpRow(_R.CONCAT, "cat", "torch.cat", "CONCATENATION", "inputs share one scale"),
    "aten.concat.default": OpRow(_R.CONCAT, "cat", "torch.concat", "CONCATENATION", "inputs share one scale"),
    # fixed output qparams
    "aten.softmax.int": OpRow(_R.FIXED, "softmax", "Softmax, F.softmax", "SOFTMAX", "over the last/channel dim",
                              check=_check_softmax, fixed=Fixed.SOFTMAX),
    "aten._softmax.default": OpRow(_R.FIXED, "softmax", "(internal softmax)", "SOFTMAX", check=_check_softmax,
                                   fixed=Fixed.SOFTMAX),
    "aten.sigmoid.default": OpRow(_R.FIXED, "logistic", "Sigmoid, torch.sigmoid", "LOGISTIC",
                                  "output (1/256, -128)", fixed=Fixed.SIGMOID),
    "aten.tanh.default": OpRow(_R.FIXED, "tanh", "Tanh, torch.tanh", "TANH", "output (1/128, 0)", fixed=Fixed.TANH),
    # gone at inference
    "aten.dropout.default": OpRow(_R.DROP, "identity", "Dropout", ""),
    "aten.dropout_.default": OpRow(_R.DROP, "identity", "Dropout(inplace=True)", ""),
    "aten.feature_dropout.default": OpRow(_R.DROP, "identity", "Dropout2d", ""),
    "aten.clone.default": OpRow(_R.DROP, "identity", "x.clone()", ""),
    "aten.alias.default": OpRow(_R.DROP, "identity", "(alias)", ""),
    "aten.detach.default": OpRow(_R.DROP, "identity", "x.detach()", ""),
    "aten.batch_norm.default": OpRow(_R.FOLDED, None, "BatchNorm1d/2d",
                                     "(folded into the conv/linear), else DEPTHWISE_CONV_2D",
                                     "folded right after a conv/linear; elsewhere (at the input, after an add) a "
                                     "depthwise 1x1 conv, statistics frozen at export (needs running statistics)",
                                     check=_check_batch_norm),
    "aten._native_batch_norm_legit_no_training.default": OpRow(
        _R.FOLDED, None, "(BatchNorm in eval)", "(folded)", check=_check_batch_norm),
    "aten.sym_size.int": OpRow(_R.META, None, "(dynamic batch size)", ""),
    "<built-in function getitem>": OpRow(_R.META, None, "(tuple item)", ""),
    # issue 11: shape / upsampling ops (checks in optable/shape.py)
    "aten.upsample_nearest2d.vec": OpRow(_R.SHARED, "resize_nearest", "Upsample(mode='nearest'), F.interpolate",
                                         "RESIZE_NEAREST_NEIGHBOR",
                                         "refused where PyTorch and TFLM would pick different pixels",
                                         check=_shape_checks.check_nearest),
    "aten._upsample_nearest_exact2d.vec": OpRow(_R.SHARED, "resize_nearest", "F.interpolate(mode='nearest-exact')",
                                                "RESIZE_NEAREST_NEIGHBOR (half-pixel centres)",
                                                "refused where PyTorch and TFLM would pick different pixels",
                                                check=_shape_checks.check_nearest),
    "aten.upsample_bilinear2d.vec": OpRow(_R.SHARED, "resize_bilinear", "Upsample(mode='bilinear'), F.interpolate",
                                          "RESIZE_BILINEAR (align_corners, or half-pixel centres)",
                                          "TFLM's 10-bit weights: within 1 LSB of PyTorch's float; no antialias",
                                          check=_shape_checks.check_bilinear),
    "aten.conv_transpose2d.input": OpRow(_R.TRANSPOSED, "conv_transpose", "ConvTranspose2d",
                                         "TRANSPOSE_CONV (+ STRIDED_SLICE where TF's padding differs)",
                                         "groups 1, dilation 1, int8 weights; a BatchNorm right after it is folded",
                                         check=_shape_checks.check_conv_transpose),
    "aten.conv_transpose1d.default": OpRow(_R.TRANSPOSED, "conv_transpose", "ConvTranspose1d",
                                           "TRANSPOSE_CONV (+ STRIDED_SLICE where TF's padding differs)",
                                           "as ConvTranspose2d, on (N, C, L)",
                                           check=_shape_checks.check_conv_transpose),
    "aten.upsample_nearest1d.vec": OpRow(_R.SHARED, "resize_nearest", "Upsample / F.interpolate on (N, C, L), nearest",
                                         "RESIZE_NEAREST_NEIGHBOR",
                                         "refused where PyTorch and TFLM would pick different pixels",
                                         check=_shape_checks.check_nearest),
    "aten._upsample_nearest_exact1d.vec": OpRow(_R.SHARED, "resize_nearest", "F.interpolate(mode='nearest-exact'), 1-D",
                                                "RESIZE_NEAREST_NEIGHBOR (half-pixel centres)",
                                                "refused where PyTorch and TFLM would pick different pixels",
                                                check=_shape_checks.check_nearest),
    "aten.upsample_linear1d.vec": OpRow(_R.SHARED, "resize_bilinear", "Upsample / F.interpolate(mode='linear')",
                                        "RESIZE_BILINEAR (one row)", "as bilinear", check=_shape_checks.check_bilinear),
    "aten.pixel_shuffle.default": OpRow(_R.SHARED, "pixel_shuffle", "PixelShuffle, F.pixel_shuffle",
                                        "DEPTH_TO_SPACE (after RESHAPE + TRANSPOSE + RESHAPE unless C_out = 1)",
                                        "PyTorch's channel order regrouped to TF's DCR; (N, C, H, W) only"),
    "aten.matmul.default": OpRow(_R.ELEMENTWISE, "matmul", "torch.matmul, a @ b (two activations)", "BATCH_MATMUL",
                                 "(N, M, K) @ (N, K, P) activations, or (N, H, M, K) @ (N, H, K, P) heads (TRANSPOSE "
                                 "to (N, H, K, M) and back; chains merge); own output qparams",
                                 check=_shape_checks.check_matmul),
    "aten.bmm.default": OpRow(_R.ELEMENTWISE, "matmul", "torch.bmm", "BATCH_MATMUL",
                              "(N, M, K) @ (N, K, P) activations; own output qparams",
                              check=_shape_checks.check_matmul),
    # issue 11, ops-act: activations decomposed after export (quant/act_rewrite.py), ELU, scalar operands,
    # global max pooling
    "aten.silu.default": OpRow(_R.REWRITTEN, None, "SiLU, F.silu (Swish)", "LOGISTIC + MUL",
                               "x * sigmoid(x): the sigmoid output at (1/256, -128), then MUL"),
    "aten.silu_.default": OpRow(_R.REWRITTEN, None, "SiLU(inplace=True)", "LOGISTIC + MUL"),
    "aten.hardsigmoid.default": OpRow(_R.REWRITTEN, None, "Hardsigmoid, F.hardsigmoid", "ADD (fused RELU6) + MUL",
                                      "relu6(x + 3) / 6: ADD of the constant 3 with RELU6 fused, then MUL by the "
                                      "constant 1/6 (two requantizations; TFLM has no HARD_SIGMOID)"),
    "aten.hardsigmoid_.default": OpRow(_R.REWRITTEN, None, "Hardsigmoid(inplace=True)", "ADD (fused RELU6) + MUL"),
    "aten.gelu.default": OpRow(_R.REWRITTEN, None, "GELU (exact or approximate='tanh')",
                               "MUL, MUL, ADD, MUL, LOGISTIC, MUL",
                               "the tanh form x * sigmoid(x (c1 + c3 x^2)) (TFLM registers no GELU kernel); "
                               "within 5e-4 of the exact form in float; 6 ops, each rounding to int8"),
    "aten.elu.default": OpRow(_R.UNARY, "elu", "ELU, F.elu (alpha=1)", "ELU",
                              "own output qparams; TFLM's table uses the C library's expf (TF Lite: builtin "
                              "kernels equal, the reference resolver has no ELU)", check=_check_elu),
    "aten.add.Scalar": OpRow(_R.SCALAR, "scalar_add", "x + c, x - c (c a Python number)", "ADD",
                             "c an int8 constant (+-1 with scale |c|); a ReLU/ReLU6 after it fuses",
                             check=_check_scalar),
    "aten.mul.Scalar": OpRow(_R.SCALAR, "scalar_mul", "x * c (c a Python number)", "MUL",
                             "c an int8 constant (+-1 with scale |c|): one requantization", check=_check_scalar),
    "aten.rsub.Scalar": OpRow(_R.SCALAR, "scalar_rsub", "c - x (c a Python number)", "SUB",
                              "SUB from the int8 constant c", check=_check_scalar),
    "aten.div.Tensor": OpRow(_R.SCALAR, "scalar_div", "x / c (c a Python number)", "MUL",
                             "MUL by the int8 constant 1/c; division by a tensor is refused", check=_check_scalar),
    "aten.amax.default": OpRow(_R.SHARED, "amax", "x.amax(dims, keepdim), AdaptiveMaxPool(1)",
                               "MAX_POOL_2D over all spatial dims, else REDUCE_MAX (+ RESHAPE without keepdim)",
                               "any dims but the batch; keeps the input's qparams", check=_check_amax),
    "aten.adaptive_max_pool2d.default": OpRow(_R.REWRITTEN, None, "AdaptiveMaxPool2d(1), F.adaptive_max_pool2d",
                                              "MAX_POOL_2D", "output size 1 (rewritten as amax)",
                                              check=_check_adaptive_max),
    "aten.max.dim": OpRow(_R.REWRITTEN, None, "torch.max(x, dim)[0], x.max(dim).values", "REDUCE_MAX / MAX_POOL_2D",
                          "rewritten as amax when the indices are not used",
                          check=lambda node: "torch.max over a dim whose indices are used (argmax) has no int8 "
                                             "lowering; use x.amax(dim)"),
    "aten.adaptive_max_pool1d.default": OpRow(_R.REWRITTEN, None, "AdaptiveMaxPool1d(1)", "MAX_POOL_2D",
                                              "output size 1 (rewritten as amax)", check=_check_adaptive_max),
    # issue 11: LayerNorm decomposed after export (quant/norm_rewrite.py)
    "aten.layer_norm.default": OpRow(_R.REWRITTEN, None, "LayerNorm, F.layer_norm (last dim)",
                                     "MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL (+ MUL, ADD by weight and bias)",
                                     "7-9 int8 ops, each rounding; the variance and 1/sqrt are int8, so tokens with "
                                     "a variance far below the largest seen are normalised coarsely",
                                     check=_check_layer_norm),
    "aten.rsqrt.default": OpRow(_R.UNBOUNDED, "rsqrt", "torch.rsqrt", "RSQRT",
                                "int8, input >= 0; an input that rounds to 0 gives the int8 maximum (as TFLM)"),
    # issue 11, recurrent layers: unrolled over time before export (quant/recurrent.py)
    "aten.gru.input": OpRow(_R.REWRITTEN, None, "GRU (batch_first=True, any num_layers, h0 = 0)",
                            "per step: CONV_2D x2, STRIDED_SLICE, ADD, LOGISTIC, MUL, TANH, SUB",
                            "unrolled, one Linear per product reading ONE stored weight; ~16 ops per step and "
                            "layer; out[:, k] / h_n[k] read that step's h, a whole `out` is a CONCATENATION; "
                            "a16w8: gates and h int16",
                            check=lambda node: _RECURRENT_HINT),
    "aten.lstm.input": OpRow(_R.REWRITTEN, None, "LSTM (batch_first=True, any num_layers, h0 = c0 = 0)",
                             "per step: CONV_2D x2, ADD, STRIDED_SLICE, LOGISTIC, TANH, MUL",
                             "unrolled as GRU; the cell state c is int8 with its own scale at every step, or "
                             "int16 with h and every gate when the layer is a16w8 (not TFLM's "
                             "UNIDIRECTIONAL_SEQUENCE_LSTM)",
                             check=lambda node: _RECURRENT_HINT),
    "aten.rnn_tanh.input": OpRow(_R.REWRITTEN, None, "RNN (nonlinearity='tanh', batch_first=True, h0 = 0)",
                                 "per step: CONV_2D x2, ADD, TANH", "unrolled as GRU",
                                 check=lambda node: _RECURRENT_HINT),
    "aten.rnn_relu.input": OpRow(_R.REWRITTEN, None, "RNN (nonlinearity='relu', batch_first=True, h0 = 0)",
                                 "per step: CONV_2D x2, ADD (fused RELU)", "unrolled as GRU",
                                 check=lambda node: _RECURRENT_HINT),
    # issue 11: integer indexing, stack, unbind, indexing by a constant list (lowering/select.py,
    # quant/select_rewrite.py); all keep the input's qparams
    "aten.select.int": OpRow(_R.SHARED, "select", "x[:, i] (an int index), x.select(d, i)",
                             "STRIDED_SLICE + RESHAPE (+ TRANSPOSE for the channel of (N, C, H, W))",
                             "ranks 3 and 4, not the batch dim", check=_select_checks.check_select),
    "aten.stack.default": OpRow(_R.CONCAT, "stack", "torch.stack(xs, dim)", "RESHAPE per input + CONCATENATION",
                                "(N, F) or (N, C, L) inputs sharing one scale; dim=1 of (N, C, L) adds one "
                                "TRANSPOSE", check=_select_checks.check_stack),
    "aten.unbind.int": OpRow(_R.REWRITTEN, None, "x.unbind(d), a, b = x.unbind(1)", "one x[:, i] per piece",
                             "rewritten as one select per piece read", check=_select_checks.check_unbind),
    "aten.index.Tensor": OpRow(_R.REWRITTEN, None, "x[:, [0, 2]] (a constant list of ints)",
                               "STRIDED_SLICE per run (+ CONCATENATION)",
                               "one dim, constant indices; each arithmetic run (step >= 1) is one slice",
                               check=_select_checks.check_index),
    "aten.index_select.default": OpRow(_R.REWRITTEN, None, "x.index_select(d, idx) (idx constant)",
                                       "STRIDED_SLICE per run (+ CONCATENATION)", "as x[:, [0, 2]]",
                                       check=_select_checks.check_index),
    "aten.lift_fresh_copy.default": OpRow(_R.META, None, "(the constant of x[:, [0, 2]])", "",
                                          "only as the index list (gone after the rewrite)",
                                          check=_select_checks.check_lifted_constant),
})

#: What to use instead of an op stage 2 has no row for, by aten op name (without the overload).
INSTEAD: MappingProxyType[str, str] = MappingProxyType({
    "max": "use x.amax(dims), MaxPool or torch.maximum (a max over every dim is not lowered)",
    "zeros": "create constants as registered buffers, not inside forward",
    # issue 11: shape ops TFLM lacks
    "upsample_bicubic2d": "bicubic resizing has no TFLM op; use mode='bilinear' or 'nearest'",
    "_upsample_bilinear2d_aa": "antialiased resizing has no TFLM op; use antialias=False",
    "pixel_unshuffle": "PixelUnshuffle (SPACE_TO_DEPTH) is not lowered yet; use a strided conv",
    "gather": "torch.gather by a tensor of indices has no int8 lowering; index with a constant list (x[:, [0, 2]])",
})

#: Layers reported as a whole (their internal ops are not named one by one): module class name -> hint.
REFUSED_MODULES: MappingProxyType[str, str] = MappingProxyType({
    "GRU": "only unidirectional GRU with batch_first=True is unrolled (quant/recurrent.py); the refusal says why",
    "LSTM": ("only unidirectional LSTM with batch_first=True and proj_size=0 is unrolled (quant/recurrent.py); "
             "the refusal says why"),
    "RNN": "only unidirectional RNN with batch_first=True is unrolled (quant/recurrent.py); the refusal says why",
    "MultiheadAttention": ("nn.MultiheadAttention is not lowered (packed in_proj); write the block with nn.Linear "
                           "q/k/v, heads split by view(N, T, H, D).transpose(1, 2), q @ k.transpose(-2, -1), "
                           "softmax(dim=-1) (BATCH_MATMUL)"),
})


def role_for(node: Any) -> Role | None:
    """The quantizer role of an exported node (the row's, or what its arguments make it), None if unknown."""
    row = OPS.get(str(node.target))
    if row is None:
        return None
    return row.role_of(node) if row.role_of is not None else row.role


def row_of(target_name: str) -> OpRow | None:
    """The table row of an exported op by ``str(node.target)``, or None if stage 2 cannot handle it."""
    return OPS.get(target_name)


def supported_summary() -> str:
    """The PyTorch spellings stage 2 accepts, for error messages."""
    seen: list[str] = []
    for row in OPS.values():
        if row.pytorch.startswith("(") or "inplace" in row.pytorch or row.pytorch in seen:
            continue
        seen.append(row.pytorch)
    return ", ".join(seen)
