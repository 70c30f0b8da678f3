"""Issue 11's shape ops from PyTorch: each through the product quantizer, the lowering, the .tflite (written and
read back), the QDQ ONNX, the emulator and the tflm_exact program, with TFLM == emulator == tflm_exact ==
TF Lite reference on every element (ONNX Runtime, in float, within 2 LSB at the output)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402

from tinyprec.errors import UnsupportedOpsError  # noqa: E402


class Up(nn.Module):
    """conv -> upsample -> conv, so the resize sits between two quantized layers as in a decoder."""

    def __init__(self, up) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a, self.up, self.b = nn.Conv2d(2, 4, 3, padding=1), up, nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.up(self.a(x)))


class Interp(nn.Module):
    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, **self.kwargs)


CASES = {
    "upsample_nearest_x2": (lambda: nn.Upsample(scale_factor=2), "RESIZE_NEAREST_NEIGHBOR"),
    "nearest_size": (lambda: Interp(size=(9, 15), mode="nearest"), "RESIZE_NEAREST_NEIGHBOR"),
    "nearest_exact": (lambda: Interp(scale_factor=3, mode="nearest-exact"), "RESIZE_NEAREST_NEIGHBOR"),
    "bilinear_x2": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), "RESIZE_BILINEAR"),
    "bilinear_align_corners": (lambda: Interp(size=(9, 13), mode="bilinear", align_corners=True),
                               "RESIZE_BILINEAR"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resize_end_to_end_exact(case: str) -> None:
    build, op = CASES[case]
    torch.manual_seed(0)
    out = run_everywhere(Up(build()), (2, 5, 6))
    assert op in out.op_types(), out.op_types()
    assert_exact(out, onnx_lsb=2)


def test_nearest_that_tflm_cannot_match_is_refused_before_training() -> None:
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant

    model = Up(Interp(scale_factor=1.7, mode="nearest")).eval()
    with pytest.raises(UnsupportedOpsError, match="different source pixels"):
        check_graph(export_for_quant(model, example_like((2, 5, 6)), train=False))


class Deconv(nn.Module):
    """conv -> ConvTranspose2d [-> ReLU] -> conv, as a decoder stage."""

    def __init__(self, relu: bool = False, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(3, 2, 1)
        self.up = nn.ConvTranspose2d(4, 3, **kwargs)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.a(x))
        return self.b(torch.relu(y) if self.relu else y)


DECONV = {
    "k2s2": (dict(kernel_size=2, stride=2), ["TRANSPOSE_CONV"]),
    "k4s2p1": (dict(kernel_size=4, stride=2, padding=1), ["TRANSPOSE_CONV"]),
    "k3s2p1_output_padding": (dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                              ["TRANSPOSE_CONV", "STRIDED_SLICE"]),
    "k3s1p1_relu_no_bias": (dict(kernel_size=3, padding=1, bias=False, relu=True), ["TRANSPOSE_CONV"]),
    "k3s2_output_padding_past_scatter": (dict(kernel_size=3, stride=2, output_padding=1),
                                         ["TRANSPOSE_CONV"]),
}


@pytest.mark.parametrize("case", sorted(DECONV))
def test_conv_transpose_end_to_end_exact(case: str) -> None:
    kwargs, ops = DECONV[case]
    torch.manual_seed(0)
    out = run_everywhere(Deconv(**kwargs), (2, 5, 6))
    assert all(op in out.op_types() for op in ops), out.op_types()
    if "relu" in case:
        assert out.op_types() == ["CONV_2D", "TRANSPOSE_CONV", "CONV_2D"]  # the ReLU fused
    assert_exact(out, onnx_lsb=2)


def test_grouped_conv_transpose_is_refused_before_training() -> None:
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant

    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)).eval()
    with pytest.raises(UnsupportedOpsError, match="grouped ConvTranspose2d"):
        check_graph(export_for_quant(model, example_like((2, 5, 6)), train=False))


class Shuffle(nn.Module):
    """conv to C * r * r channels -> PixelShuffle(r) -> conv, as a super-resolution head."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.a, self.shuffle, self.b = nn.Conv2d(2, c * r * r, 3, padding=1), nn.PixelShuffle(r), nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.shuffle(self.a(x)))


