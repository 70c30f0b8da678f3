"""Issue 11's activation / arithmetic / normalisation ops (ops-act) from PyTorch: each through the product
quantizer, the lowering, the .tflite (written and read back), the QDQ ONNX, the emulator and the tflm_exact
program, with TFLM == emulator == tflm_exact == TF Lite reference on every element (ONNX Runtime, in float,
within 2 LSB at the output; 1 LSB where the op is the output). TF Lite's reference resolver has no ELU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402
from test_ops_new import Block, Lambda  # noqa: E402


class InputBN(nn.Module):
    """A standalone BatchNorm at the input (normalising raw features), then a conv."""

    def __init__(self, one_d: bool = False) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3) if one_d else nn.BatchNorm2d(3)
        self.conv = nn.Conv1d(3, 4, 3) if one_d else nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


class AddBN(nn.Module):
    """A BatchNorm after a residual add (it follows no conv), then a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.a(x) + self.b(x))))


class GlobalMax(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv, self.fc = nn.Conv2d(2, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        if self.how == "adaptive":
            y = F.adaptive_max_pool2d(y, 1).flatten(1)
        elif self.how == "module":
            y = nn.AdaptiveMaxPool2d((1, 1))(y).view(y.shape[0], -1)
        else:
            y = y.amax((2, 3))
        return self.fc(y)


class MeanDims(nn.Module):
    """conv -> mean over ``dims`` as the model's output: ONNX Runtime's float mean then rounds once, within
    1 LSB of TFLM's integer MEAN (a conv after it would amplify that step)."""

    def __init__(self, dims: tuple[int, ...], keep: bool) -> None:
        super().__init__()
        self.dims, self.keep = dims, keep
        self.a = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x).mean(self.dims, keepdim=self.keep)


class SequenceMean(nn.Module):
    """(N, C, T) features averaged over time without keepdim, then a Linear: mean(-1)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.fc = nn.Conv1d(3, 5, 3), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c(x)).mean(-1))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: channel mean and channel max (torch.max over dim 1) concatenated, a conv, a
    sigmoid gate; and a max over time without keepdim on a 1-D map."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.gate, self.head = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        stats = torch.cat([y.mean(1, keepdim=True), torch.max(y, dim=1, keepdim=True)[0]], dim=1)
        return self.head(y * torch.sigmoid(self.gate(stats)))


class TimeMax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x).amax(2)  # (N, C, H, W) -> (N, C, W): over the height only


class GlobalMax1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.pool, self.fc = nn.Conv1d(3, 6, 3), nn.AdaptiveMaxPool1d(1), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.c(x))).flatten(1))


class StandaloneRelu(nn.Module):
    """A ReLU after a max pool has nothing to fuse into: MUL by an int8 1 with a fused RELU (its constant
    of the input's rank, so the QDQ ONNX can be written)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(torch.relu(F.max_pool2d(self.c(x), 2)))


def _bn_stats(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model


CASES = {
    "silu": (lambda: Block(nn.SiLU()), (2, 6, 6), ["LOGISTIC", "MUL"]),
    "silu_functional": (lambda: Block(Lambda(F.silu)), (2, 6, 6), ["LOGISTIC", "MUL"]),
    "hardsigmoid": (lambda: Block(nn.Hardsigmoid()), (2, 6, 6), ["ADD", "MUL"]),
    "elu": (lambda: Block(nn.ELU()), (2, 6, 6), ["ELU"]),
    "div_constant": (lambda: Block(Lambda(lambda x: x / 3.0)), (2, 6, 6), ["MUL"]),
    "scalar_arith": (lambda: Block(Lambda(lambda x: torch.relu(x * 0.5 + 1.0) - 0.25)), (2, 6, 6), ["MUL", "ADD"]),
    "rsub_constant": (lambda: Block(Lambda(lambda x: 1.0 - torch.sigmoid(x))), (2, 6, 6), ["SUB", "LOGISTIC"]),
    "input_bn": (lambda: _bn_stats(InputBN()), (3, 6, 6), ["DEPTHWISE_CONV_2D", "CONV_2D"]),
    "input_bn_1d": (lambda: _bn_stats(InputBN(one_d=True)), (3, 12), ["DEPTHWISE_CONV_2D", "CONV_2D"]),
    "input_bn_features": (lambda: _bn_stats(nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3))), (6,),
                          ["DEPTHWISE_CONV_2D"]),
    "bn_after_add": (lambda: _bn_stats(AddBN()), (2, 6, 6), ["ADD", "DEPTHWISE_CONV_2D"]),
    "global_max_adaptive": (lambda: GlobalMax("adaptive"), (2, 6, 6), ["MAX_POOL_2D"]),
    "global_max_module": (lambda: GlobalMax("module"), (2, 6, 6), ["MAX_POOL_2D"]),
    "global_max_amax": (lambda: GlobalMax("amax"), (2, 6, 6), ["MAX_POOL_2D"]),
    "mean_channels_keepdim": (lambda: MeanDims((1,), True), (2, 6, 6), ["MEAN"]),
    "mean_width_keepdim": (lambda: MeanDims((3,), True), (2, 6, 6), ["MEAN"]),
    "mean_width_nokeep": (lambda: MeanDims((3,), False), (2, 6, 6), ["MEAN", "RESHAPE"]),
    "mean_channels_hw": (lambda: MeanDims((1, 3), True), (2, 6, 6), ["MEAN"]),
    "mean_height_nokeep": (lambda: MeanDims((2,), False), (2, 6, 6), ["MEAN", "RESHAPE"]),
    "spatial_attention_amax_channels": (lambda: SpatialAttention(), (2, 6, 6), ["REDUCE_MAX", "MEAN"]),
    "amax_height_nokeep": (lambda: TimeMax(), (2, 6, 6), ["REDUCE_MAX", "RESHAPE"]),
    "global_max_1d": (lambda: GlobalMax1d(), (3, 12), ["MAX_POOL_2D"]),
    "standalone_relu": (lambda: StandaloneRelu(), (2, 6, 6), ["MAX_POOL_2D", "MUL"]),
    "mean_sequence": (lambda: SequenceMean(), (3, 10), ["AVERAGE_POOL_2D"]),
    "gelu": (lambda: Block(nn.GELU()), (2, 6, 6), ["LOGISTIC", "MUL", "ADD"]),
    "gelu_tanh": (lambda: Block(nn.GELU(approximate="tanh")), (2, 6, 6), ["LOGISTIC", "MUL", "ADD"]),
}


#: The whole op sequence of the composed activations (between the two convs of Block): one op per place
#: TFLM requantizes, and the fused RELU6 of Hardsigmoid's ADD.
SEQUENCES = {
    "silu": ["CONV_2D", "LOGISTIC", "MUL", "CONV_2D"],
    "hardsigmoid": ["CONV_2D", "ADD", "MUL", "CONV_2D"],
    "gelu": ["CONV_2D", "MUL", "MUL", "ADD", "MUL", "LOGISTIC", "MUL", "CONV_2D"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_act_op_end_to_end_exact(case: str) -> None:
    build, shape, ops = CASES[case]
    torch.manual_seed(0)
    out = run_everywhere(build().eval(), shape)
    for op in ops:
        assert op in out.op_types(), out.op_types()
    if case in SEQUENCES:
        assert out.op_types() == SEQUENCES[case]
    if case == "hardsigmoid":
        assert [op.options.activation.value for op in out.graph.ops if op.type.value == "ADD"] == ["RELU6"]
    if case == "elu":
        # TF Lite's reference resolver has no ELU (fails when it gains one); its builtin ELU equals TFLM's on
        # all 256 inputs (tests/test_ops_act_micro.py), its builtin convs are not the reference arithmetic.
        assert out.tflite_ref is None
        assert_exact(out, tflite=False, onnx_lsb=2)
        return
    # ONNX Runtime requantizes in float: <= 1 LSB per rescaling op; a copy-only amax adds none, a MEAN one more
    assert_exact(out, onnx_lsb=1 if case.startswith("amax_") else 2)


class Refused(nn.Module):
    """What the new rows still refuse, each before training with its reason."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(2, track_running_stats=False)
        self.c = nn.Conv2d(2, 4, 3)
        self.elu = nn.ELU(alpha=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.norm(x))  # a standalone BatchNorm without running statistics
        y = self.elu(y) / y.amax()  # ELU alpha != 1; a division by a tensor; amax over every dim
        y = y * 0.0  # a multiplication by zero
        return F.adaptive_max_pool2d(y, 2).flatten(1) + y.mean(1).flatten(1)  # pool to 2x2; a reordering mean


def test_new_rows_refuse_what_they_cannot_convert_before_training() -> None:
    from tinyprec.errors import UnsupportedOpsError
    from tinyprec.quant.opcheck import check_model_ops

    with pytest.raises(UnsupportedOpsError) as info:
        check_model_ops(Refused(), torch.zeros(2, 2, 6, 6))
    hints = {r.op: r.hint for r in info.value.refusals}
    assert "alpha=1" in hints["elu"] and "constant number" in hints["div"] and "every dim" in hints["amax"]
    assert "running statistics" in hints["batch_norm"] and "by 0" in hints["mul"] and "size 1" in hints["adaptive_max_pool2d"] and "reorder" in hints["mean"]
