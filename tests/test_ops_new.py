"""Issue 11's ops from PyTorch: each through the product quantizer, the lowering, the .tflite (written and
read back), the QDQ ONNX, the emulator and the tflm_exact program, with TFLM == emulator == tflm_exact ==
TF Lite reference on every element (ONNX Runtime, in float, within 2 LSB at the output)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402


class Block(nn.Module):
    """conv -> ``fn`` -> conv, so the op sits between two quantized layers as in a real model."""

    def __init__(self, fn, channels: int = 4) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a = nn.Conv2d(2, channels, 3, padding=1)
        self.fn = fn
        self.b = nn.Conv2d(channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.fn(self.a(x)))


class Lambda(nn.Module):
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class TwoBranch(nn.Module):
    """Two convs of the same input combined by ``fn(a, b)`` (sub, maximum, minimum)."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a, self.b, self.fn = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 1), fn
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fn(self.a(x), self.b(x)))


CASES = {
    "hardswish": (lambda: Block(nn.Hardswish()), "HARD_SWISH"),
    "leaky_relu": (lambda: Block(nn.LeakyReLU(0.1)), "LEAKY_RELU"),
    "abs": (lambda: Block(Lambda(torch.abs)), "ABS"),
    "hardtanh_any_bounds": (lambda: Block(nn.Hardtanh(-0.5, 2.0)), "MINIMUM"),
    "clamp_min_only": (lambda: Block(Lambda(lambda x: torch.clamp(x, min=-0.3))), "MAXIMUM"),
    "clamp_relu6_fused": (lambda: Block(Lambda(lambda x: torch.clamp(x, 0.0, 6.0))), "CONV_2D"),
    "sub": (lambda: TwoBranch(torch.sub), "SUB"),
    "sub_relu_fused": (lambda: TwoBranch(lambda a, b: torch.relu(a - b)), "SUB"),
    "maximum": (lambda: TwoBranch(torch.maximum), "MAXIMUM"),
    "minimum": (lambda: TwoBranch(torch.minimum), "MINIMUM"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_end_to_end_exact(case: str) -> None:
    build, op = CASES[case]
    torch.manual_seed(0)
    out = run_everywhere(build(), (2, 6, 6))
    assert op in out.op_types(), out.op_types()
    if case == "clamp_relu6_fused":
        assert out.op_types() == ["CONV_2D", "CONV_2D"]  # fused into the first conv: no extra op
    if case == "hardtanh_any_bounds":
        assert "MAXIMUM" in out.op_types()
    # ONNX Runtime computes the QDQ graph in float: 1 LSB at the op can become 2 after the next conv.
    assert_exact(out, onnx_lsb=2)


class PermutedTCN(nn.Module):
    """A temporal conv net over an (N, T, F) input as users write it: permute to (N, F, T), dilated
    Conv1d with SAME padding, then back to (N, T, C) and a transpose again before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(5, 8, 3, padding=2, dilation=2)
        self.c2 = nn.Conv1d(8, 4, 3, padding="same", dilation=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x.permute(0, 2, 1)))
        y = y.transpose(1, 2)  # (N, T, C)
        return self.c2(y.transpose(1, 2))


class Permute4d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(5, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x).permute(0, 3, 1, 2)  # (N, C, H, W) -> (N, W, C, H)
        return self.b(y)


@pytest.mark.parametrize("case", ["tcn", "permute4d"])
def test_transpose_end_to_end_exact(case: str) -> None:
    torch.manual_seed(0)
    model, shape = (PermutedTCN(), (12, 5)) if case == "tcn" else (Permute4d(), (2, 4, 5))
    out = run_everywhere(model, shape)
    assert "TRANSPOSE" in out.op_types(), out.op_types()
    assert_exact(out, onnx_lsb=2)


class Slices(nn.Module):
    """Channel halves (x[:, :2], x[:, 2:]), a strided time slice on a conv1d map, a crop of a 2-D map."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        left, right = y[:, :2], y[:, 2:]
        return self.b(left[:, :, 1:-1, ::2]) + right[:, :, 1:-1, ::2]


class SliceSequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x[:, :, 2::3])


@pytest.mark.parametrize("case", ["slices_2d", "slice_sequence"])
def test_strided_slice_end_to_end_exact(case: str) -> None:
    torch.manual_seed(0)
    model, shape = (Slices(), (2, 6, 8)) if case == "slices_2d" else (SliceSequence(), (3, 20))
    out = run_everywhere(model, shape)
    assert "STRIDED_SLICE" in out.op_types(), out.op_types()
    assert_exact(out, onnx_lsb=2)


@pytest.mark.parametrize("channels", [4, 1])
def test_prelu_end_to_end_exact(channels: int) -> None:
    torch.manual_seed(0)
    prelu = nn.PReLU(channels)
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(-0.3, 0.6, channels))  # slopes of both signs
    out = run_everywhere(Block(prelu), (2, 6, 6))
    assert "PRELU" in out.op_types(), out.op_types()
    assert_exact(out, onnx_lsb=2)


class GatedChunks(nn.Module):
    """A GLU-style gate with chunk, and split_with_sizes / split pieces recombined."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        value, gate = y.chunk(2, dim=1)
        g = value * torch.sigmoid(gate)
        p, q, r = torch.split(g, [1, 2, 1], dim=1)
        left, right = g.split(3, dim=3)  # width 6: two pieces of 3
        return self.b(torch.cat([p + r, q, r], dim=1)) + self.b(torch.cat([right, left], dim=3))


def test_chunk_and_split_end_to_end_exact() -> None:
    torch.manual_seed(0)
    out = run_everywhere(GatedChunks(), (2, 6, 6))
    assert out.op_types().count("STRIDED_SLICE") >= 5, out.op_types()
    assert_exact(out, onnx_lsb=2)
