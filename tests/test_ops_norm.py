"""Issue 11: LayerNorm over the last dim and Linear on an (N, T, F) sequence, from PyTorch through the product
quantizer (PTQ), the lowering, the .tflite (written and read back), QDQ ONNX, the emulator and the tflm_exact
program: TFLM == emulator == tflm_exact == TF Lite reference on every element (ONNX Runtime within 2 LSB)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402

from tinyprec.errors import UnsupportedOpsError  # noqa: E402


class SeqNorm(nn.Module):
    """(N, T, F) -> Linear (embedding) -> LayerNorm -> Linear: the pre-LN transformer's input side."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.embed, self.norm, self.out = nn.Linear(5, 8), nn.LayerNorm(8, elementwise_affine=affine), nn.Linear(8, 3)
        if affine:
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)
                self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.embed(x)))


class FlatNorm(nn.Module):
    """LayerNorm on (N, F) between two Linears: F.layer_norm without affine, or nn.LayerNorm."""

    def __init__(self, affine: bool = False) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 10), nn.Linear(10, 3)
        self.norm = nn.LayerNorm(10) if affine else None
        if self.norm is not None:
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)
                self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(self.norm(y) if self.norm is not None else nn.functional.layer_norm(y, (10,)))


class MapNorm(nn.Module):
    """LayerNorm over the width of an (N, C, H, W) feature map between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.LayerNorm(6), nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.norm(self.a(x)))


CASES = {
    # the means over the last dim of (N, T, F) are global pools of the IR's (N, 1, F, T): AVERAGE_POOL_2D
    "layer_norm_affine": (lambda: SeqNorm(True), (7, 5),
                          ["AVERAGE_POOL_2D", "SUB", "MUL", "ADD", "RSQRT", "TRANSPOSE", "CONV_2D"]),
    "layer_norm_plain": (lambda: SeqNorm(False), (7, 5), ["AVERAGE_POOL_2D", "SUB", "RSQRT"]),
    "layer_norm_flat": (FlatNorm, (6,), ["MEAN", "SUB", "RSQRT"]),
    "layer_norm_flat_affine": (lambda: FlatNorm(True), (6,), ["MEAN", "SUB", "RSQRT", "ADD"]),
    "layer_norm_feature_map": (MapNorm, (2, 5, 6), ["MEAN", "SUB", "RSQRT", "ADD"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_norm_end_to_end_exact(case: str) -> None:
    build, shape, ops = CASES[case]
    torch.manual_seed(0)
    out = run_everywhere(build(), shape)
    assert all(op in out.op_types() for op in ops), out.op_types()
    assert "FULLY_CONNECTED" not in out.op_types()
    assert len(np.unique(out.tflm)) > 10  # a real spread of outputs, not a saturated constant
    # ONNX Runtime computes MEAN and 1/sqrt in float between its QDQ pairs: a 1-LSB difference in a small
    # variance moves 1/sqrt by up to sqrt(2), so some outputs differ by several LSB (measured: up to 9), most by <= 1
    assert out.onnx is not None
    assert_exact(out, tflite=True, onnx_lsb=12)
    near = np.abs(out.onnx.astype(np.int64) - out.tflm.astype(np.int64)) <= 1
    assert near.mean() > 0.85, near.mean()  # measured 0.89-0.95


def test_sequence_linear_transposes_cancel_between_layers() -> None:
    """Linear -> Linear on (N, T, F): TRANSPOSE, CONV_2D, CONV_2D, TRANSPOSE (the middle pair cancels)."""
    torch.manual_seed(0)
    out = run_everywhere(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), (5, 4))
    assert out.op_types() == ["TRANSPOSE", "CONV_2D", "CONV_2D", "TRANSPOSE"], out.op_types()
    assert_exact(out, onnx_lsb=2)


def test_layer_norm_over_two_dims_is_refused_before_training() -> None:
    from tinyprec.quant.opcheck import check_model_ops

    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm((3, 4)))
    with pytest.raises(UnsupportedOpsError, match="only the last dim") as info:
        check_model_ops(model, torch.zeros(2, 3, 4))
    assert [r.op for r in info.value.refusals] == ["layer_norm"]


class Heads(nn.Module):
    """Two-head self-attention on (N, T, F) as users write it (view/transpose head split, rank-4 matmuls)."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.embed, self.qkv = heads, nn.Linear(5, d), nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        n, t, d = h.shape
        q, k, v = (p.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for p in self.qkv(h).chunk(3, -1))
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, t, d) + h)


def test_multi_head_attention_exact_with_merged_transposes() -> None:
    torch.manual_seed(0)
    out = run_everywhere(Heads(), (6, 5))
    types = out.op_types()
    assert types.count("BATCH_MATMUL") == 2 and "SOFTMAX" in types, types
    producer = {op.outputs[0]: op for op in out.graph.ops}
    readers = [name for op in out.graph.ops for name in op.inputs]
    for op in out.graph.ops:  # merge_transpose_chains: no TRANSPOSE reads a TRANSPOSE that only it reads
        first = producer.get(op.inputs[0]) if op.type.value == "TRANSPOSE" else None
        assert first is None or first.type.value != "TRANSPOSE" or readers.count(op.inputs[0]) > 1, types
    assert_exact(out, onnx_lsb=2)


class PaddedNorm(nn.Module):
    """Tokens 5-6 zeroed by a mask buffer (padding frames) before the LayerNorm: their variance is 0, so the
    float program's rsqrt is +inf there; its observer ignores it and TFLM's RSQRT gives 127 at the zero point."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm, self.out = nn.Linear(5, 8, bias=False), nn.LayerNorm(8), nn.Linear(8, 3)
        self.register_buffer("mask", torch.tensor([1.0] * 5 + [0.0] * 2).reshape(1, 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.embed(x) * self.mask))


def test_layer_norm_of_constant_tokens_saturates_like_tflm() -> None:
    from tinyprec.emulator import Emulator

    torch.manual_seed(0)
    out = run_everywhere(PaddedNorm(), (7, 5))
    rsqrt = next(op for op in out.graph.ops if op.type.value == "RSQRT")
    scale = float(out.graph.tensors[rsqrt.outputs[0]].qparams.scale[0])
    assert np.isfinite(scale) and 0 < scale < 1, scale  # set by the finite 1/sqrt values, not by +inf
    x = np.random.default_rng(1).integers(-128, 128, (4, *out.graph.tensors[out.graph.inputs[0]].shape[1:]))
    taps = Emulator(out.graph).run_with_taps(x.astype(np.int8))
    assert (taps[rsqrt.outputs[0]] == 127).any()  # the padded tokens: TFLM's "0 -> int8 maximum"
    assert_exact(out, onnx_lsb=12)