@pytest.mark.parametrize("c, r", [(3, 2), (1, 3)])
def test_pixel_shuffle_end_to_end_exact(c: int, r: int) -> None:
    torch.manual_seed(0)
    out = run_everywhere(Shuffle(c, r), (2, 5, 6))
    want = ["DEPTH_TO_SPACE"] if c == 1 else ["RESHAPE", "TRANSPOSE", "RESHAPE", "DEPTH_TO_SPACE"]
    assert out.op_types() == ["CONV_2D", *want, "CONV_2D"], out.op_types()
    # TF Lite's reference resolver lacks int8 DEPTH_TO_SPACE (version 2): tests/test_ops_shape_micro.py
    # compares the op with TF Lite's builtin kernel instead.
    assert out.tflite_ref is None
    assert_exact(out, tflite=False, onnx_lsb=2)


class Attention(nn.Module):
    """One self-attention block over an (N, T, F) sequence as users write it with 1x1 Conv1d projections
    (the 1/sqrt(d) scale folded into the query weights): scores = q^T k, softmax over the keys (last dim),
    values weighted by the attention, a residual add and a head."""

    def __init__(self, features: int = 3, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv1d(features, d, 1)
        self.q, self.k, self.v = nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 1)
        self.head = nn.Conv1d(d, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.transpose(1, 2))  # (N, D, T)
        scores = torch.matmul(self.q(h).transpose(1, 2), self.k(h))  # (N, T, T)
        attn = torch.softmax(scores, dim=-1)
        y = torch.bmm(self.v(h), attn.transpose(1, 2))  # (N, D, T)
        return self.head(y + h)


def test_attention_block_end_to_end_exact() -> None:
    torch.manual_seed(0)
    out = run_everywhere(Attention(), (6, 3))
    assert out.op_types().count("BATCH_MATMUL") == 2 and "SOFTMAX" in out.op_types(), out.op_types()
    # softmax's TRANSPOSE back and the user's attn.transpose(1, 2) cancel: BATCH_MATMUL reads SOFTMAX directly
    assert out.op_types().count("TRANSPOSE") == 3, out.op_types()
    assert_exact(out, onnx_lsb=2)


class Decoder1d(nn.Module):
    """A 1-D decoder stage over (N, C, L): ConvTranspose1d, then ``up`` (a 1-D Upsample), then a conv."""

    def __init__(self, up, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a, self.b = nn.Conv1d(3, 4, 3, padding=1), nn.Conv1d(3, 2, 1)
        self.deconv, self.up = nn.ConvTranspose1d(4, 3, **kwargs), up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.up(self.deconv(self.a(x))))


ONE_D = {
    "deconv_k4s2p1_nearest": (lambda: Decoder1d(nn.Upsample(scale_factor=2), kernel_size=4, stride=2, padding=1),
                              ["TRANSPOSE_CONV", "RESIZE_NEAREST_NEIGHBOR"]),
    "deconv_output_padding_linear": (lambda: Decoder1d(nn.Upsample(scale_factor=2, mode="linear"), kernel_size=3,
                                                       stride=2, padding=1, output_padding=1),
                                     ["TRANSPOSE_CONV", "STRIDED_SLICE", "RESIZE_BILINEAR"]),
}


@pytest.mark.parametrize("case", sorted(ONE_D))
def test_one_d_decoder_end_to_end_exact(case: str) -> None:
    build, ops = ONE_D[case]
    torch.manual_seed(0)
    out = run_everywhere(build(), (3, 7))
    assert all(op in out.op_types() for op in ops), out.op_types()
    assert_exact(out, onnx_lsb=2)


def test_batch_norm_after_conv_transpose_folds_exactly() -> None:
    class DeconvBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.up = nn.Conv2d(2, 4, 3, padding=1), nn.ConvTranspose2d(4, 3, 2, stride=2, bias=False)
            self.bn, self.b = nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.bn.running_mean.uniform_(-0.5, 0.5)
                self.bn.running_var.uniform_(0.5, 2.0)
                self.bn.weight.uniform_(0.5, 1.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.bn(self.up(self.a(x)))))

    torch.manual_seed(0)
    out = run_everywhere(DeconvBN(), (2, 5, 6))
    assert out.op_types() == ["CONV_2D", "TRANSPOSE_CONV", "CONV_2D"], out.op_types()  # BN and ReLU folded
    assert_exact(out, onnx_lsb=2)


def test_resize_modes_without_a_tflm_op_are_refused_with_the_alternative() -> None:
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant

    model = Up(Interp(scale_factor=2, mode="bicubic")).eval()
    with pytest.raises(UnsupportedOpsError, match="use mode='bilinear' or 'nearest'"):
        check_graph(export_for_quant(model, example_like((2, 5, 6)), train=False))
